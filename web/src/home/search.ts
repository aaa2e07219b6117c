// The search box of the professional home: GET /api/search with the form's filters, patients and reports
// listed as links that open the patient's timeline.
import { getJson } from "../api";
import { t } from "../i18n";
import { showDate } from "./texts";

interface PatientHit {
  master_id: number;
  name: string;
  birth_date: string;
  sex: string;
  sites: string[];
}

interface ReportHit {
  id: number;
  master_id: number | null;
  title: string;
  type: string;
  status: string;
  site: string;
  author: string;
  date: string | null;
}

/** What GET /api/search answers. */
export interface SearchAnswer {
  patients: PatientHit[];
  patients_total: number;
  reports: ReportHit[];
  reports_total: number;
}

/** Run the search of the form's fields and draw the results; `open(master)` shows a patient's timeline. */
export async function runSearch(form: HTMLFormElement, open: (master: number) => void): Promise<void> {
  const status = document.querySelector<HTMLElement>("#search-status")!;
  const params = new URLSearchParams();
  for (const [key, value] of new FormData(form)) if (String(value).trim()) params.set(key, String(value).trim());
  status.textContent = t("home.search.searching");
  document.body.dataset.search = "running";
  let answer: SearchAnswer;
  try {
    answer = await getJson<SearchAnswer>(`/api/search?${params}`);
  } catch (e) {
    status.textContent = e instanceof Error ? e.message : String(e);
    document.body.dataset.search = "failed";
    return;
  }
  const found = answer.patients.length + answer.reports.length;
  status.textContent = found
    ? t("home.search.count", { p: answer.patients_total, r: answer.reports_total })
    : t("home.search.none");
  drawPatients(answer.patients, open);
  drawReports(answer.reports, open);
  document.body.dataset.search = "done";
}

function timelineLink(master: number, label: string, open: (master: number) => void): HTMLAnchorElement {
  const a = document.createElement("a");
  a.href = `/app/index.html?patient=${master}`;
  a.textContent = label;
  a.addEventListener("click", (e) => {
    e.preventDefault();
    open(master);
  });
  return a;
}

function drawPatients(hits: PatientHit[], open: (master: number) => void): void {
  const section = document.querySelector<HTMLElement>("#patient-results")!;
  const list = document.querySelector<HTMLElement>("#patient-list")!;
  list.replaceChildren();
  section.hidden = hits.length === 0;
  for (const hit of hits) {
    const li = document.createElement("li");
    li.className = "patient-hit";
    li.dataset.master = String(hit.master_id);
    const name = hit.name || `#${hit.master_id}`;
    const a = timelineLink(hit.master_id, name, open);
    a.setAttribute("aria-label", t("home.patient.open", { name }));
    const meta = document.createElement("small");
    const parts = [hit.sex, hit.birth_date ? t("home.patient.born", { date: showDate(hit.birth_date) }) : ""];
    parts.push(t("home.patient.sites", { sites: hit.sites.join(", ") }));
    meta.textContent = parts.filter(Boolean).join(" · ");
    li.append(a, " ", meta);
    list.append(li);
  }
}

function drawReports(hits: ReportHit[], open: (master: number) => void): void {
  const section = document.querySelector<HTMLElement>("#report-results")!;
  const list = document.querySelector<HTMLElement>("#report-list")!;
  list.replaceChildren();
  section.hidden = hits.length === 0;
  for (const hit of hits) {
    const li = document.createElement("li");
    li.className = "report-hit";
    li.dataset.id = String(hit.id);
    const title = document.createElement("strong");
    title.textContent = hit.title;
    const meta = document.createElement("small");
    meta.textContent = [hit.type, hit.status, hit.site, hit.author, showDate(hit.date)].filter(Boolean).join(" · ");
    li.append(title, " ", meta);
    if (hit.master_id !== null) li.append(" ", timelineLink(hit.master_id, t("home.report.patient"), open));
    list.append(li);
  }
}
