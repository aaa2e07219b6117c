// The app's home: who is logged in, and a slide to open.
import { logout, requireUser } from "./api";

const who = await requireUser();
document.querySelector<HTMLElement>("#who")!.textContent = `${who.subject} (${who.role})`;
document.querySelector<HTMLFormElement>("#open-slide")!.addEventListener("submit", (event) => {
  event.preventDefault();
  const id = new FormData(event.target as HTMLFormElement).get("slide");
  location.assign(`/app/viewer.html?slide=${encodeURIComponent(String(id))}`);
});
document.querySelector<HTMLButtonElement>("#logout")!.addEventListener("click", async () => {
  await logout();
  location.assign("/app/login.html");
});
