// A patient's timeline ("ligne de vie") on the professional home: GET /api/patients/{master}/timeline, the
// items of every site newest first, narrowed by kind, site and dates; each item opens in its viewer.
import { getJson } from "../api";
import { t } from "../i18n";
import { showDate } from "./texts";

interface Identity {
  issuer: string;
  local_id: string;
  birth_name: string;
  used_name: string;
  given_names: string;
  birth_date: string;
  sex: string;
}

interface Item {
  kind: string;
  id: string;
  site: string;
  date: string | null;
  title: string;
  status: string;
  links: Record<string, string>;
  detail: Record<string, unknown>;
}

/** What GET /api/patients/{master}/timeline answers. */
export interface Timeline {
  master_id: number;
  identities: Identity[];
  kinds: string[];
  sites: string[];
  items: Item[];
}

let master: number | null = null;
let knownSites: string[] = [];

function kindLabel(kind: string): string {
  const key = `kind.${kind}`;
  const text = t(key);
  return text === key ? kind : text;
}

function drawPatient(timeline: Timeline): void {
  const first = timeline.identities[0];
  const name = first ? [first.birth_name, first.used_name && `(${first.used_name})`, first.given_names] : [];
  const ids = timeline.identities.map((i) => `${i.issuer}/${i.local_id}`).join(", ");
  const born = first?.birth_date ? t("home.patient.born", { date: showDate(first.birth_date) }) : "";
  document.querySelector<HTMLElement>("#timeline-patient")!.textContent = [
    name.filter(Boolean).join(" "),
    first?.sex ?? "",
    born,
    ids,
  ]
    .filter(Boolean)
    .join(" · ");
}

function drawFilters(timeline: Timeline): void {
  const kinds = document.querySelector<HTMLElement>("#timeline-kinds")!;
  for (const span of kinds.querySelectorAll<HTMLElement>("span[data-kind]")) span.textContent = kindLabel(span.dataset.kind ?? "");
  if (!kinds.childElementCount) {
    for (const kind of timeline.kinds) {
      const label = document.createElement("label");
      label.className = "kind-choice";
      const box = document.createElement("input");
      box.type = "checkbox";
      box.name = "kind";
      box.value = kind;
      box.checked = true;
      const text = document.createElement("span");
      text.dataset.kind = kind;
      text.textContent = kindLabel(kind);
      label.append(box, " ", text);
      kinds.append(label);
    }
  }
  const site = document.querySelector<HTMLSelectElement>("#timeline-site")!;
  knownSites = [...new Set([...knownSites, ...timeline.sites])].sort();
  const chosen = site.value;
  for (const option of [...site.options].slice(1)) option.remove();
  for (const s of knownSites) site.add(new Option(s, s, false, s === chosen));
}

function drawItems(timeline: Timeline): void {
  const list = document.querySelector<HTMLElement>("#timeline-items")!;
  list.replaceChildren();
  for (const item of timeline.items) {
    const li = document.createElement("li");
    li.className = `item kind-${item.kind}`;
    li.dataset.kind = item.kind;
    li.dataset.id = item.id;
    li.dataset.site = item.site;
    const when = document.createElement("time");
    if (item.date) when.dateTime = item.date;
    when.textContent = item.date ? showDate(item.date) : t("home.timeline.undated");
    const kind = document.createElement("span");
    kind.className = "kind";
    kind.textContent = kindLabel(item.kind);
    const title = document.createElement("strong");
    title.textContent = item.title;
    const meta = document.createElement("small");
    const modalities = Array.isArray(item.detail.modalities) ? (item.detail.modalities as string[]).join(" ") : "";
    meta.textContent = [item.site, modalities, item.status].filter(Boolean).join(" · ");
    li.append(when, kind, title, meta);
    const link = item.links.viewer ?? item.links.content ?? Object.values(item.links).find((l) => l.startsWith("/app/"));
    if (link) {
      const a = document.createElement("a");
      a.href = link;
      a.className = "open";
      a.textContent = t("home.open.viewer");
      a.setAttribute("aria-label", `${t("home.open.viewer")} : ${item.title}`);
      li.append(a);
    }
    list.append(li);
  }
  const status = document.querySelector<HTMLElement>("#timeline-status")!;
  status.textContent = timeline.items.length
    ? t("home.timeline.count", { n: timeline.items.length })
    : t("home.timeline.empty");
}

function filterParams(): URLSearchParams {
  const params = new URLSearchParams();
  const boxes = [...document.querySelectorAll<HTMLInputElement>("#timeline-kinds input[name=kind]")];
  const checked = boxes.filter((b) => b.checked).map((b) => b.value);
  if (boxes.length && checked.length < boxes.length) params.set("kind", checked.join(",") || "none");
  const site = document.querySelector<HTMLSelectElement>("#timeline-site")!.value;
  if (site) params.set("site", site);
  const from = document.querySelector<HTMLInputElement>("#timeline-from")!.value;
  const to = document.querySelector<HTMLInputElement>("#timeline-to")!.value;
  if (from) params.set("from", from);
  if (to) params.set("to", to);
  return params;
}

/** Load and draw the timeline of `masterId` (a new patient starts with no filter). */
export async function showTimeline(masterId: number, keepFilters = false): Promise<void> {
  const section = document.querySelector<HTMLElement>("#timeline")!;
  const status = document.querySelector<HTMLElement>("#timeline-status")!;
  if (masterId !== master && !keepFilters) {
    document.querySelector<HTMLElement>("#timeline-kinds")!.replaceChildren();
    document.querySelector<HTMLFormElement>("#timeline-filters")!.reset();
    knownSites = [];
  }
  master = masterId;
  section.hidden = false;
  document.body.dataset.timeline = "loading";
  status.textContent = t("home.timeline.loading");
  const params = filterParams();
  if (params.get("kind") === "none") {
    drawItems({ master_id: masterId, identities: [], kinds: [], sites: [], items: [] });
    document.body.dataset.timeline = "done";
    return;
  }
  try {
    const timeline = await getJson<Timeline>(`/api/patients/${masterId}/timeline?${params}`);
    drawPatient(timeline);
    drawFilters(timeline);
    drawItems(timeline);
    section.dataset.master = String(timeline.master_id);
    document.body.dataset.timeline = "done";
  } catch (e) {
    document.querySelector<HTMLElement>("#timeline-items")!.replaceChildren();
    status.textContent = e instanceof Error ? e.message : String(e);
    document.body.dataset.timeline = "failed";
  }
  const url = new URL(location.href);
  url.searchParams.set("patient", String(masterId));
  history.replaceState(null, "", url);
}

/** Re-run the timeline with the filters the user set. */
export function refilter(): Promise<void> {
  return master === null ? Promise.resolve() : showTimeline(master, true);
}
