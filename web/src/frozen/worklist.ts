// The on-duty pathologist's urgent worklist: /app/frozen-worklist.html
// Live through the on-duty event stream: a new request sounds a tone and the badge (page and title) counts the
// requests waiting for a pathologist. Claim a request, open its slides in the viewer, sign the verdict.
import { ApiError, apiFetch, getJson, requireUser, sendJson } from "../api";
import {
  type FrozenRequest,
  STATE_LABELS,
  beep,
  beeps,
  clock,
  el,
  errorText,
  listen,
  minutes,
  unlockAudioOnGesture,
} from "./common";

const $ = <T extends HTMLElement>(selector: string): T => document.querySelector<T>(selector)!;
const errorBox = $<HTMLElement>("#worklist-error");
const TITLE = "Frozen sections — Archipel";

const me = (await requireUser()).subject;
let requests: FrozenRequest[] = [];
let loads = 0;
/** What the pathologist has entered in each request's verdict form: the list is redrawn on every event of the
 * live stream (a slide converted, a first view), and a redraw must not wipe a verdict being written. */
const drafts = new Map<number, Record<string, string>>();

function claimLive(r: FrozenRequest): boolean {
  return r.claim !== null && new Date(r.claim.expires_at).getTime() > Date.now();
}

/** Requests nobody is reading yet: what the badge counts. */
function waiting(): FrozenRequest[] {
  return requests.filter((r) => (r.state === "requested" || r.state === "scanned") && !claimLive(r));
}

async function load(): Promise<void> {
  try {
    const answer = await getJson<{ requests: FrozenRequest[] }>("/api/frozen-sections/worklist");
    requests = answer.requests;
    errorBox.textContent = "";
  } catch (error) {
    errorBox.textContent = errorText(error);
  }
  loads += 1;
  render();
}

function render(): void {
  const count = waiting().length;
  const badge = $<HTMLElement>("#badge");
  badge.hidden = count === 0;
  badge.textContent = `${count} waiting`;
  document.title = count > 0 ? `(${count}) ${TITLE}` : TITLE;
  $("#worklist-empty").hidden = requests.length > 0;
  // Keep the field being typed in focused across the redraw (its value comes back from the drafts).
  const active = document.activeElement as HTMLSelectElement | HTMLTextAreaElement | null;
  const owner = active?.closest<HTMLElement>("li[data-request]")?.dataset.request;
  const focused = owner !== undefined && active?.name ? `li[data-request='${owner}'] [name='${active.name}']` : "";
  $("#worklist").replaceChildren(...requests.map(item));
  if (focused) document.querySelector<HTMLElement>(focused)?.focus();
}

function item(r: FrozenRequest): HTMLElement {
  const li = el("li", "", `request ${r.state}`);
  li.dataset.request = String(r.request_id);
  if (waiting().includes(r)) li.classList.add("waiting");
  if (r.overdue) li.classList.add("overdue");
  const head = el("h2");
  head.append(
    el("span", `#${r.request_id} ${r.specimen} (${r.specimen_site})`),
    el("span", STATE_LABELS[r.state] ?? r.state, "state"),
    el("span", `${minutes(r.elapsed_minutes)} / ${r.target_minutes} min`, "elapsed"),
  );
  const meta = el(
    "p",
    `${r.issuer} ${r.patient_id}${r.accession ? ` · ${r.accession}` : ""} · requested ${clock(r.steps.requested_at)} ` +
      `by ${r.requested_by} (${r.requesting_site}) · operating room ${r.or_phone}`,
    "meta",
  );
  const question = el("p", `Question: ${r.clinical_question}`);
  const slides = el("div", "", "slides");
  if (r.slides.length === 0) slides.append(el("span", "No slide scanned yet"));
  r.slides.forEach((s, i) => {
    const link = el("a", `Slide ${i + 1} (${s.status})`);
    link.href = `/app/viewer.html?slide=${encodeURIComponent(s.slide_id)}`;
    link.target = "_blank";
    link.dataset.slide = s.slide_id;
    slides.append(link);
  });
  li.append(head, meta, question, slides, actions(r));
  return li;
}

function actions(r: FrozenRequest): HTMLElement {
  const box = el("div", "", "actions");
  if (r.verdict !== null) {
    box.append(el("strong", `Verdict: ${r.verdict.diagnosis}, margins ${r.verdict.margins} — ${r.verdict.pathologist} at ${clock(r.verdict.signed_at)}`));
    return box;
  }
  const mine = claimLive(r) && r.claim?.holder === me;
  if (claimLive(r) && !mine) {
    box.append(el("span", `Claimed by ${r.claim?.holder} until ${clock(r.claim?.expires_at)}`));
  }
  if (!claimLive(r) || mine) {
    const claim = el("button", mine ? "Renew claim" : "Claim", "claim");
    claim.type = "button";
    claim.addEventListener("click", () => act(r, "claim"));
    box.append(claim);
  }
  if (mine) {
    box.append(el("span", `Yours until ${clock(r.claim?.expires_at)}`));
    const release = el("button", "Release", "release");
    release.type = "button";
    release.addEventListener("click", () => act(r, "release"));
    box.append(release, verdictForm(r));
  }
  return box;
}

function verdictForm(r: FrozenRequest): HTMLElement {
  const form = el("form", "", "verdict-form");
  const choice = (name: string, label: string, values: string[]): HTMLElement => {
    const select = el("select");
    select.name = name;
    select.required = true;
    select.append(el("option", "—"), ...values.map((v) => Object.assign(el("option", v), { value: v })));
    (select.firstChild as HTMLOptionElement).value = "";
    const wrap = el("label", `${label} `);
    wrap.append(select);
    return wrap;
  };
  const text = el("textarea");
  text.name = "text";
  text.placeholder = "Report (free text)";
  const sign = el("button", "Sign the verdict", "sign");
  sign.type = "submit";
  if (r.slides.length === 0) sign.disabled = true;
  form.append(
    choice("diagnosis", "Diagnosis", ["benign", "malignant", "uncertain", "deferred"]),
    choice("margins", "Margins", ["clear", "involved", "close", "not-assessed"]),
    text,
    sign,
  );
  const draft = drafts.get(r.request_id) ?? {};
  for (const field of form.querySelectorAll<HTMLSelectElement | HTMLTextAreaElement>("select, textarea")) {
    if (draft[field.name] !== undefined) field.value = draft[field.name];
  }
  form.addEventListener("input", (event) => {
    const field = event.target as HTMLSelectElement | HTMLTextAreaElement;
    drafts.set(r.request_id, { ...(drafts.get(r.request_id) ?? {}), [field.name]: field.value });
  });
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const data = new FormData(form);
    void signVerdict(r, { diagnosis: data.get("diagnosis"), margins: data.get("margins"), text: data.get("text") ?? "" });
  });
  return form;
}

async function signVerdict(r: FrozenRequest, body: Record<string, unknown>): Promise<void> {
  try {
    await sendJson(`/api/frozen-sections/${r.request_id}/verdict`, body);
    drafts.delete(r.request_id);
  } catch (error) {
    if (error instanceof ApiError && error.status === 401 && (await reauthenticate())) {
      return signVerdict(r, body);
    }
    errorBox.textContent = errorText(error);
  }
  await load();
}

/** Ask for the password and code again (POST /api/auth/reauth); whether it succeeded. */
function reauthenticate(): Promise<boolean> {
  const dialog = $<HTMLDialogElement>("#reauth");
  const form = $<HTMLFormElement>("#reauth-form");
  $("#reauth-error").textContent = "";
  dialog.showModal();
  return new Promise((resolve) => {
    const cancel = (): void => {
      dialog.close();
      cleanup();
      resolve(false);
    };
    const submit = async (event: Event): Promise<void> => {
      event.preventDefault();
      const body = new URLSearchParams({
        password: $<HTMLInputElement>("#reauth-password").value,
        totp: $<HTMLInputElement>("#reauth-totp").value,
      });
      try {
        await apiFetch("/api/auth/reauth", { method: "POST", body }, false);
      } catch (error) {
        $("#reauth-error").textContent = errorText(error);
        return;
      }
      dialog.close();
      cleanup();
      resolve(true);
    };
    const onSubmit = (event: Event): void => void submit(event);
    const cleanup = (): void => {
      form.removeEventListener("submit", onSubmit);
      $("#reauth-cancel").removeEventListener("click", cancel);
      $<HTMLInputElement>("#reauth-password").value = "";
    };
    form.addEventListener("submit", onSubmit);
    $("#reauth-cancel").addEventListener("click", cancel);
  });
}

async function act(r: FrozenRequest, action: "claim" | "release"): Promise<void> {
  try {
    await apiFetch(`/api/frozen-sections/${r.request_id}/${action}`, { method: "POST" });
  } catch (error) {
    errorBox.textContent = errorText(error);
  }
  await load();
}

unlockAudioOnGesture();
await load();
const live = $<HTMLElement>("#live");
const stream = listen(
  "/api/frozen-sections/stream",
  (event) => {
    if (event.kind === "requested") beep();
    void load();
  },
  () => (live.textContent = "your shift is over: no more alerts"),
);
stream.addEventListener("open", () => {
  live.textContent = "live";
  void load(); // what changed while the stream was down
});
stream.addEventListener("error", () => {
  // A refusal (not on duty: 403) closes the stream for good; a dropped connection is retried by the browser.
  live.textContent = stream.readyState === EventSource.CLOSED ? "no live alerts (are you on duty?)" : "reconnecting…";
});
// The elapsed minutes move on even when nothing happens.
setInterval(() => void load(), 30_000);

/** For the end-to-end tests. */
(window as unknown as { archipel: unknown }).archipel = {
  requests: () => requests,
  waiting: () => waiting().length,
  beeps: () => beeps,
  loads: () => loads,
  live: () => stream.readyState === EventSource.OPEN,
};
document.body.dataset.ready = "true";
