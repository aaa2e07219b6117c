// The slide viewer page: /app/viewer.html?slide=ID[&compare=ID2]
// One slide (or two side by side, viewports locked), its case's slides in a strip, magnification presets,
// scale bar, ruler and area, and annotations saved on the server.
import OpenSeadragon from "openseadragon";
import { ApiError, requireUser } from "./api";
import {
  PRESETS,
  ShapeOverlay,
  ViewportLock,
  imageViewport,
  openSlideViewer,
  setImageViewport,
  setMagnification,
  switchSlide,
  whenFullyLoaded,
} from "./viewer";
import { type AnnotationFeature, deleteAnnotation, featurePoints, loadAnnotations, saveAnnotation } from "./viewer/annotations";
import { Drawing, type Drawn, type Tool } from "./viewer/drawing";
import { type SlideInfo, associatedUrl, loadSlideInfo } from "./viewer/info";
import { bindKeys } from "./viewer/keyboard";
import { areaSquareMm, attachScaleBar, lengthMicrons } from "./viewer/optics";
import { reportTiming, sentTimings } from "./viewer/timings";

const $ = <T extends HTMLElement>(selector: string): T => document.querySelector<T>(selector)!;
const errorBox = $<HTMLElement>("#viewer-error");

function showError(error: unknown): void {
  errorBox.textContent = error instanceof ApiError ? error.detail : String(error);
}

await requireUser();
const params = new URLSearchParams(location.search);
let info: SlideInfo;
try {
  info = await loadSlideInfo(params.get("slide") ?? "");
} catch (error) {
  // Not found, not allowed, unreadable: say why, and show nothing of the slide.
  showError(error);
  $("#slide-title").textContent = params.get("slide") ?? "";
  throw error;
}
let features: AnnotationFeature[] = [];
let pending: Drawn | null = null;
let fieldStarted: number | null = null;

const viewer = openSlideViewer($("#viewer"), info.slide_id, {
  // Opening the case counts from the page's navigation (log-in check and slide details included).
  onOpened: () => reportTiming("open_case", performance.now(), info.slide_id),
});
const overlay = new ShapeOverlay(viewer);
attachScaleBar(viewer, $("#scale-bar"), () => info.mpp);
const drawing = new Drawing(viewer, overlay, finished);

// --- slide details, images, the case strip ---------------------------------------------------------------

function showSlide(): void {
  document.title = `Archipel — ${info.stain || "slide"} ${info.container_id || info.slide_id}`;
  $("#slide-title").textContent = [info.accession, info.container_id, info.stain].filter(Boolean).join(" · ") || info.slide_id;
  const label = $<HTMLImageElement>("#label-image");
  const overview = $<HTMLImageElement>("#overview-image");
  label.hidden = !info.associated.includes("label");
  overview.hidden = !info.associated.includes("overview");
  if (!label.hidden) label.src = associatedUrl(info.slide_id, "label");
  if (!overview.hidden) overview.src = associatedUrl(info.slide_id, "overview");
  const strip = $("#case-strip");
  strip.replaceChildren(
    ...info.case_slides.map((s) => {
      const button = document.createElement("button");
      button.dataset.slide = s.slide_id;
      button.className = s.slide_id === info.slide_id ? "current" : "";
      button.title = `${s.stain} ${s.container_id}`.trim();
      const img = document.createElement("img");
      img.src = associatedUrl(s.slide_id, "thumbnail");
      img.alt = s.stain || s.slide_id;
      const caption = document.createElement("span");
      caption.textContent = s.stain || s.container_id || s.slide_id;
      button.append(img, caption);
      button.addEventListener("click", () => void openOther(s.slide_id));
      return button;
    }),
  );
  const compare = $<HTMLSelectElement>("#compare");
  const chosen = compare.value;
  compare.replaceChildren(new Option("—", ""), ...info.case_slides.map((s) => new Option(s.stain || s.slide_id, s.slide_id)));
  compare.value = chosen;
  const presets = $("#magnification-presets");
  presets.replaceChildren(
    ...PRESETS.map((m, i) => {
      const b = document.createElement("button");
      b.textContent = `${m}×`;
      b.title = `${m}× (key ${i + 1})`;
      b.dataset.magnification = String(m);
      b.disabled = !info.mpp;
      b.addEventListener("click", () => preset(i));
      return b;
    }),
  );
}

async function openOther(slideId: string): Promise<void> {
  if (slideId === info.slide_id) return;
  try {
    info = await loadSlideInfo(slideId);
  } catch (error) {
    showError(error);
    return;
  }
  const url = new URL(location.href);
  url.searchParams.set("slide", slideId);
  history.replaceState(null, "", url);
  drawing.start(null);
  overlay.set("measure", []);
  switchSlide(viewer, slideId, (ms) => reportTiming("switch_slide", ms, slideId));
  showSlide();
  await refreshAnnotations();
}

function preset(index: number): void {
  if (info.mpp && index < PRESETS.length) {
    setMagnification(viewer, info.mpp[0], PRESETS[index]);
  }
}

// --- annotations and measurements --------------------------------------------------------------------------

async function refreshAnnotations(): Promise<void> {
  try {
    features = (await loadAnnotations(info.slide_id)).features;
  } catch (error) {
    showError(error);
    features = [];
  }
  overlay.set(
    "annotations",
    features.map((f) => ({ kind: f.geometry.type, points: featurePoints(f), label: f.properties.label, className: "annotation", id: f.id })),
  );
  const list = $("#annotation-list");
  list.replaceChildren(
    ...features.map((f) => {
      const li = document.createElement("li");
      li.dataset.id = f.id;
      li.textContent = `${f.properties.label} (${f.geometry.type}, ${f.properties.author}) `;
      const remove = document.createElement("button");
      remove.textContent = "Delete";
      remove.addEventListener("click", async () => {
        try {
          await deleteAnnotation(info.slide_id, f.id);
        } catch (error) {
          showError(error);
        }
        await refreshAnnotations();
      });
      li.appendChild(remove);
      return li;
    }),
  );
}

function finished(drawn: Drawn): void {
  const mpp = info.mpp;
  if (drawn.tool === "ruler" || drawn.tool === "area") {
    const measure = $("#measure");
    if (!mpp) {
      measure.textContent = "the slide has no pixel size";
    } else if (drawn.tool === "ruler") {
      measure.textContent = `${lengthMicrons(drawn.points, mpp).toFixed(1)} µm`;
    } else {
      measure.textContent = `${areaSquareMm(drawn.points, mpp).toFixed(4)} mm²`;
    }
    overlay.set("measure", [{ kind: drawn.tool === "ruler" ? "LineString" : "Polygon", points: drawn.points, className: "measure" }]);
    return;
  }
  pending = drawn;
  overlay.set("draft", [{ kind: drawn.tool as "Point" | "LineString" | "Polygon", points: drawn.points, className: "draft" }]);
  $("#label-form").hidden = false;
  $<HTMLInputElement>("#annotation-label").focus();
}

$<HTMLFormElement>("#label-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  if (!pending) return;
  const label = $<HTMLInputElement>("#annotation-label");
  try {
    await saveAnnotation(info.slide_id, pending.tool as "Point" | "LineString" | "Polygon", pending.points, label.value);
    errorBox.textContent = "";
  } catch (error) {
    showError(error);
    return;
  }
  pending = null;
  label.value = "";
  $("#label-form").hidden = true;
  overlay.set("draft", []);
  await refreshAnnotations();
});

$("#annotation-cancel").addEventListener("click", () => {
  pending = null;
  $("#label-form").hidden = true;
  overlay.set("draft", []);
});

function chooseTool(tool: Tool | null): void {
  const same = drawing.tool === tool;
  drawing.start(same ? null : tool);
  for (const b of document.querySelectorAll<HTMLButtonElement>("button[data-tool]")) {
    b.classList.toggle("active", b.dataset.tool === drawing.tool);
  }
}

for (const b of document.querySelectorAll<HTMLButtonElement>("button[data-tool]")) {
  b.addEventListener("click", () => chooseTool(b.dataset.tool as Tool));
}
$("#finish").addEventListener("click", () => drawing.finish());

// --- side by side ------------------------------------------------------------------------------------------

let second: OpenSeadragon.Viewer | null = null;
let lock: ViewportLock | null = null;

function compareWith(slideId: string): void {
  const box = $("#viewer-b");
  box.hidden = !slideId;
  if (!slideId) return;
  if (second === null) {
    second = openSlideViewer(box, slideId, { navigator: false });
    lock = new ViewportLock(viewer, second);
    lock.locked = $<HTMLInputElement>("#lock").checked;
    attachScaleBar(second, $("#scale-bar-b"), () => info.mpp);
    second.addOnceHandler("open", () => {
      // Start where the first viewer is, so that the locked pair shows the same field.
      const view = imageViewport(viewer);
      if (view && second && lock?.locked) setImageViewport(second, view, true);
    });
  } else {
    switchSlide(second, slideId);
  }
  requestAnimationFrame(() => viewer.viewport.resize(viewer.viewport.getContainerSize(), true));
}

$<HTMLSelectElement>("#compare").addEventListener("change", (event) => compareWith((event.target as HTMLSelectElement).value));
$<HTMLInputElement>("#lock").addEventListener("change", (event) => {
  if (lock) lock.locked = (event.target as HTMLInputElement).checked;
});

// --- keyboard and timings ----------------------------------------------------------------------------------

bindKeys({
  viewer: () => viewer,
  moving: (v) => lock?.lead(v),
  preset,
  nextSlide: (step) => {
    const slides = info.case_slides;
    const at = slides.findIndex((s) => s.slide_id === info.slide_id);
    const next = slides[at + step];
    if (next) void openOther(next.slide_id);
  },
  finish: () => drawing.finish(),
  cancel: () => chooseTool(null),
  panned: () => {
    if (fieldStarted !== null) return;
    fieldStarted = performance.now();
    // The jump is drawn on the next frame; only then does the image know which tiles it lacks.
    viewer.addOnceHandler("update-viewport", () =>
      requestAnimationFrame(() =>
        whenFullyLoaded(viewer, () => {
          if (fieldStarted !== null) reportTiming("next_field", performance.now() - fieldStarted, info.slide_id);
          fieldStarted = null;
        }),
      ),
    );
  },
});

showSlide();
await refreshAnnotations();
if (params.get("compare")) {
  $<HTMLSelectElement>("#compare").value = params.get("compare") ?? "";
  compareWith(params.get("compare") ?? "");
}

let animating = false;
viewer.addHandler("animation-start", () => (animating = true));
viewer.addHandler("animation-finish", () => (animating = false));

/** For the end-to-end tests and the multi-head page: the page's live objects. */
(window as unknown as { archipel: unknown }).archipel = {
  viewer,
  second: () => second,
  secondViewport: () => (second ? imageViewport(second) : null),
  info: () => info,
  imageViewport: () => imageViewport(viewer),
  annotations: () => features,
  timings: sentTimings,
  drawing,
  /** Viewer-element pixels of level-0 positions, and back. */
  imageToScreen: (points: [number, number][]) => points.map(([x, y]) => {
    const p = viewer.world.getItemAt(0).imageToViewerElementCoordinates(new OpenSeadragon.Point(x, y));
    return [p.x, p.y];
  }),
  screenToImage: (points: [number, number][]) => points.map(([x, y]) => {
    const p = viewer.world.getItemAt(0).viewerElementToImageCoordinates(new OpenSeadragon.Point(x, y));
    return [Math.round(p.x * 10) / 10, Math.round(p.y * 10) / 10];
  }),
  /** Whether the view stopped moving and every tile it needs is drawn. */
  isSettled: () => {
    const v = viewer.viewport;
    const still = v.getZoom(true) === v.getZoom(false) && v.getCenter(true).equals(v.getCenter(false));
    return still && !animating && (viewer.world.getItemAt(0)?.getFullyLoaded() ?? false);
  },
  fullyLoaded: () => new Promise<void>((resolve) => whenFullyLoaded(viewer, resolve)),
};
document.body.dataset.ready = "true";
