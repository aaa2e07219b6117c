// The patient portal (/app/patient.html): released results, images (view, DICOM ZIP download), sharing consent
// and the access log, for a patient signed in with their access code (cookie session).
import { ApiError, getJson, logout, sendJson } from "../api";
import { applyTexts, hasText, language, languageSwitch, onLanguageChange, registerTexts, t } from "../i18n";
import { PORTAL_TEXTS } from "./texts";

registerTexts(PORTAL_TEXTS);

interface RecordItem {
  kind: string;
  id: string;
  site: string;
  date: string | null;
  title: string;
  status: string;
  links: Record<string, string>;
  detail: Record<string, unknown>;
}
interface OwnStudy {
  study_uid: string;
  study_date: string;
  description: string;
  modalities: string[];
  site: string;
  links: Record<string, string>;
}
interface ConsentDecision {
  sharing: string;
  method: string;
  at: string;
}
interface ConsentState {
  sharing: string | null;
  history: ConsentDecision[];
}
interface AccessEntry {
  at: string;
  who: string;
  kind: string;
  role: string;
  organisation: string;
  action: string;
  purpose: string;
  outcome: string;
}

/** What the page last loaded, redrawn when the language changes. */
const state: {
  items: RecordItem[];
  studies: OwnStudy[];
  consent: ConsentState | null;
  log: AccessEntry[];
} = { items: [], studies: [], consent: null, log: [] };

/** Links a patient can follow (API-only links, e.g. a professional's JSON view, are left out). */
const FOLLOWED = new Set(["viewer", "content", "document", "report", "letter", "download", "pdf"]);
const DETAIL_SHOWN = ["diagnosis", "margins", "result", "decision", "signed_by", "author", "organisation"];

function el<K extends keyof HTMLElementTagNameMap>(tag: K, text = "", className = ""): HTMLElementTagNameMap[K] {
  const node = document.createElement(tag);
  if (text) node.textContent = text;
  if (className) node.className = className;
  return node;
}

function formatDate(value: string | null | undefined, withTime = false): string {
  if (!value) return "";
  const compact = /^(\d{4})(\d{2})(\d{2})$/.exec(value); // DICOM DA
  const date = compact ? new Date(`${compact[1]}-${compact[2]}-${compact[3]}T12:00:00`) : new Date(value);
  if (Number.isNaN(date.getTime())) return value;
  const options: Intl.DateTimeFormatOptions = withTime
    ? { dateStyle: "medium", timeStyle: "short" }
    : { dateStyle: "long" };
  return new Intl.DateTimeFormat(language() === "fr" ? "fr-FR" : "en-GB", options).format(date);
}

/** The label for `key` in the current language, or `fallback` (the server's own word) when it has none. */
function label(key: string, fallback: string): string {
  return hasText(key) ? t(key) : fallback;
}

function linkLabel(name: string): string {
  return label(`link.${name.replace(/-\d+$/, "")}`, name);
}

/** Frozen-section and screening titles are made here, in the page's language; others are shown as given. */
function titleOf(item: RecordItem): string {
  const specimen = item.detail.specimen;
  if (item.kind === "frozen-section" && typeof specimen === "string") return t("title.frozen-section", { specimen });
  const programme = item.detail.programme;
  if (item.kind === "screening-episode" && typeof programme === "string") return t("title.screening", { programme });
  return item.title;
}

function drawResults(): void {
  const list = document.querySelector<HTMLUListElement>("#result-list")!;
  list.replaceChildren();
  if (state.items.length === 0) {
    list.append(el("li", t("portal.results.empty"), "empty"));
    return;
  }
  for (const item of state.items) {
    const card = el("li");
    card.dataset.kind = item.kind;
    card.dataset.id = item.id;
    card.append(el("span", label(`kind.${item.kind}`, item.kind), "kind"));
    card.append(el("h3", titleOf(item)));
    const status = item.status ? ` · ${label(`status.${item.status}`, item.status)}` : "";
    card.append(el("p", `${formatDate(item.date)} · ${item.site}${status}`, "meta"));
    const shown = DETAIL_SHOWN.filter((key) => typeof item.detail[key] === "string" && item.detail[key]);
    if (shown.length) {
      const dl = el("dl", "", "detail");
      for (const key of shown) {
        const value = String(item.detail[key]);
        dl.append(el("dt", label(`detail.${key}`, key)), el("dd", label(`value.${value}`, value)));
      }
      card.append(dl);
    }
    if (typeof item.detail.text === "string" && item.detail.text) {
      card.append(el("p", item.detail.text, "report-text"));
    }
    const actions = el("div", "", "actions");
    for (const [name, href] of Object.entries(item.links)) {
      if (!FOLLOWED.has(name.replace(/-\d+$/, ""))) continue;
      const link = el("a", linkLabel(name));
      link.href = href;
      if (name !== "viewer" && !name.startsWith("viewer-")) link.target = "_blank";
      actions.append(link);
      if (name === "content") {
        // the report itself, to keep: the same route, saved instead of shown
        const save = el("a", t("link.save-report"), "download");
        save.href = href;
        save.setAttribute("download", "");
        actions.append(save);
      }
    }
    if (actions.childElementCount) card.append(actions);
    list.append(card);
  }
}

function drawStudies(): void {
  const list = document.querySelector<HTMLUListElement>("#study-list")!;
  list.replaceChildren();
  document.querySelector<HTMLElement>("#download-all")!.hidden = state.studies.length < 2;
  if (state.studies.length === 0) {
    list.append(el("li", t("portal.images.empty"), "empty"));
    return;
  }
  for (const study of state.studies) {
    const card = el("li");
    card.dataset.study = study.study_uid;
    card.append(el("span", study.modalities.join(", ") || label("kind.study", "study"), "kind"));
    card.append(el("h3", study.description || label("kind.study", "study")));
    card.append(el("p", `${formatDate(study.study_date)} · ${study.site}`, "meta"));
    const actions = el("div", "", "actions");
    const view = el("a", t("portal.images.view"));
    view.href = study.links.viewer;
    const download = el("a", t("portal.images.download"));
    download.href = study.links.download;
    download.setAttribute("download", "");
    download.className = "download";
    actions.append(view, download);
    card.append(actions);
    list.append(card);
  }
}

function drawConsent(): void {
  const consent = state.consent;
  const text = document.querySelector<HTMLElement>("#consent-state")!;
  const button = document.querySelector<HTMLButtonElement>("#consent-toggle")!;
  const history = document.querySelector<HTMLUListElement>("#consent-history")!;
  if (!consent) return;
  const sharing = consent.sharing ?? "unknown";
  text.dataset.state = sharing;
  text.textContent = t(`portal.consent.${sharing === "refused" ? "refused" : sharing === "granted" ? "granted" : "unknown"}`);
  button.textContent = t(sharing === "refused" ? "portal.consent.give" : "portal.consent.withdraw");
  button.dataset.next = sharing === "refused" ? "granted" : "refused";
  history.replaceChildren(
    ...[...consent.history].reverse().map((d) =>
      el(
        "li",
        `${formatDate(d.at, true)} — ${t(d.sharing === "refused" ? "portal.consent.done.refused" : "portal.consent.done.granted")} (${label(`portal.consent.by.${d.method}`, d.method)})`,
      ),
    ),
  );
}

function drawLog(): void {
  const body = document.querySelector<HTMLTableSectionElement>("#log-table tbody")!;
  body.replaceChildren();
  for (const entry of state.log) {
    const row = el("tr");
    if (entry.outcome === "denied") row.className = "denied";
    const who = entry.kind === "dicom-node" ? `${entry.who} (${t("who.dicom-node")})` : entry.who;
    const [verb, object] = entry.action.split(":", 2);
    let action = object ? `${label(`verb.${verb}`, verb)} (${label(`object.${object}`, object)})` : entry.action;
    if (entry.outcome === "denied") action += ` — ${t("portal.log.outcome.denied")}`;
    const role = label(`role.${entry.role}`, entry.role);
    for (const value of [formatDate(entry.at, true), who, role, entry.organisation, action]) {
      row.append(el("td", value));
    }
    row.append(el("td", label(`purpose.${entry.purpose}`, entry.purpose)));
    body.append(row);
  }
  document.querySelector<HTMLElement>("#log-empty")!.hidden = state.log.length > 0;
}

function drawAll(): void {
  drawResults();
  drawStudies();
  drawConsent();
  drawLog();
}

function showError(error: unknown): void {
  const reason = error instanceof ApiError ? error.detail : String(error);
  document.querySelector<HTMLElement>("#portal-error")!.textContent = t("portal.error", { reason });
}

async function loadPart(load: () => Promise<void>): Promise<void> {
  try {
    await load();
  } catch (error) {
    if (error instanceof ApiError && error.status === 401) return; // apiFetch is taking us to the sign-in page
    showError(error);
  }
}

async function toggleConsent(): Promise<void> {
  const button = document.querySelector<HTMLButtonElement>("#consent-toggle")!;
  const sharing = button.dataset.next ?? "refused";
  button.disabled = true;
  try {
    state.consent = await sendJson<ConsentState>("/api/patient/consent", { sharing });
    document.querySelector<HTMLElement>("#consent-done")!.textContent = t(`portal.consent.done.${sharing}`);
    drawConsent();
  } catch (error) {
    showError(error);
  } finally {
    button.disabled = false;
    button.focus();
  }
}

async function main(): Promise<void> {
  document.querySelector("#language")!.append(languageSwitch());
  applyTexts(document);
  onLanguageChange(drawAll);
  let me: { patient: string; role: string };
  try {
    me = await getJson<{ patient: string; role: string }>("/api/patient/me");
  } catch (error) {
    if (error instanceof ApiError && error.status === 403) {
      location.assign("/app/login.html?way=patient"); // a professional's session: not this page
      return;
    }
    throw error;
  }
  const who = document.querySelector<HTMLElement>("#who")!;
  who.dataset.patient = me.patient;
  if (me.role === "legal-representative") {
    who.dataset.i18n = "portal.representative"; // redrawn with the language
    who.textContent = t("portal.representative");
  }
  document.querySelector("#consent-toggle")!.addEventListener("click", () => void toggleConsent());
  document.querySelector("#sign-out")!.addEventListener("click", async () => {
    await logout().catch(() => undefined);
    location.assign("/app/login.html?way=patient");
  });
  await Promise.all([
    loadPart(async () => {
      state.items = (await getJson<{ items: RecordItem[] }>("/api/patient/record")).items;
      drawResults();
    }),
    loadPart(async () => {
      state.studies = (await getJson<{ studies: OwnStudy[] }>("/api/patient/studies")).studies;
      drawStudies();
    }),
    loadPart(async () => {
      state.consent = await getJson<ConsentState>("/api/patient/consent");
      drawConsent();
    }),
    loadPart(async () => {
      state.log = (await getJson<{ entries: AccessEntry[] }>("/api/me/access-log")).entries;
      drawLog();
    }),
  ]);
  document.body.dataset.ready = "true";
}

void main().catch(showError);
