// The programme dashboard: /app/mammo-dashboard.html[?programme=CODE&from=YYYY-MM-DD&to=YYYY-MM-DD]
// The figures of GET /api/mammo/metrics over the period (recall rate first/subsequent, cancer detection rate,
// PPV, L2-only share, CTI rate, interval cancers, delays), their trends over successive periods (one request
// per period), one reader against the programme, the readers' table, and the API's CSV export.

import { getJson, requireUser } from "../api";
import { reasonOf } from "./reasons";
import { type Series, lineChart } from "./plots";

interface Summary {
  median: number | null;
  mean: number | null;
  n: number;
}

interface ReaderFigures {
  reader: string;
  reads: number;
  yearly_minimum: number;
  annualised_reads: number | null;
  below_minimum: boolean;
  recall_rate: number | null;
  cancers_found: number;
  kappa: Record<string, number | null>;
}

interface Metrics {
  programme: string;
  protocol: string;
  from: string | null;
  to: string | null;
  screened: number;
  recall_rate: number | null;
  recall_rate_by_round: { first: number | null; subsequent: number | null };
  cancer_detection_rate: number | null;
  ppv_recall: number | null;
  l2_only_cancer_share: number | null;
  cti_rate: number | null;
  interval_cancers: number;
  interval_cancer_rate: number | null;
  delays: {
    exam_to_received_days: Summary;
    exam_to_l2_days: Summary;
    received_to_result_days: Summary;
    result_within_deadline: number | null;
  };
  readers: ReaderFigures[];
}

function byId<T extends HTMLElement>(id: string): T {
  const found = document.getElementById(id);
  if (!found) throw new Error(`the page has no #${id}`);
  return found as T;
}

const pct = (v: number) => `${(v * 100).toFixed(1)} %`;
const per1000 = (v: number) => `${v.toFixed(1)} ‰`;
const days = (v: number) => `${v.toFixed(1)} d`;
const show = (v: number | null, f: (v: number) => string) => (v === null ? "—" : f(v));

function url(programme: string, from: string, to: string, format = "json"): string {
  const q = new URLSearchParams({ programme });
  if (from) q.set("from", from);
  if (to) q.set("to", to);
  if (format !== "json") q.set("format", format);
  return `/api/mammo/metrics?${q}`;
}

/** The successive periods (months, quarters or years) that cover [from, to], each clipped to it. */
export function periods(from: string, to: string, step: string): { label: string; from: string; to: string }[] {
  const out: { label: string; from: string; to: string }[] = [];
  const months = step === "month" ? 1 : step === "quarter" ? 3 : 12;
  const end = new Date(`${to}T00:00:00Z`);
  const start = new Date(`${from}T00:00:00Z`);
  let y = start.getUTCFullYear();
  let m = Math.floor(start.getUTCMonth() / months) * months;
  const iso = (d: Date) => d.toISOString().slice(0, 10);
  while (new Date(Date.UTC(y, m, 1)) <= end && out.length < 60) {
    const first = new Date(Date.UTC(y, m, 1));
    const last = new Date(Date.UTC(y, m + months, 0));
    const label =
      months === 1 ? iso(first).slice(0, 7) : months === 3 ? `${y} Q${m / 3 + 1}` : String(y);
    out.push({ label, from: iso(first < start ? start : first), to: iso(last > end ? end : last) });
    m += months;
    if (m >= 12) {
      y += Math.floor(m / 12);
      m %= 12;
    }
  }
  return out;
}

function tile(name: string, value: string): HTMLElement {
  const div = document.createElement("div");
  div.className = "tile";
  div.dataset.metric = name;
  const v = document.createElement("div");
  v.className = "value";
  v.textContent = value;
  const n = document.createElement("div");
  n.className = "name";
  n.textContent = name;
  div.append(v, n);
  return div;
}

/** In the blinded protocol the two reads are symmetrical: the share is of cancers found by one reader only. */
function singleReaderLabel(m: Metrics, title = false): string {
  const text = m.protocol === "eu-blinded" ? "cancers found by one reader only" : "cancers found by L2 only";
  return title ? text[0].toUpperCase() + text.slice(1) : text;
}

function tiles(m: Metrics): void {
  const d = m.delays;
  byId("tiles").replaceChildren(
    tile("screened", String(m.screened)),
    tile("recall rate", show(m.recall_rate, pct)),
    tile("recall rate, first round", show(m.recall_rate_by_round.first, pct)),
    tile("recall rate, subsequent rounds", show(m.recall_rate_by_round.subsequent, pct)),
    tile("cancer detection rate", show(m.cancer_detection_rate, per1000)),
    tile("PPV of recall", show(m.ppv_recall, pct)),
    tile(singleReaderLabel(m), show(m.l2_only_cancer_share, pct)),
    tile("CTI rate", show(m.cti_rate, pct)),
    tile("interval cancers", `${m.interval_cancers} (${show(m.interval_cancer_rate, per1000)})`),
    tile("exam → file received (median)", show(d.exam_to_received_days.median, days)),
    tile("exam → L2 read (median)", show(d.exam_to_l2_days.median, days)),
    tile("received → result sent (median)", show(d.received_to_result_days.median, days)),
    tile("results within the deadline", show(d.result_within_deadline, pct)),
  );
}

function readersTable(m: Metrics, chosen: string): void {
  byId("readers").replaceChildren(
    ...m.readers.map((r) => {
      const tr = document.createElement("tr");
      tr.className = r.below_minimum ? "below" : "";
      if (r.reader === chosen) tr.classList.add("chosen");
      const kappa = Object.entries(r.kappa)
        .map(([other, k]) => `${other}: ${k === null ? "—" : k.toFixed(2)}`)
        .join(", ");
      for (const cell of [
        r.reader,
        String(r.reads),
        r.annualised_reads === null ? "—" : String(Math.round(r.annualised_reads)),
        `${r.yearly_minimum}${r.below_minimum ? " (below)" : ""}`,
        show(r.recall_rate, pct),
        String(r.cancers_found),
        kappa || "—",
      ]) {
        const td = document.createElement("td");
        td.textContent = cell;
        tr.append(td);
      }
      return tr;
    }),
  );
}

async function render(): Promise<void> {
  const programme = byId<HTMLSelectElement>("programme").value;
  const fromInput = byId<HTMLInputElement>("from");
  const toInput = byId<HTMLInputElement>("to");
  byId("error").textContent = "";
  document.body.dataset.ready = "false";
  try {
    const whole = await getJson<Metrics>(url(programme, fromInput.value, toInput.value));
    fromInput.value ||= whole.from ?? "";
    toInput.value ||= whole.to ?? "";
    byId<HTMLAnchorElement>("csv").href = url(programme, fromInput.value, toInput.value, "csv");
    byId("headline").textContent =
      `Programme ${whole.programme} (${whole.protocol}), ${whole.from ?? "—"} to ${whole.to ?? "—"}`;
    history.replaceState(null, "", `?${new URLSearchParams({ programme, from: fromInput.value, to: toInput.value })}`);
    tiles(whole);
    const readerSelect = byId<HTMLSelectElement>("reader");
    const chosen = readerSelect.value || whole.readers[0]?.reader || "";
    readerSelect.replaceChildren(
      ...whole.readers.map((r) => {
        const o = document.createElement("option");
        o.value = o.textContent = r.reader;
        o.selected = r.reader === chosen;
        return o;
      }),
    );
    readersTable(whole, chosen);
    const spans = whole.from && whole.to ? periods(fromInput.value, toInput.value, byId<HTMLSelectElement>("step").value) : [];
    const each = await Promise.all(spans.map((p) => getJson<Metrics>(url(programme, p.from, p.to))));
    const labels = spans.map((p) => p.label);
    const line = (pick: (m: Metrics) => number | null, name = "programme"): Series => ({ name, values: each.map(pick) });
    byId("trends").replaceChildren(
      lineChart(
        "Recall rate",
        labels,
        [line((m) => m.recall_rate_by_round.first, "first round"), line((m) => m.recall_rate_by_round.subsequent, "subsequent")],
        pct,
      ),
      lineChart("Cancer detection rate", labels, [line((m) => m.cancer_detection_rate)], per1000),
      lineChart("PPV of recall", labels, [line((m) => m.ppv_recall)], pct),
      lineChart(
        each.length ? singleReaderLabel(each[0], true) : "Cancers found by L2 only",
        labels,
        [line((m) => m.l2_only_cancer_share)],
        pct,
      ),
      lineChart("CTI rate", labels, [line((m) => m.cti_rate)], pct),
      lineChart("Interval cancer rate", labels, [line((m) => m.interval_cancer_rate)], per1000),
      lineChart(
        "Delays (median, days)",
        labels,
        [
          line((m) => m.delays.exam_to_received_days.median, "exam → received"),
          line((m) => m.delays.exam_to_l2_days.median, "exam → L2"),
          line((m) => m.delays.received_to_result_days.median, "received → result"),
        ],
        days,
      ),
    );
    const of = (m: Metrics) => m.readers.find((r) => r.reader === chosen);
    const minimum = whole.readers[0]?.yearly_minimum ?? 0;
    byId("reader-plots").replaceChildren(
      lineChart(
        `Recall rate: ${chosen || "—"} against the programme`,
        labels,
        [line((m) => of(m)?.recall_rate ?? null, chosen || "reader"), line((m) => m.recall_rate)],
        pct,
      ),
      lineChart(
        `Annualised reads: ${chosen || "—"}`,
        labels,
        [line((m) => of(m)?.annualised_reads ?? null, chosen || "reader")],
        (v) => String(Math.round(v)),
        minimum ? { value: minimum, name: `minimum ${minimum}` } : undefined,
      ),
    );
  } catch (error) {
    byId("error").textContent = reasonOf(error);
  }
  document.body.dataset.ready = "true";
}

async function main(): Promise<void> {
  await requireUser();
  const params = new URLSearchParams(location.search);
  const programmes = await getJson<{ code: string; protocol: string }[]>("/api/mammo/programmes");
  const select = byId<HTMLSelectElement>("programme");
  select.replaceChildren(
    ...programmes.map((p) => {
      const o = document.createElement("option");
      o.value = p.code;
      o.textContent = `${p.code} (${p.protocol})`;
      o.selected = p.code === params.get("programme");
      return o;
    }),
  );
  byId<HTMLInputElement>("from").value = params.get("from") ?? "";
  byId<HTMLInputElement>("to").value = params.get("to") ?? "";
  byId<HTMLFormElement>("period").onsubmit = (e) => {
    e.preventDefault();
    void render();
  };
  byId("reader").onchange = () => void render();
  if (programmes.length) await render();
  else {
    byId("error").textContent = "No screening programme is set up yet.";
    document.body.dataset.ready = "true";
  }
}

void main();
