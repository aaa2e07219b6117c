// Opening a multi-head session from the page (/app/multihead.html without a session, or ?slide=ID to prefill):
// the slides to show and whom to invite; then the presenter lands in the session and can send its link.
import { sendJson } from "../api";

interface Opened {
  session_id: string;
  join_url: string;
}

/** Show the form that opens a session; on success the browser goes to the session's page. */
export function showStartForm(form: HTMLFormElement, errorBox: HTMLElement, slideId: string): void {
  form.hidden = false;
  const slides = form.querySelector<HTMLTextAreaElement>("#start-slides")!;
  slides.value = slideId;
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const words = (value: string): string[] => value.split(/[\s,;]+/).filter(Boolean);
    const ids = words(slides.value);
    const invitees = words(form.querySelector<HTMLInputElement>("#start-invitees")!.value);
    const body = ids.length === 1 ? { slide_id: ids[0], invitees } : { case_slides: ids, invitees };
    try {
      const opened = await sendJson<Opened>("/api/multihead", body);
      location.assign(opened.join_url);
    } catch (error) {
      errorBox.textContent = error instanceof Error && "detail" in error ? String(error.detail) : String(error);
    }
  });
}
