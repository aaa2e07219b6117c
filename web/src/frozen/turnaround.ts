// The turnaround page: /app/frozen-turnaround.html[?from=YYYY-MM-DD&to=YYYY-MM-DD]
// The report's figures per step against the 20-minute target (CAP: 90 % within 20 minutes of arrival), its
// SVG plot, and the viewer's timings against their limits (open case 4 s, switch slide 1 s, next field 0.25 s).
import { getJson, requireUser } from "../api";
import { el, errorText } from "./common";

interface StepFigures {
  count: number;
  median: number | null;
  p90: number | null;
  within_target: number | null;
}

interface ViewerFigures {
  count: number;
  p50_ms: number | null;
  p95_ms: number | null;
  limit_ms: number;
  within_limit: number | null;
}

interface Report {
  from: string;
  to: string;
  target_minutes: number;
  requests: number;
  answered: number;
  cap_goal: number;
  cap_goal_met: boolean;
  steps: Record<string, StepFigures>;
  viewer: Record<string, ViewerFigures>;
}

const STEP_NAMES: Record<string, string> = {
  request_to_first_slide: "Request → first slide",
  first_slide_to_first_view: "First slide → first view",
  first_view_to_verdict: "First view → verdict",
  verdict_to_seen: "Verdict → read by the surgeon",
  arrival_to_verdict: "Arrival → verdict (CAP)",
  request_to_verdict: "Request → verdict",
  request_to_seen: "Request → read",
};
const VIEWER_NAMES: Record<string, string> = {
  open_case: "Open a case",
  switch_slide: "Switch slide",
  next_field: "Next field of view",
};

const $ = <T extends HTMLElement>(selector: string): T => document.querySelector<T>(selector)!;
let shown: Report | null = null;

const number = (v: number | null, digits = 1): string => (v === null ? "—" : v.toFixed(digits));
const share = (v: number | null): string => (v === null ? "—" : `${(v * 100).toFixed(0)} %`);

function day(d: Date): string {
  return d.toISOString().slice(0, 10);
}

function period(): { from: string; to: string } {
  // Dates are whole days in the browser's time zone; the API wants instants with a zone, `to` excluded.
  const from = new Date(`${$<HTMLInputElement>("#from").value}T00:00:00`);
  const to = new Date(`${$<HTMLInputElement>("#to").value}T00:00:00`);
  to.setDate(to.getDate() + 1);
  return { from: from.toISOString(), to: to.toISOString() };
}

async function show(): Promise<void> {
  const { from, to } = period();
  const query = `from=${encodeURIComponent(from)}&to=${encodeURIComponent(to)}`;
  try {
    const report = await getJson<Report>(`/api/frozen-sections/report?${query}`);
    shown = report;
    $("#report-error").textContent = "";
    const cap = report.steps.arrival_to_verdict;
    $("#headline").textContent =
      `${report.requests} request(s), ${report.answered} answered · ${share(cap?.within_target ?? null)} within ` +
      `${report.target_minutes} min of arrival (goal ${share(report.cap_goal)}: ${report.cap_goal_met ? "met" : "not met"})`;
    $("#steps").replaceChildren(
      ...Object.entries(report.steps).map(([name, f]) => {
        const row = el("tr");
        row.dataset.step = name;
        const within = el("td", share(f.within_target));
        if (f.within_target !== null) within.className = f.within_target >= report.cap_goal ? "ok" : "late";
        row.append(el("th", STEP_NAMES[name] ?? name), el("td", String(f.count)), el("td", number(f.median)), el("td", number(f.p90)), within);
        return row;
      }),
    );
    $("#viewer").replaceChildren(
      ...Object.entries(report.viewer).map(([name, f]) => {
        const row = el("tr");
        row.dataset.event = name;
        const p95 = el("td", number(f.p95_ms, 0));
        if (f.p95_ms !== null) p95.className = f.p95_ms < f.limit_ms ? "ok" : "late";
        row.append(
          el("th", VIEWER_NAMES[name] ?? name),
          el("td", String(f.count)),
          el("td", number(f.p50_ms, 0)),
          p95,
          el("td", `< ${f.limit_ms / 1000} s`),
          el("td", share(f.within_limit)),
        );
        return row;
      }),
    );
    // The plot is fetched with the session cookie like any same-origin image.
    $<HTMLImageElement>("#plot").src = `/api/frozen-sections/report.svg?${query}`;
    history.replaceState(null, "", `?from=${$<HTMLInputElement>("#from").value}&to=${$<HTMLInputElement>("#to").value}`);
  } catch (error) {
    $("#report-error").textContent = errorText(error);
  }
}

await requireUser();
const params = new URLSearchParams(location.search);
const today = new Date();
const monthAgo = new Date(today);
monthAgo.setDate(today.getDate() - 30);
$<HTMLInputElement>("#from").value = params.get("from") ?? day(monthAgo);
$<HTMLInputElement>("#to").value = params.get("to") ?? day(today);
$("#period").addEventListener("submit", (event) => {
  event.preventDefault();
  void show();
});
await show();
(window as unknown as { archipel: unknown }).archipel = { report: () => shown };
document.body.dataset.ready = "true";
