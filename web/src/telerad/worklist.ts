// The teleradiology worklist: /app/telerad-worklist.html[?request=ID]
// Requests soonest due first, each with its SLA timer counting down (from the server's clock), claim and
// release, the study opened in the radiology viewer, the priors, and for the claim holder the report form
// (preliminary, critical flag, signed final). The requester acknowledges a critical result here.
// The page polls the API (every 15 s) and keeps what is being typed across redraws.
import { getJson, requireUser, sendJson } from "../api";
import { applyTexts, languageSwitch, onLanguageChange, t } from "../i18n";
import { mountBell } from "../inbox";
import { el, errorText, when } from "./dom";
import { type Opinion, askForm, opinionCard } from "./opinions";
import "./texts";

interface Critical {
  critical_id: number;
  finding: string;
  state: "pending" | "acknowledged";
  recipient: string;
  acknowledged_by: string;
  acknowledged_at: string | null;
}

interface Report {
  report_id: number;
  kind: string;
  text: string;
  critical: boolean;
  author: string;
  signed_at: string | null;
}

interface ReadingRequest {
  request_id: number;
  patient: string;
  study_uid: string;
  accession_number: string;
  awaiting_images: boolean;
  viewer_url: string;
  requesting_site: string;
  physician: { name: string; username: string };
  clinical_info: string;
  justification: string;
  subspecialty: string;
  priority: string;
  state: string;
  due_at: string;
  remaining_seconds: number | null;
  overdue: boolean;
  claim: { holder: string; expires_at: string | null };
  final_by: string;
  final_at: string | null;
  reports?: Report[];
  critical_results?: Critical[];
}

interface Prior {
  study_uid: string;
  study_date: string;
  description: string;
  site: string;
  /** listed, prefetch-requested, available or failed (docs/teleradiology.md). */
  status: string;
  reason: string;
  /** Empty while the study is not here. */
  viewer_url: string;
}

const $ = <T extends HTMLElement>(selector: string): T => document.querySelector<T>(selector)!;
const list = $<HTMLOListElement>("#telerad-worklist");
const errorBox = $<HTMLElement>("#telerad-error");
const filters = $<HTMLFormElement>("#filters");
const focusRequest = Number(new URLSearchParams(location.search).get("request") ?? "0");

const me = await requireUser();
$("#language-slot").append(languageSwitch());
applyTexts(document);
mountBell($("#bell-slot"));

let requests: ReadingRequest[] = [];
let skewMs = 0; // server clock minus browser clock
const drafts = new Map<number, { text: string; critical: boolean; finding: string }>();
const priors = new Map<number, Prior[]>();
const notes = new Map<number, string>();
let opinions: Opinion[] = [];
const answers = new Map<number, string>();

function duration(seconds: number): string {
  const s = Math.abs(Math.trunc(seconds));
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const sec = s % 60;
  const mm = String(m).padStart(2, "0");
  const ss = String(sec).padStart(2, "0");
  return h > 0 ? `${h} h ${mm} min` : `${mm}:${ss}`;
}

function mineNow(r: ReadingRequest): boolean {
  return r.claim.holder === me.subject;
}

function query(): string {
  const data = new FormData(filters);
  const params = new URLSearchParams({ state: "requested,claimed,preliminary,final" });
  for (const name of ["priority", "subspecialty", "site"]) {
    const value = String(data.get(name) ?? "").trim();
    if (value) params.set(name, value);
  }
  if (data.get("mine")) params.set("mine", "true");
  return params.toString();
}

async function load(): Promise<void> {
  try {
    const answer = await getJson<{ now: string; requests: ReadingRequest[] }>(`/api/telerad/requests?${query()}`);
    skewMs = new Date(answer.now).getTime() - Date.now();
    // Reports and critical results for the requests I work on or asked for.
    requests = await Promise.all(
      answer.requests.map(async (r) =>
        mineNow(r) || r.physician.username === me.subject || r.request_id === focusRequest
          ? getJson<ReadingRequest>(`/api/telerad/requests/${r.request_id}`)
          : r,
      ),
    );
    if (me.role === "radiologist" || me.role === "pathologist") {
      opinions = (await getJson<{ second_opinions: Opinion[] }>("/api/telerad/second-opinions")).second_opinions;
    }
    errorBox.textContent = "";
  } catch (error) {
    errorBox.textContent = errorText(error);
  }
  render();
  document.body.dataset.ready = "true";
}

async function act(request: ReadingRequest, path: string, body: unknown = {}): Promise<void> {
  try {
    await sendJson(`/api/telerad/requests/${request.request_id}${path}`, body);
    errorBox.textContent = "";
  } catch (error) {
    errorBox.textContent = errorText(error);
  }
  await load();
}

async function loadPriors(request: ReadingRequest): Promise<void> {
  try {
    const answer = await getJson<{ priors: Prior[] }>(`/api/telerad/requests/${request.request_id}/priors`);
    priors.set(request.request_id, answer.priors);
  } catch (error) {
    errorBox.textContent = errorText(error);
  }
  render();
}

function slaText(r: ReadingRequest): string {
  if (r.remaining_seconds === null) return "";
  const left = (new Date(r.due_at).getTime() - (Date.now() + skewMs)) / 1000;
  return left >= 0 ? t("telerad.left", { time: duration(left) }) : t("telerad.overdue", { time: duration(left) });
}

function stateText(r: ReadingRequest): string {
  if (r.state === "claimed") return t("telerad.state.claimed", { who: r.claim.holder });
  return t(`telerad.state.${r.state}`);
}

function reportForm(r: ReadingRequest): HTMLElement {
  const draft = drafts.get(r.request_id) ?? {
    text: r.reports?.filter((x) => !x.signed_at).at(-1)?.text ?? "",
    critical: false,
    finding: "",
  };
  drafts.set(r.request_id, draft);
  const id = `report-${r.request_id}`;
  const text = el("textarea", { id, name: "text", class: "report-text" });
  text.value = draft.text;
  text.addEventListener("input", () => (draft.text = text.value));
  const critical = el("input", { type: "checkbox", name: "critical", class: "report-critical" });
  critical.checked = draft.critical;
  critical.addEventListener("change", () => (draft.critical = critical.checked));
  const finding = el("input", { name: "finding", class: "report-finding", id: `${id}-finding` });
  finding.value = draft.finding;
  finding.addEventListener("input", () => (draft.finding = finding.value));
  const body = () => ({ text: draft.text, critical: draft.critical, critical_finding: draft.finding });
  const preliminary = el("button", { type: "button", class: "save-preliminary" }, t("telerad.report.preliminary"));
  preliminary.addEventListener("click", () => void act(r, "/report", body()));
  const sign = el("button", { type: "button", class: "sign-final" }, t("telerad.report.sign"));
  sign.addEventListener("click", async () => {
    await act(r, "/sign", body());
    drafts.delete(r.request_id);
    render();
  });
  return el(
    "div",
    { class: "telerad-report" },
    el("label", { for: id }, t("telerad.report.text")),
    text,
    el("label", {}, critical, " ", t("telerad.report.critical")),
    el("label", { for: `${id}-finding` }, t("telerad.report.finding")),
    finding,
    el("div", { class: "telerad-actions" }, preliminary, sign),
  );
}

function criticalBox(r: ReadingRequest, c: Critical): HTMLElement {
  if (c.state === "acknowledged") {
    const text = t("telerad.critical.acknowledged", { who: c.acknowledged_by, time: when(c.acknowledged_at) });
    return el("p", { class: "telerad-critical", "data-critical": "acknowledged" }, text);
  }
  const box = el(
    "div",
    { class: "telerad-critical", role: "alert", "data-critical": "pending" },
    t("telerad.critical.pending", { finding: c.finding }),
  );
  if (r.physician.username === me.subject || (me.site && me.site === r.requesting_site)) {
    const ack = el("button", { type: "button", class: "acknowledge" }, t("telerad.critical.ack"));
    ack.addEventListener("click", async () => {
      try {
        await sendJson(`/api/telerad/critical-results/${c.critical_id}/acknowledge`, {});
      } catch (error) {
        errorBox.textContent = errorText(error);
      }
      await load();
    });
    box.append(" ", ack);
  }
  return box;
}

function card(r: ReadingRequest): HTMLLIElement {
  const item = el("li", {
    class: "telerad-item",
    "data-request": String(r.request_id),
    "data-priority": r.priority,
    "data-state": r.state,
  });
  const sla = el("span", { class: "telerad-sla", "data-overdue": String(r.overdue) }, slaText(r));
  item.append(
    el(
      "div",
      { class: "telerad-head" },
      el("span", { class: "telerad-priority" }, t(`telerad.priority.${r.priority}`)),
      el("span", {}, `#${r.request_id} · ${r.patient}${r.subspecialty ? ` · ${r.subspecialty}` : ""}`),
      el("span", { class: "telerad-state" }, stateText(r)),
      el("span", {}, t("telerad.due", { time: when(r.due_at) })),
      sla,
    ),
    el("p", {}, t("telerad.from", { site: r.requesting_site, doctor: r.physician.name })),
    el("p", {}, t("telerad.clinical", { info: r.clinical_info })),
    el("p", {}, t("telerad.justification", { text: r.justification })),
  );
  const actions = el("div", { class: "telerad-actions" });
  if (r.awaiting_images) {
    actions.append(el("span", {}, t("telerad.awaiting_images", { acc: r.accession_number })));
  } else {
    actions.append(el("a", { class: "open-study", href: r.viewer_url, target: "_blank" }, t("telerad.open_study")));
  }
  const reader = me.role === "radiologist";
  if (reader && (r.state === "requested" || r.state === "preliminary") && !r.claim.holder) {
    const claim = el("button", { type: "button", class: "claim" }, t("telerad.claim"));
    claim.addEventListener("click", () => void act(r, "/claim"));
    actions.append(claim);
  }
  if (mineNow(r)) {
    const release = el("button", { type: "button", class: "release" }, t("telerad.release"));
    release.addEventListener("click", () => void act(r, "/release"));
    const showPriors = el("button", { type: "button", class: "show-priors" }, t("telerad.priors"));
    showPriors.addEventListener("click", () => void loadPriors(r));
    const fetchPriors = el("button", { type: "button", class: "prefetch-priors" }, t("telerad.prefetch"));
    fetchPriors.addEventListener("click", async () => {
      try {
        const answer = await sendJson<{ job_id: string }>(`/api/telerad/requests/${r.request_id}/priors/prefetch`, {});
        notes.set(r.request_id, t("telerad.prefetch.started", { job: answer.job_id }));
      } catch (error) {
        errorBox.textContent = errorText(error);
      }
      render();
    });
    actions.append(release, showPriors, fetchPriors);
  }
  item.append(actions);
  const note = notes.get(r.request_id);
  if (note) item.append(el("p", { role: "status" }, note));
  const found = priors.get(r.request_id);
  if (found) {
    const rows = found.map((p) => {
      const label = `${p.study_date || p.study_uid} ${p.description} (${p.site})`;
      const state = p.status === "listed" ? "" : ` - ${t(`telerad.prior.${p.status}`)}${p.reason ? `: ${p.reason}` : ""}`;
      const link = p.viewer_url ? el("a", { href: p.viewer_url, target: "_blank" }, label) : el("span", {}, label);
      return el("li", { "data-status": p.status }, link, state);
    });
    item.append(found.length ? el("ul", { class: "telerad-priors" }, ...rows) : el("p", {}, t("telerad.priors.none")));
  }
  for (const c of r.critical_results ?? []) item.append(criticalBox(r, c));
  if (r.state === "final") {
    item.append(el("p", { class: "telerad-signed" }, t("telerad.report.signed", { who: r.final_by, time: when(r.final_at) })));
  } else if (mineNow(r) && !r.awaiting_images) {
    item.append(reportForm(r));
  }
  if (mineNow(r)) {
    const asked = (opinionId: number): void => {
      notes.set(r.request_id, t("telerad.ask.sent", { id: opinionId }));
      render();
    };
    item.append(askForm(r, errorBox, asked));
  }
  return item;
}

function render(): void {
  const active = document.activeElement as HTMLInputElement | HTMLTextAreaElement | null;
  const owner = active?.closest<HTMLElement>("li[data-request]")?.dataset.request;
  const focusName = owner && active?.name ? active.name : "";
  list.replaceChildren(...requests.map(card));
  $("#opinions").replaceChildren(...opinions.map((o) => opinionCard(o, answers, errorBox, load)));
  $("#opinions-section").hidden = opinions.length === 0;
  $("#telerad-empty").hidden = requests.length > 0;
  const waiting = requests.filter((r) => r.state === "requested" && !r.claim.holder).length;
  const badge = $("#telerad-badge");
  badge.hidden = waiting === 0;
  badge.textContent = t("telerad.waiting", { n: waiting });
  if (focusName) list.querySelector<HTMLElement>(`li[data-request='${owner}'] [name='${focusName}']`)?.focus();
}

function tick(): void {
  for (const item of list.querySelectorAll<HTMLElement>("li[data-request]")) {
    const r = requests.find((x) => String(x.request_id) === item.dataset.request);
    const sla = item.querySelector<HTMLElement>(".telerad-sla");
    if (!r || !sla) continue;
    sla.textContent = slaText(r);
    const overdue = r.remaining_seconds !== null && new Date(r.due_at).getTime() < Date.now() + skewMs;
    sla.dataset.overdue = String(overdue);
  }
}

filters.addEventListener("change", () => void load());
filters.addEventListener("submit", (event) => {
  event.preventDefault();
  void load();
});
onLanguageChange(() => {
  applyTexts(document);
  render();
});

declare global {
  interface Window {
    archipel: { requests: () => ReadingRequest[]; reload: () => Promise<void> };
  }
}
window.archipel = { requests: () => requests, reload: load };

await load();
if (focusRequest) list.querySelector(`li[data-request='${focusRequest}']`)?.scrollIntoView();
setInterval(tick, 1000);
setInterval(() => {
  // Not while a report is being typed: the redraw keeps drafts, but a poll is no reason to move the caret.
  if (!(document.activeElement instanceof HTMLTextAreaElement)) void load();
}, 15_000);
