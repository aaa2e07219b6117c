// The radiology viewer, /app/study.html?study=UID[&series=UID][&layout=stack|mpr]: the study's series on the
// left, the images on Cornerstone3D, CT/MR volumes in MPR (axial, sagittal, coronal) by default. When the
// viewports have rendered, #viewports carries data-viewports="axial,sagittal,coronal" (or "stack").
import { requireUser } from "../api";
import { applyTexts, languageSwitch, onLanguageChange, t } from "../i18n";
import { mountBell } from "../inbox";
import "./texts";
import { type Series, studySeries } from "./series";
import { type Layout, StudyViewports, type ToolName } from "./viewports";

const PRESETS: Record<string, [number, number] | null> = {
  default: null,
  soft: [40, 400],
  lung: [-600, 1500],
  bone: [400, 1800],
  brain: [40, 80],
};

await requireUser();
document.querySelector<HTMLElement>("#language-slot")!.append(languageSwitch());
applyTexts(document);
mountBell(document.querySelector<HTMLElement>("#bell-slot")!);

const params = new URLSearchParams(location.search);
const studyUid = params.get("study") ?? "";
const status = document.querySelector<HTMLElement>("#study-status")!;
const grid = document.querySelector<HTMLElement>("#viewports")!;
const list = document.querySelector<HTMLElement>("#series-list")!;
const viewports = new StudyViewports(grid);
let series: Series[] = [];
let current: Series | null = null;
let layout: Layout = params.get("layout") === "stack" ? "stack" : "mpr";
let focused = "";

function drawWindow(): void {
  const w = viewports.window();
  document.querySelector<HTMLElement>("#window-status")!.textContent = w
    ? t("study.window", { c: Math.round(w.center), w: Math.round(w.width) })
    : "";
}

function drawTools(): void {
  for (const button of document.querySelectorAll<HTMLButtonElement>("[data-tool]")) {
    button.setAttribute("aria-pressed", String(button.dataset.tool === viewports.activeTool));
  }
  for (const button of document.querySelectorAll<HTMLButtonElement>("[data-layout]")) {
    button.setAttribute("aria-pressed", String(button.dataset.layout === grid.dataset.layout));
    button.disabled = button.dataset.layout === "mpr" && !current?.volume;
  }
}

function drawSeries(): void {
  list.replaceChildren();
  for (const s of series) {
    const li = document.createElement("li");
    const button = document.createElement("button");
    button.type = "button";
    button.dataset.series = s.uid;
    button.setAttribute("aria-pressed", String(s.uid === current?.uid));
    button.textContent = t("study.series.item", { modality: s.modality, description: s.description, n: s.imageIds.length });
    button.addEventListener("click", () => void open(s, layout));
    li.append(button);
    list.append(li);
  }
}

async function open(s: Series, wanted: Layout): Promise<void> {
  current = s;
  layout = wanted;
  document.body.dataset.rendering = "true";
  status.textContent = wanted === "mpr" && !s.volume ? t("study.no-volume") : t("study.rendering");
  drawSeries();
  try {
    const shown = await viewports.show(s, wanted);
    focused = shown.names[0];
    status.textContent = "";
    const url = new URL(location.href);
    url.searchParams.set("series", s.uid);
    url.searchParams.set("layout", shown.layout);
    history.replaceState(null, "", url);
  } catch (e) {
    status.textContent = e instanceof Error ? e.message : String(e);
  }
  delete document.body.dataset.rendering;
  drawTools();
  drawWindow();
}

for (const button of document.querySelectorAll<HTMLButtonElement>("[data-tool]")) {
  button.addEventListener("click", () => {
    viewports.setTool(button.dataset.tool as ToolName);
    drawTools();
  });
}
for (const button of document.querySelectorAll<HTMLButtonElement>("[data-layout]")) {
  button.addEventListener("click", () => {
    if (current) void open(current, button.dataset.layout as Layout);
  });
}
document.querySelector<HTMLButtonElement>("#reset")!.addEventListener("click", () => {
  viewports.reset();
  drawWindow();
});
document.querySelector<HTMLSelectElement>("#preset")!.addEventListener("change", (e) => {
  const preset = PRESETS[(e.target as HTMLSelectElement).value];
  if (preset) viewports.setWindow(preset[0], preset[1]);
  else viewports.reset();
  drawWindow();
});
grid.addEventListener("focusin", (e) => {
  const cell = (e.target as HTMLElement).closest<HTMLElement>(".viewport-cell");
  if (cell?.dataset.view) focused = cell.dataset.view;
});
grid.addEventListener("mouseup", () => drawWindow());
new ResizeObserver(() => viewports.resize()).observe(grid);

const KEY_TOOLS: Record<string, ToolName> = { w: "window", p: "pan", z: "zoom", s: "scroll" };
document.addEventListener("keydown", (e) => {
  const target = e.target as HTMLElement;
  if (target.closest("input, select, textarea") || e.ctrlKey || e.metaKey || e.altKey) return;
  const key = e.key.toLowerCase();
  if (key in KEY_TOOLS) {
    viewports.setTool(KEY_TOOLS[key]);
    drawTools();
  } else if (e.key === "ArrowUp" || e.key === "PageUp") {
    viewports.scroll(focused, e.key === "PageUp" ? -5 : -1);
  } else if (e.key === "ArrowDown" || e.key === "PageDown") {
    viewports.scroll(focused, e.key === "PageDown" ? 5 : 1);
  } else if (e.key === "ArrowLeft" || e.key === "ArrowRight") {
    viewports.adjustWindow(e.key === "ArrowLeft" ? -20 : 20, 0);
    drawWindow();
  } else if (e.key === "+" || e.key === "=") {
    viewports.zoom(1.2);
  } else if (e.key === "-") {
    viewports.zoom(1 / 1.2);
  } else if (key === "r") {
    viewports.reset();
    drawWindow();
  } else if (key === "m" && current) {
    void open(current, grid.dataset.layout === "mpr" ? "stack" : "mpr");
  } else {
    return;
  }
  e.preventDefault();
});
onLanguageChange(() => {
  drawSeries();
  drawWindow();
});

// For tests and the console: what is shown.
(window as unknown as { archipel: unknown }).archipel = {
  layout: () => grid.dataset.layout ?? "",
  viewports: () => grid.dataset.viewports ?? "",
  window: () => viewports.window(),
  slice: (name: string) => viewports.slice(name),
};

if (!studyUid) {
  status.textContent = t("study.missing");
} else {
  status.textContent = t("study.loading");
  try {
    const answer = await studySeries(studyUid);
    series = answer.series;
    const h = answer.header;
    document.querySelector<HTMLElement>("#study-header")!.textContent = [h.patientName, h.patientId, h.studyDate, h.description]
      .filter(Boolean)
      .join(" · ");
    const wanted = series.find((s) => s.uid === params.get("series")) ?? series.find((s) => s.volume) ?? series[0];
    if (wanted) await open(wanted, layout);
    else status.textContent = t("study.none");
  } catch (e) {
    status.textContent = e instanceof Error ? e.message : String(e);
  }
}
document.body.dataset.ready = "true";
