// The structured read: per-breast assessment and result, density, the findings marked on the images (type,
// location, suspicion, the views with their image coordinates), technical quality per view, and the body the
// server's POST /api/mammo/tasks/{id}/reading expects. The server validates it; this form only shapes it.

import { SCREENING_VIEWS } from "./images";
import type { Mark, ViewClick } from "./hanging";

export interface FindingMark {
  view: string;
  x: number;
  y: number;
  sop_uid: string;
  /** The slice of a tomosynthesis stack (1-based); absent on a 2D image. */
  frame?: number;
}

export interface Finding {
  type: "mass" | "calcifications" | "distortion" | "asymmetry";
  laterality: "R" | "L";
  quadrant: string | null;
  clock: number | null;
  depth: string | null;
  views: FindingMark[];
  suspicion: number;
}

export interface ReadBody {
  right: { assessment: number; result?: string };
  left: { assessment: number; result?: string };
  density: string;
  findings: Finding[];
  quality: Record<string, { adequate: boolean; reason: string }>;
  further_tests: string;
  consensus_requested: boolean;
}

const TYPES = ["mass", "calcifications", "distortion", "asymmetry"] as const;
const QUADRANTS = ["", "UOQ", "UIQ", "LOQ", "LIQ", "central", "retroareolar", "axillary"];
const DEPTHS = ["", "anterior", "middle", "posterior"];

function byId<T extends HTMLElement>(id: string): T {
  const found = document.getElementById(id);
  if (!found) throw new Error(`the page has no #${id}`);
  return found as T;
}

function options(select: HTMLSelectElement, values: [string, string][], chosen = ""): void {
  select.replaceChildren(
    ...values.map(([value, label]) => {
      const o = document.createElement("option");
      o.value = value;
      o.textContent = label;
      o.selected = value === chosen;
      return o;
    }),
  );
}

function field(label: string, control: HTMLElement): HTMLLabelElement {
  const l = document.createElement("label");
  l.append(label + " ", control);
  return l;
}

/** The read being written for one case; `changed` is told whenever the marks to draw change. */
export class ReadForm {
  private findings: Finding[] = [];
  private selected = -1;

  constructor(private readonly changed: (marks: Mark[]) => void) {
    const acr: [string, string][] = [0, 1, 2, 3, 4, 5].map((n) => [String(n), String(n)]);
    const results: [string, string][] = [
      ["", "from ACR"],
      ["normal", "normal"],
      ["positive", "positive"],
      ["cti", "technically insufficient"],
    ];
    for (const side of ["right", "left"]) {
      options(byId(`${side}-assessment`), acr, "1");
      options(byId(`${side}-result`), results);
    }
  }

  /** Start an empty read (ACR 1 both sides, density b, every view adequate). */
  reset(consensusAllowed: boolean): void {
    this.findings = [];
    this.selected = -1;
    for (const side of ["right", "left"]) {
      byId<HTMLSelectElement>(`${side}-assessment`).value = "1";
      byId<HTMLSelectElement>(`${side}-result`).value = "";
    }
    byId<HTMLSelectElement>("density").value = "b";
    byId<HTMLInputElement>("further-tests").value = "";
    byId<HTMLInputElement>("consensus").checked = false;
    byId("consensus-line").hidden = !consensusAllowed;
    const quality = byId("quality");
    quality.replaceChildren(
      ...SCREENING_VIEWS.map((view) => {
        const row = document.createElement("div");
        row.className = "quality-row";
        row.dataset.view = view;
        const ok = document.createElement("input");
        ok.type = "checkbox";
        ok.checked = true;
        ok.className = "adequate";
        const reason = document.createElement("input");
        reason.className = "reason";
        reason.placeholder = "why inadequate";
        reason.maxLength = 200;
        reason.disabled = true;
        ok.onchange = () => {
          reason.disabled = ok.checked;
        };
        row.append(field(`${view} adequate`, ok), reason);
        return row;
      }),
    );
    this.render();
  }

  /** A click on a view: a new finding there, or (shift-click) one more view of the selected finding. */
  place(click: ViewClick): void {
    const mark: FindingMark = { view: click.view, x: click.x, y: click.y, sop_uid: click.sop };
    if (click.frame !== undefined) mark.frame = click.frame;
    const laterality = click.view.charAt(0) as "R" | "L";
    const current = this.findings[this.selected];
    if (click.shift && current && current.laterality === laterality) {
      current.views = [...current.views.filter((v) => v.view !== click.view), mark];
    } else {
      this.findings.push({
        type: "mass",
        laterality,
        quadrant: null,
        clock: null,
        depth: null,
        views: [mark],
        suspicion: 4,
      });
      this.selected = this.findings.length - 1;
    }
    this.render();
  }

  /** The body to submit, from the form's current state. */
  body(): ReadBody {
    const breast = (side: string) => {
      const result = byId<HTMLSelectElement>(`${side}-result`).value;
      const assessment = Number(byId<HTMLSelectElement>(`${side}-assessment`).value);
      return result ? { assessment, result } : { assessment };
    };
    const quality: ReadBody["quality"] = {};
    for (const row of byId("quality").querySelectorAll<HTMLElement>(".quality-row")) {
      const ok = row.querySelector<HTMLInputElement>(".adequate");
      const reason = row.querySelector<HTMLInputElement>(".reason");
      if (row.dataset.view && ok) quality[row.dataset.view] = { adequate: ok.checked, reason: ok.checked ? "" : (reason?.value ?? "") };
    }
    return {
      right: breast("right"),
      left: breast("left"),
      density: byId<HTMLSelectElement>("density").value,
      findings: this.findings.map((f) => ({ ...f, views: f.views.map((v) => ({ ...v })) })),
      quality,
      further_tests: byId<HTMLInputElement>("further-tests").value,
      consensus_requested: byId<HTMLInputElement>("consensus").checked,
    };
  }

  private render(): void {
    const list = byId("findings");
    list.replaceChildren(...this.findings.map((f, i) => this.row(f, i)));
    const marks: Mark[] = [];
    this.findings.forEach((f, i) => {
      for (const v of f.views)
        marks.push({ label: String(i + 1), view: v.view, x: v.x, y: v.y, frame: v.frame, selected: i === this.selected });
    });
    this.changed(marks);
  }

  private row(f: Finding, i: number): HTMLLIElement {
    const li = document.createElement("li");
    li.className = i === this.selected ? "finding selected" : "finding";
    li.dataset.index = String(i);
    const where = document.createElement("span");
    where.className = "where";
    where.textContent = `${f.laterality === "R" ? "right" : "left"} breast — ${f.views
      .map((v) => `${v.view}${v.frame !== undefined ? ` slice ${v.frame}` : ""} (${v.x}, ${v.y})`)
      .join(", ")}`;
    where.onclick = () => {
      this.selected = i;
      this.render();
    };
    const type = document.createElement("select");
    type.className = "type";
    options(type, TYPES.map((t) => [t, t]), f.type);
    type.onchange = () => {
      f.type = type.value as Finding["type"];
    };
    const quadrant = document.createElement("select");
    quadrant.className = "quadrant";
    options(quadrant, QUADRANTS.map((q) => [q, q || "—"]), f.quadrant ?? "");
    quadrant.onchange = () => {
      f.quadrant = quadrant.value || null;
    };
    const clock = document.createElement("input");
    clock.className = "clock";
    clock.type = "number";
    clock.min = "1";
    clock.max = "12";
    clock.value = f.clock === null ? "" : String(f.clock);
    clock.onchange = () => {
      f.clock = clock.value ? Number(clock.value) : null;
    };
    const depth = document.createElement("select");
    depth.className = "depth";
    options(depth, DEPTHS.map((d) => [d, d || "—"]), f.depth ?? "");
    depth.onchange = () => {
      f.depth = depth.value || null;
    };
    const suspicion = document.createElement("select");
    suspicion.className = "suspicion";
    options(suspicion, [2, 3, 4, 5].map((n) => [String(n), `ACR ${n}`]), String(f.suspicion));
    suspicion.onchange = () => {
      f.suspicion = Number(suspicion.value);
    };
    const remove = document.createElement("button");
    remove.type = "button";
    remove.textContent = "Remove";
    remove.onclick = () => {
      this.findings.splice(i, 1);
      this.selected = Math.min(this.selected, this.findings.length - 1);
      this.render();
    };
    li.append(
      where,
      field("type", type),
      field("quadrant", quadrant),
      field("or clock", clock),
      field("depth", depth),
      field("suspicion", suspicion),
      remove,
    );
    return li;
  }
}
