// The professional home: search (patients, reports), a patient's timeline across sites, the worklists, a
// slide to open, and the notifications bell. `?patient=ID` opens that patient's timeline at once.
import { logout, requireUser } from "./api";
import { applyTexts, languageSwitch, onLanguageChange } from "./i18n";
import { mountBell } from "./inbox";
import "./home/texts";
import { runSearch } from "./home/search";
import { refilter, showTimeline } from "./home/timeline";

const who = await requireUser();
document.querySelector<HTMLElement>("#who")!.textContent = `${who.subject} (${who.role}${who.site ? `, ${who.site}` : ""})`;
document.querySelector<HTMLElement>("#language-slot")!.append(languageSwitch());
applyTexts(document);
mountBell(document.querySelector<HTMLElement>("#bell-slot")!);

const open = (master: number): void => {
  void showTimeline(master).then(() => document.querySelector<HTMLElement>("#timeline-heading")!.focus());
};

const searchForm = document.querySelector<HTMLFormElement>("#search-form")!;
searchForm.addEventListener("submit", (event) => {
  event.preventDefault();
  void runSearch(searchForm, open);
});
document.querySelector<HTMLFormElement>("#timeline-filters")!.addEventListener("submit", (event) => {
  event.preventDefault();
  void refilter();
});
onLanguageChange(() => void refilter());

document.querySelector<HTMLFormElement>("#open-slide")!.addEventListener("submit", (event) => {
  event.preventDefault();
  const id = new FormData(event.target as HTMLFormElement).get("slide");
  location.assign(`/app/viewer.html?slide=${encodeURIComponent(String(id))}`);
});
document.querySelector<HTMLButtonElement>("#logout")!.addEventListener("click", async () => {
  await logout();
  location.assign("/app/login.html");
});

const wanted = Number.parseInt(new URLSearchParams(location.search).get("patient") ?? "", 10);
if (Number.isFinite(wanted)) await showTimeline(wanted);
document.body.dataset.ready = "true";
