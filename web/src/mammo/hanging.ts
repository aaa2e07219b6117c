// The hanging protocol on Cornerstone3D: one stack viewport per view (the current study's four, and the prior's
// four beside them), the chest walls facing each other, the reading tools (zoom, pan, window/level, magnifier)
// on one tool group, and the finding marks drawn over the images in image coordinates. A view with no 2D image
// hangs its tomosynthesis stack instead, at its middle slice; its slices scroll with the mouse wheel
// (StackScrollTool, bound here on the same tool group) and the arrow keys, its label says which slice is shown,
// and a mark placed on it keeps its slice. One more stack viewport (extra-view.ts) shows an extra view or a
// tomosynthesis stack beside the hanging.

import {
  Enums,
  RenderingEngine,
  type Types,
  init as coreInit,
  utilities,
} from "@cornerstonejs/core";
import { init as loaderInit } from "@cornerstonejs/dicom-image-loader";
import {
  Enums as ToolEnums,
  MagnifyTool,
  PanTool,
  StackScrollTool,
  ToolGroupManager,
  WindowLevelTool,
  ZoomTool,
  addTool,
  init as toolsInit,
} from "@cornerstonejs/tools";
import { EXTRA_VIEWPORT, ExtraView } from "./extra-view";
import { type MammoImage, SCREENING_VIEWS, hangingFrame, mirrored } from "./images";

/** A reading tool of the primary mouse button; "mark" places a finding instead. */
export type ToolName = "zoom" | "pan" | "window" | "magnify" | "mark";

const TOOL_OF: Record<Exclude<ToolName, "mark">, string> = {
  zoom: ZoomTool.toolName,
  pan: PanTool.toolName,
  window: WindowLevelTool.toolName,
  magnify: MagnifyTool.toolName,
};
const ENGINE = "mammo-engine";
const GROUP = "mammo-tools";

/** A mark of a finding on one view, in image pixel coordinates (column x, row y), and on a tomosynthesis stack
 * its slice (1-based). */
export interface Mark {
  label: string;
  view: string;
  x: number;
  y: number;
  frame?: number;
  selected: boolean;
}

/** Where a click on a view landed: the view, its SOP Instance UID, the image coordinates and, on a
 * tomosynthesis stack, the slice shown (1-based). */
export interface ViewClick {
  view: string;
  sop: string;
  x: number;
  y: number;
  frame?: number;
  shift: boolean;
}

/** What hangs in a view, for tests and the status bar. */
export interface HungView {
  sop: string;
  mirrored: boolean;
  columns: number;
  rows: number;
  tomo: boolean;
  frame: number;
  frames: number;
}

let started: Promise<void> | null = null;

/** Start Cornerstone3D, its DICOM loader (one decoding worker: a reading station has cores to spare for the
 * page itself) and the tools, once per page. */
export function startCornerstone(): Promise<void> {
  started ??= (async () => {
    coreInit();
    loaderInit({ maxWebWorkers: 1 });
    toolsInit();
    for (const tool of [ZoomTool, PanTool, WindowLevelTool, MagnifyTool, StackScrollTool]) addTool(tool);
  })();
  return started;
}

interface Slot {
  key: string; // the cell's data-view: "L-CC", "prior:L-CC"
  id: string; // viewport id
  view: string;
  element: HTMLDivElement;
  overlay: SVGSVGElement;
  label: HTMLSpanElement;
  name: string; // the label of a 2D view ("L CC", "prior R MLO")
  image: MammoImage | null;
}

/** The screen's viewports: current views in `current`, the prior's in `prior`, each cell named by its view. */
export class Hanging {
  private readonly engine: RenderingEngine;
  private readonly slots = new Map<string, Slot>();
  private tool: ToolName = "zoom";
  private marks: Mark[] = [];
  private rendered = new Set<string>();
  private renderWaiters: (() => void)[] = [];
  private readonly pending = new Set<string>();
  private pressedToMark = false;
  /** The cell under the pointer ("extra" for the extra viewport), and the last stack cell pointed at. */
  private pointed: string | null = null;
  private lastStack: string | null = null;
  /** The viewport of an extra view or a tomosynthesis stack, beside the hanging. */
  readonly extra: ExtraView;

  constructor(
    current: HTMLElement,
    prior: HTMLElement,
    extra: HTMLElement,
    private readonly onClick: (click: ViewClick) => void,
  ) {
    this.engine = new RenderingEngine(ENGINE);
    const inputs: Types.PublicViewportInput[] = [];
    for (const [grid, prefix] of [
      [current, ""],
      [prior, "prior:"],
    ] as const) {
      for (const view of SCREENING_VIEWS) {
        const cell = document.createElement("div");
        cell.className = "view-cell";
        cell.dataset.view = prefix + view;
        const element = document.createElement("div");
        element.className = "view-element";
        element.oncontextmenu = (e) => e.preventDefault();
        const overlay = document.createElementNS("http://www.w3.org/2000/svg", "svg");
        overlay.classList.add("marks");
        const label = document.createElement("span");
        label.className = "view-label";
        const name = (prefix ? "prior " : "") + view.replace("-", " ");
        label.textContent = name;
        cell.append(element, overlay, label);
        grid.append(cell);
        const id = `vp-${prefix.replace(":", "-")}${view}`;
        this.slots.set(prefix + view, { key: prefix + view, id, view, element, overlay, label, name, image: null });
        element.addEventListener(Enums.Events.STACK_NEW_IMAGE, () => {
          this.relabel(prefix + view);
          this.drawMarks(prefix + view);
        });
        element.addEventListener("mouseenter", () => this.point(prefix + view));
        element.addEventListener("mouseleave", () => (this.pointed = null));
        inputs.push({ viewportId: id, type: Enums.ViewportType.STACK, element, defaultOptions: {} });
        element.addEventListener(Enums.Events.IMAGE_RENDERED, () => {
          // The slice shown is the one rendered: STACK_NEW_IMAGE alone can leave the label a slice behind.
          this.relabel(prefix + view);
          this.drawMarks(prefix + view);
          this.rendered.add(prefix + view);
          this.notifyRendered();
        });
        element.addEventListener(Enums.Events.CAMERA_MODIFIED, () => this.drawMarks(prefix + view));
        if (!prefix) {
          // A click places a mark only when its press began in the Mark tool (not the end of a drag or of a
          // magnifier press that another tool handled).
          element.addEventListener("mousedown", () => (this.pressedToMark = this.tool === "mark"), { capture: true });
          element.addEventListener("click", (e) => this.clicked(view, e));
        }
      }
    }
    this.extra = new ExtraView(this.engine, extra);
    this.extra.element.addEventListener("mouseenter", () => (this.pointed = "extra"));
    this.extra.element.addEventListener("mouseleave", () => (this.pointed = null));
    inputs.push(this.extra.input);
    this.engine.setViewports(inputs);
    const group = ToolGroupManager.createToolGroup(GROUP);
    if (!group) throw new Error("the tool group could not be created");
    for (const name of [...Object.values(TOOL_OF), StackScrollTool.toolName]) group.addTool(name);
    for (const slot of this.slots.values()) group.addViewport(slot.id, ENGINE);
    group.addViewport(EXTRA_VIEWPORT, ENGINE);
    // The wheel scrolls a stack's frames (a single image has only one: nothing moves).
    group.setToolActive(StackScrollTool.toolName, { bindings: [{ mouseButton: ToolEnums.MouseBindings.Wheel }] });
    this.setTool("zoom");
    // Each cell, not the screen: showing or hiding the prior's block resizes the cells, not the screen.
    const resized = new ResizeObserver(() => {
      this.engine.resize(true, true);
      for (const key of this.slots.keys()) this.drawMarks(key);
    });
    for (const slot of this.slots.values()) resized.observe(slot.element);
    resized.observe(this.extra.element);
  }

  /** Hang another prior (or none) beside the current views; resolves once its views have rendered. */
  async showPrior(prior: Map<string, MammoImage> | null): Promise<void> {
    const waits: Promise<unknown>[] = [];
    const keys: string[] = [];
    for (const [key, slot] of this.slots) {
      if (!key.startsWith("prior:")) continue;
      const image = prior?.get(slot.view) ?? null;
      slot.image = image;
      this.relabel(key);
      slot.element.parentElement?.classList.toggle("empty", image === null);
      this.rendered.delete(key);
      if (image === null) continue;
      keys.push(key);
      waits.push(this.hang(slot, image));
    }
    await Promise.all(waits);
    await Promise.all(keys.map((k) => this.renderedOnce(k)));
  }

  private renderedOnce(key: string): Promise<void> {
    return new Promise<void>((resolve) => {
      const check = () => {
        if (this.rendered.has(key)) resolve();
        else this.renderWaiters.push(check);
      };
      check();
    });
  }

  /** Bind `name` to the primary mouse button; whatever it is, the middle button pans and the right one zooms. */
  setTool(name: ToolName): void {
    const group = ToolGroupManager.getToolGroup(GROUP);
    if (!group) return;
    const { Primary, Auxiliary, Secondary } = ToolEnums.MouseBindings;
    // Activating a tool adds bindings to those it has: every tool starts again from none.
    for (const toolName of Object.values(TOOL_OF)) group.setToolPassive(toolName, { removeAllBindings: true });
    const bindings = (toolName: string) => [
      ...(name !== "mark" && TOOL_OF[name] === toolName ? [{ mouseButton: Primary }] : []),
      ...(toolName === PanTool.toolName ? [{ mouseButton: Auxiliary }] : []),
      ...(toolName === ZoomTool.toolName ? [{ mouseButton: Secondary }] : []),
    ];
    for (const toolName of Object.values(TOOL_OF)) {
      const wanted = bindings(toolName);
      if (wanted.length) group.setToolActive(toolName, { bindings: wanted });
    }
    this.tool = name;
  }

  get activeTool(): ToolName {
    return this.tool;
  }

  /**
   * Hang the images (current study's by view; the prior's, or none) and resolve once every hung view has
   * rendered. Views without an image are left empty and named by `missing`.
   */
  async show(current: Map<string, MammoImage>, prior: Map<string, MammoImage> | null): Promise<string[]> {
    this.rendered.clear();
    const missing: string[] = [];
    const waits: Promise<unknown>[] = [];
    for (const [key, slot] of this.slots) {
      const isPrior = key.startsWith("prior:");
      const image = (isPrior ? prior : current)?.get(slot.view) ?? null;
      slot.image = image;
      this.relabel(key);
      slot.element.parentElement?.classList.toggle("empty", image === null);
      if (image === null) {
        if (!isPrior) missing.push(slot.view);
        continue;
      }
      waits.push(this.hang(slot, image));
    }
    await Promise.all(waits);
    const expected = [...this.slots.entries()].filter(([, s]) => s.image !== null).map(([k]) => k);
    await new Promise<void>((resolve) => {
      const check = () => {
        if (expected.every((k) => this.rendered.has(k))) resolve();
        else this.renderWaiters.push(check);
      };
      check();
    });
    return missing;
  }

  private async hang(slot: Slot, image: MammoImage): Promise<void> {
    const viewport = this.engine.getViewport(slot.id) as Types.IStackViewport;
    // A tomosynthesis stack hangs every slice, the middle one shown.
    await viewport.setStack(image.tomo ? image.imageIds : [image.imageId], hangingFrame(image));
    this.relabel(slot.key);
    viewport.resetCamera();
    viewport.setCamera({ flipHorizontal: mirrored(image) });
    if (image.window) {
      const { center, width } = image.window;
      viewport.setProperties({ voiRange: { lower: center - width / 2, upper: center + width / 2 } });
    }
    viewport.render();
  }

  private notifyRendered(): void {
    const waiting = this.renderWaiters;
    this.renderWaiters = [];
    for (const w of waiting) w();
  }

  /** Back to the hanging's own zoom, position, window and orientation on every view. */
  reset(): void {
    for (const slot of this.slots.values()) {
      if (!slot.image) continue;
      const viewport = this.engine.getViewport(slot.id) as Types.IStackViewport;
      viewport.resetCamera();
      viewport.resetProperties();
      viewport.setCamera({ flipHorizontal: mirrored(slot.image) });
      if (slot.image.window) {
        const { center, width } = slot.image.window;
        viewport.setProperties({ voiRange: { lower: center - width / 2, upper: center + width / 2 } });
      }
      viewport.render();
    }
  }

  /** Draw these finding marks (replacing the previous ones). */
  setMarks(marks: Mark[]): void {
    this.marks = marks;
    for (const key of this.slots.keys()) this.drawMarks(key);
  }

  /** The page position of an image point of a current view (for tests and for scrolling a mark into view). */
  pagePoint(view: string, x: number, y: number): [number, number] | null {
    const slot = this.slots.get(view);
    if (!slot?.image) return null;
    const viewport = this.engine.getViewport(slot.id) as Types.IStackViewport;
    const world = utilities.imageToWorldCoords(this.shownId(slot), [x, y]);
    if (!world) return null;
    const [cx, cy] = viewport.worldToCanvas(world);
    const box = slot.element.getBoundingClientRect();
    return [box.left + cx, box.top + cy];
  }

  /** The image hung in each view (view -> SOP Instance UID), whether it is mirrored and, for a tomosynthesis
   * stack, the slice shown (1-based) of how many. */
  hung(): Record<string, HungView> {
    const out: Record<string, HungView> = {};
    for (const [key, slot] of this.slots) {
      if (!slot.image) continue;
      const viewport = this.engine.getViewport(slot.id) as Types.IStackViewport;
      const camera = viewport.getCamera();
      out[key] = {
        sop: slot.image.sop,
        mirrored: Boolean(camera.flipHorizontal),
        columns: slot.image.columns,
        rows: slot.image.rows,
        tomo: slot.image.tomo,
        frame: slot.image.tomo ? viewport.getCurrentImageIdIndex() + 1 : 1,
        frames: slot.image.tomo ? slot.image.imageIds.length : 1,
      };
    }
    return out;
  }

  /** What the arrow keys scroll: the stack under the pointer, else the extra viewport when open (`extraOpen`),
   * else the stack last pointed at; null when none. */
  scrollTarget(extraOpen: boolean): string | null {
    if (this.pointed === "extra" && extraOpen) return "extra";
    if (this.pointed && this.slots.get(this.pointed)?.image?.tomo) return this.pointed;
    if (extraOpen) return "extra";
    return this.lastStack && this.slots.get(this.lastStack)?.image?.tomo ? this.lastStack : null;
  }

  /** Move a hung stack by `delta` slices (held at its ends); resolves once the slice is set. */
  async scroll(key: string, delta: number): Promise<void> {
    const slot = this.slots.get(key);
    if (!slot?.image?.tomo) return;
    const viewport = this.engine.getViewport(slot.id) as Types.IStackViewport;
    const now = viewport.getCurrentImageIdIndex();
    const target = Math.min(Math.max(now + delta, 0), slot.image.imageIds.length - 1);
    if (target !== now) await viewport.setImageIdIndex(target);
  }

  private point(key: string): void {
    this.pointed = key;
    if (this.slots.get(key)?.image?.tomo) this.lastStack = key;
  }

  /** A stack's label says which slice is shown ("L CC tomosynthesis · slice 4/8"); a 2D view's its name. */
  private relabel(key: string): void {
    const slot = this.slots.get(key);
    if (!slot) return;
    const image = slot.image;
    if (!image?.tomo) {
      slot.label.textContent = slot.name;
      return;
    }
    const viewport = this.engine.getViewport(slot.id) as Types.IStackViewport;
    const slice = viewport.getCurrentImageIdIndex() + 1;
    slot.label.textContent = `${slot.name} tomosynthesis · slice ${slice}/${image.imageIds.length}`;
  }

  /** The image id a view shows now (a stack's current slice). */
  private shownId(slot: Slot): string {
    const image = slot.image;
    if (!image) return "";
    if (!image.tomo) return image.imageId;
    const viewport = this.engine.getViewport(slot.id) as Types.IStackViewport;
    return image.imageIds[viewport.getCurrentImageIdIndex()] ?? image.imageId;
  }

  /** A current view's camera and window, to see the tools act (zoom is the camera's parallel scale). */
  state(view: string): { scale: number; lower: number; upper: number; mirrored: boolean; frame: number } | null {
    const slot = this.slots.get(view);
    if (!slot?.image) return null;
    const viewport = this.engine.getViewport(slot.id) as Types.IStackViewport;
    const camera = viewport.getCamera();
    const voi = viewport.getProperties().voiRange;
    return {
      scale: camera.parallelScale ?? 0,
      lower: voi?.lower ?? Number.NaN,
      upper: voi?.upper ?? Number.NaN,
      mirrored: Boolean(camera.flipHorizontal),
      frame: viewport.getCurrentImageIdIndex() + 1,
    };
  }

  private clicked(view: string, event: MouseEvent): void {
    if (this.tool !== "mark" || !this.pressedToMark) return;
    this.pressedToMark = false;
    const slot = this.slots.get(view);
    if (!slot?.image) return;
    const viewport = this.engine.getViewport(slot.id) as Types.IStackViewport;
    const box = slot.element.getBoundingClientRect();
    const world = viewport.canvasToWorld([event.clientX - box.left, event.clientY - box.top]);
    const [x, y] = utilities.worldToImageCoords(this.shownId(slot), world) ?? [Number.NaN, Number.NaN];
    // A click outside the image is not a place on the breast.
    if (!(x >= 0 && y >= 0 && x <= slot.image.columns && y <= slot.image.rows)) return;
    const frame = slot.image.tomo ? viewport.getCurrentImageIdIndex() + 1 : undefined;
    this.onClick({ view, sop: slot.image.sop, x: round(x), y: round(y), frame, shift: event.shiftKey });
  }

  /** Redraw the marks of a view on the next frame, once the camera's change has been rendered. */
  private drawMarks(key: string): void {
    if (this.pending.has(key)) return;
    this.pending.add(key);
    requestAnimationFrame(() => {
      this.pending.delete(key);
      this.drawMarksNow(key);
    });
  }

  private drawMarksNow(key: string): void {
    const slot = this.slots.get(key);
    if (!slot) return;
    slot.overlay.replaceChildren();
    if (!slot.image || key.startsWith("prior:")) return;
    const viewport = this.engine.getViewport(slot.id) as Types.IStackViewport | undefined;
    if (!viewport) return;
    const slice = slot.image.tomo ? viewport.getCurrentImageIdIndex() + 1 : 0;
    for (const mark of this.marks.filter((m) => m.view === key)) {
      const world = utilities.imageToWorldCoords(this.shownId(slot), [mark.x, mark.y]);
      if (!world) continue;
      const [cx, cy] = viewport.worldToCanvas(world);
      // On a stack a mark is drawn in full on its own slice, dashed (with its slice) on the others.
      const elsewhere = slice > 0 && mark.frame !== undefined && mark.frame !== slice;
      const ns = "http://www.w3.org/2000/svg";
      const ring = document.createElementNS(ns, "circle");
      ring.setAttribute("cx", String(cx));
      ring.setAttribute("cy", String(cy));
      ring.setAttribute("r", "9");
      ring.setAttribute("class", `mark${mark.selected ? " selected" : ""}${elsewhere ? " other-slice" : ""}`);
      const label = document.createElementNS(ns, "text");
      label.setAttribute("x", String(cx + 12));
      label.setAttribute("y", String(cy - 10));
      label.textContent = elsewhere ? `${mark.label} (slice ${mark.frame})` : mark.label;
      slot.overlay.append(ring, label);
    }
  }
}

function round(v: number): number {
  return Math.round(v * 10) / 10;
}
