// The tumor board (RCP) page: the sessions of the user's site, a new session, and in a session its registered
// patients with the status of their prefetch from the region's PACS (refreshed every few seconds while a
// patient is still being fetched), plus registering a patient found through the patient search.
// `?session=ID` opens that session at once.
import { ApiError, getJson, requireUser, sendJson } from "../api";
import { applyTexts, language, languageSwitch, onLanguageChange, t } from "../i18n";
import "./texts";

interface SessionSummary {
  id: number;
  title: string;
  scheduled_at: string;
  place: string;
  site: string;
  destination: string;
  patients: number;
}

interface NodeStatus {
  node: string;
  site: string;
  state: string;
  reason: string;
  studies_found: number;
  studies_ready: number;
}

interface BoardPatient {
  id: number;
  master_id: number;
  name: string;
  patient: string;
  reason: string;
  status: string;
  status_reason: string;
  progress: number;
  nodes: NodeStatus[];
}

interface SessionDetail extends Omit<SessionSummary, "patients"> {
  patients: BoardPatient[];
}

interface PatientHit {
  master_id: number;
  name: string;
  birth_date: string;
  sites: string[];
}

const POLL_MS = 2000;
const SETTLED = new Set(["ready", "failed", "none"]);
let current: number | null = null;
let timer: number | undefined;

function el<T extends HTMLElement = HTMLElement>(selector: string): T {
  return document.querySelector<T>(selector)!;
}

function message(error: unknown): string {
  return error instanceof ApiError ? error.detail : error instanceof Error ? error.message : String(error);
}

function when(iso: string): string {
  return new Date(iso).toLocaleString(language() === "fr" ? "fr-FR" : "en-GB", {
    dateStyle: "full",
    timeStyle: "short",
  });
}

function stateText(state: string): string {
  return t(`tb.state.${state}`);
}

async function drawSessions(): Promise<void> {
  const sessions = await getJson<SessionSummary[]>("/api/tumor-boards");
  const list = el("#sessions");
  list.replaceChildren();
  el("#sessions-empty").hidden = sessions.length > 0;
  for (const s of sessions) {
    const li = document.createElement("li");
    const button = document.createElement("button");
    button.type = "button";
    button.dataset.session = String(s.id);
    button.textContent = `${s.title} — ${when(s.scheduled_at)} (${t("tb.session.patients", { n: s.patients })})`;
    button.setAttribute("aria-current", String(s.id === current));
    button.addEventListener("click", () => void openSession(s.id, true));
    li.append(button);
    list.append(li);
  }
}

function nodeList(nodes: NodeStatus[]): HTMLElement {
  const ul = document.createElement("ul");
  ul.className = "tb-nodes";
  for (const n of nodes) {
    const li = document.createElement("li");
    li.dataset.node = n.node;
    li.dataset.state = n.state;
    let text = t("tb.node", { node: n.node, site: n.site, state: stateText(n.state) });
    if (n.studies_found) text += ` — ${t("tb.node.studies", { ready: n.studies_ready, found: n.studies_found })}`;
    li.textContent = text;
    if (n.state === "failed" && n.reason) {
      const reason = document.createElement("div");
      reason.className = "tb-reason";
      reason.textContent = n.reason;
      li.append(reason);
    }
    ul.append(li);
  }
  return ul;
}

function patientRow(sessionId: number, p: BoardPatient): HTMLTableRowElement {
  const row = document.createElement("tr");
  row.dataset.patient = String(p.master_id);
  row.dataset.status = p.status;
  const who = document.createElement("td");
  const link = document.createElement("a");
  link.href = `/app/index.html?patient=${p.master_id}`;
  link.textContent = p.name || `#${p.master_id}`;
  who.append(link, document.createElement("br"), p.patient);
  const reason = document.createElement("td");
  reason.textContent = p.reason;
  const status = document.createElement("td");
  const badge = document.createElement("span");
  badge.className = "tb-status";
  badge.dataset.state = p.status;
  badge.textContent = SETTLED.has(p.status) ? stateText(p.status) : `${stateText(p.status)} (${Math.round(p.progress)} %)`;
  status.append(badge);
  const nodes = document.createElement("td");
  nodes.append(nodeList(p.nodes));
  const actions = document.createElement("td");
  const again = document.createElement("button");
  again.type = "button";
  again.textContent = t("tb.again");
  again.disabled = !SETTLED.has(p.status);
  again.addEventListener("click", async () => {
    again.disabled = true;
    try {
      await sendJson(`/api/tumor-boards/${sessionId}/patients/${p.id}/prefetch`, {});
    } catch (e) {
      el("#register-error").textContent = message(e);
    }
    void openSession(sessionId, false);
  });
  actions.append(again);
  row.append(who, reason, status, nodes, actions);
  return row;
}

async function openSession(id: number, focus: boolean): Promise<void> {
  window.clearTimeout(timer);
  current = id;
  history.replaceState(null, "", `?session=${id}`);
  let detail: SessionDetail;
  try {
    detail = await getJson<SessionDetail>(`/api/tumor-boards/${id}`);
  } catch (e) {
    el("#session-error").textContent = message(e);
    return;
  }
  el("#session").hidden = false;
  el("#session-heading").textContent = detail.title;
  const destination = detail.destination === "viewer" ? t("tb.viewer") : detail.destination;
  el("#session-info").textContent = t("tb.info", { when: when(detail.scheduled_at), place: detail.place || "—", destination });
  const body = el("#patients");
  body.replaceChildren(...detail.patients.map((p) => patientRow(id, p)));
  if (!detail.patients.length) {
    const row = document.createElement("tr");
    const cell = document.createElement("td");
    cell.colSpan = 5;
    cell.textContent = t("tb.none");
    row.append(cell);
    body.append(row);
  }
  for (const button of document.querySelectorAll<HTMLButtonElement>("#sessions button")) {
    button.setAttribute("aria-current", String(button.dataset.session === String(id)));
  }
  if (focus) el("#session-heading").focus();
  document.body.dataset.session = String(id);
  if (detail.patients.some((p) => !SETTLED.has(p.status))) {
    timer = window.setTimeout(() => void openSession(id, false), POLL_MS);
  }
}

async function register(master: number): Promise<void> {
  if (current === null) return;
  const form = el<HTMLFormElement>("#find-patient");
  const data = new FormData(form);
  const modalities = String(data.get("modalities") ?? "")
    .split(/[\s,]+/)
    .filter(Boolean);
  const since = String(data.get("since") ?? "").replaceAll("-", "");
  el("#register-error").textContent = "";
  try {
    await sendJson(`/api/tumor-boards/${current}/patients`, {
      master_id: master,
      reason: String(data.get("reason") ?? ""),
      modalities,
      date_from: since,
    });
  } catch (e) {
    el("#register-error").textContent = message(e);
    return;
  }
  el("#find-results").replaceChildren();
  await openSession(current, false);
  await drawSessions();
}

async function find(): Promise<void> {
  const q = String(new FormData(el<HTMLFormElement>("#find-patient")).get("q") ?? "").trim();
  const status = el("#find-status");
  const list = el("#find-results");
  list.replaceChildren();
  try {
    const answer = await getJson<{ patients: PatientHit[] }>(`/api/search?kind=patient&q=${encodeURIComponent(q)}`);
    status.textContent = answer.patients.length ? t("tb.find.count", { n: answer.patients.length }) : t("tb.find.none");
    for (const hit of answer.patients) {
      const li = document.createElement("li");
      const button = document.createElement("button");
      button.type = "button";
      button.dataset.register = String(hit.master_id);
      button.textContent = `${t("tb.find.register")} : ${hit.name} (${hit.birth_date}, ${hit.sites.join(", ")})`;
      button.addEventListener("click", () => void register(hit.master_id));
      li.append(button);
      list.append(li);
    }
  } catch (e) {
    status.textContent = message(e);
  }
}

const who = await requireUser();
el("#who").textContent = `${who.subject} (${who.role}${who.site ? `, ${who.site}` : ""})`;
el("#language-slot").append(languageSwitch());
applyTexts(document);

el<HTMLFormElement>("#new-session").addEventListener("submit", async (event) => {
  event.preventDefault();
  const data = new FormData(event.target as HTMLFormElement);
  el("#session-error").textContent = "";
  try {
    const made = await sendJson<SessionDetail>("/api/tumor-boards", {
      title: String(data.get("title")),
      scheduled_at: new Date(String(data.get("when"))).toISOString(),
      place: String(data.get("place") ?? ""),
      destination: String(data.get("destination") || "viewer"),
    });
    await drawSessions();
    await openSession(made.id, true);
  } catch (e) {
    el("#session-error").textContent = message(e);
  }
});
el<HTMLFormElement>("#find-patient").addEventListener("submit", (event) => {
  event.preventDefault();
  void find();
});
onLanguageChange(() => {
  void drawSessions();
  if (current !== null) void openSession(current, false);
});

await drawSessions();
const wanted = Number(new URLSearchParams(location.search).get("session"));
if (wanted) await openSession(wanted, false);
document.body.dataset.ready = "true";
