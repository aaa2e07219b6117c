// The surgeon's frozen-section page: /app/frozen-request.html (a new request) or ?id=N (one request).
// The request's event stream keeps the page current: the verdict shows the moment it is signed, without a
// reload; "I have read the verdict" records that the surgeon saw it.
import { apiFetch, getJson, requireUser, sendJson } from "../api";
import { type FrozenRequest, STATE_LABELS, STEP_LABELS, clock, el, errorText, listen, minutes } from "./common";

const $ = <T extends HTMLElement>(selector: string): T => document.querySelector<T>(selector)!;
const errorBox = $<HTMLElement>("#request-error");

await requireUser();
const id = new URLSearchParams(location.search).get("id");
let current: FrozenRequest | null = null;
let updates = 0;

function render(r: FrozenRequest): void {
  current = r;
  updates += 1;
  document.title = `Frozen section #${r.request_id}: ${STATE_LABELS[r.state] ?? r.state} — Archipel`;
  $("#request").hidden = false;
  $("#request-title").textContent = `#${r.request_id} · ${r.specimen} (${r.specimen_site})`;
  const state = $("#state");
  state.textContent = `${STATE_LABELS[r.state] ?? r.state} · ${minutes(r.elapsed_minutes)} of ${r.target_minutes}`;
  state.dataset.state = r.state;
  $("#details").textContent =
    `${r.issuer} ${r.patient_id}${r.accession ? ` · ${r.accession}` : ""} · question: ${r.clinical_question} · ` +
    `operating room ${r.or_phone} · requested by ${r.requested_by}` +
    (r.claim ? ` · read by ${r.claim.holder}` : "");
  $("#steps").replaceChildren(
    ...STEP_LABELS.map(([key, label]) => {
      const row = el("tr");
      row.append(el("th", label), el("td", clock(r.steps[key])));
      return row;
    }),
  );
  $("#slides").replaceChildren(
    ...(r.slides.length === 0 ? [el("li", "None scanned yet")] : r.slides.map((s, i) => el("li", `Slide ${i + 1}: ${s.status}, scanned ${clock(s.attached_at)}`))),
  );
  const box = $("#verdict-box");
  box.hidden = r.verdict === null;
  if (r.verdict !== null) {
    const verdict = $("#verdict");
    verdict.textContent = r.verdict.diagnosis.toUpperCase();
    verdict.className = `verdict ${r.verdict.diagnosis}`;
    $("#verdict-margins").textContent = `Margins: ${r.verdict.margins}`;
    $("#verdict-text").textContent = r.verdict.text;
    $("#verdict-by").textContent = `Signed by ${r.verdict.pathologist} at ${clock(r.verdict.signed_at)}`;
    $<HTMLButtonElement>("#seen").hidden = r.state === "seen";
    $("#seen-at").textContent = r.steps.seen_at ? `Read at ${clock(r.steps.seen_at)}` : "";
  }
}

async function refresh(): Promise<void> {
  try {
    render(await getJson<FrozenRequest>(`/api/frozen-sections/${encodeURIComponent(id ?? "")}`));
    errorBox.textContent = "";
  } catch (error) {
    errorBox.textContent = errorText(error);
  }
}

if (id === null) {
  const form = $<HTMLFormElement>("#new-request");
  form.hidden = false;
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const body = Object.fromEntries([...new FormData(form)].filter(([, v]) => v !== ""));
    try {
      const made = await sendJson<FrozenRequest>("/api/frozen-sections", body);
      location.assign(`/app/frozen-request.html?id=${made.request_id}`);
    } catch (error) {
      errorBox.textContent = errorText(error);
    }
  });
} else {
  await refresh();
  const live = $<HTMLElement>("#live");
  // Every event changes the request: fetch it again (events carry no patient data by design).
  const stream = listen(`/api/frozen-sections/${encodeURIComponent(id)}/events`, () => void refresh(), () => {
    live.textContent = "";
  });
  stream.addEventListener("open", () => (live.textContent = "live"));
  stream.addEventListener("error", () => {
    if (stream.readyState !== EventSource.CLOSED) live.textContent = "reconnecting…";
  });
  $("#seen").addEventListener("click", async () => {
    try {
      await apiFetch(`/api/frozen-sections/${encodeURIComponent(id)}/seen`, { method: "POST" });
    } catch (error) {
      errorBox.textContent = errorText(error);
    }
    await refresh();
  });
  (window as unknown as { archipel: unknown }).archipel = {
    request: () => current,
    updates: () => updates,
    live: () => stream.readyState === EventSource.OPEN,
  };
}
document.body.dataset.ready = "true";
