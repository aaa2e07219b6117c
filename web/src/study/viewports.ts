// The radiology viewer's viewports on Cornerstone3D: one stack viewport for any series, or for a CT/MR volume
// the MPR layout, three orthographic volume viewports (axial, sagittal, coronal) over one streamed volume
// (its slices fetched from WADO-RS by the DICOM image loader). One tool group holds the reading tools:
// window/level, pan and zoom on the mouse buttons, scrolling on the wheel, and the keyboard (see page.ts).

import {
  Enums,
  RenderingEngine,
  type Types,
  eventTarget,
  init as coreInit,
  setVolumesForViewports,
  volumeLoader,
} from "@cornerstonejs/core";
import { init as loaderInit } from "@cornerstonejs/dicom-image-loader";
import {
  Enums as ToolEnums,
  PanTool,
  StackScrollTool,
  ToolGroupManager,
  WindowLevelTool,
  ZoomTool,
  addTool,
  init as toolsInit,
} from "@cornerstonejs/tools";
import type { Series } from "./series";

/** A tool of the primary mouse button (the middle button always pans, the right one zooms). */
export type ToolName = "window" | "pan" | "zoom" | "scroll";
export type Layout = "stack" | "mpr";

export const TOOL_OF: Record<ToolName, string> = {
  window: WindowLevelTool.toolName,
  pan: PanTool.toolName,
  zoom: ZoomTool.toolName,
  scroll: StackScrollTool.toolName,
};
const ENGINE = "study-engine";
const GROUP = "study-tools";
export const MPR_VIEWS = ["axial", "sagittal", "coronal"] as const;
const ORIENTATION: Record<(typeof MPR_VIEWS)[number], Enums.OrientationAxis> = {
  axial: Enums.OrientationAxis.AXIAL,
  sagittal: Enums.OrientationAxis.SAGITTAL,
  coronal: Enums.OrientationAxis.CORONAL,
};

let started: Promise<void> | null = null;

/** Start Cornerstone3D, its DICOM loader (one decoding worker) and the tools, once per page. */
export function startCornerstone(): Promise<void> {
  started ??= (async () => {
    coreInit();
    loaderInit({ maxWebWorkers: 1 });
    toolsInit();
    for (const tool of [WindowLevelTool, PanTool, ZoomTool, StackScrollTool]) addTool(tool);
  })();
  return started;
}

/** Resolves once every slice of the volume is loaded (at once if it was already; a second caller while it
 * loads waits for the loader's completion event, since the loader keeps only the first caller's callback). */
function volumeLoaded(volumeId: string, volume: { load: (cb: () => void) => void }): Promise<void> {
  return new Promise<void>((resolve) => {
    const status = (volume as { loadStatus?: { loaded?: boolean } }).loadStatus;
    if (status?.loaded) {
      resolve();
      return;
    }
    const done = (evt: Event): void => {
      if ((evt as CustomEvent<{ volumeId?: string }>).detail?.volumeId !== volumeId) return;
      eventTarget.removeEventListener(Enums.Events.IMAGE_VOLUME_LOADING_COMPLETED, done);
      resolve();
    };
    eventTarget.addEventListener(Enums.Events.IMAGE_VOLUME_LOADING_COMPLETED, done);
    volume.load(() => resolve());
  });
}

/** What the viewer shows: the layout, its viewports by name, and the series. */
export interface Shown {
  layout: Layout;
  names: string[];
  series: Series;
}

export class StudyViewports {
  private engine: RenderingEngine | null = null;
  private tool: ToolName = "window";
  private names: string[] = [];
  private shown: Shown | null = null;

  constructor(private readonly grid: HTMLElement) {}

  /** Show `series` in `layout` (MPR only for a volume) and resolve once every viewport has rendered. */
  async show(series: Series, layout: Layout): Promise<Shown> {
    await startCornerstone();
    this.teardown();
    const mpr = layout === "mpr" && series.volume;
    const names = mpr ? [...MPR_VIEWS] : ["stack"];
    this.grid.dataset.layout = mpr ? "mpr" : "stack";
    delete this.grid.dataset.viewports;
    const engine = new RenderingEngine(ENGINE);
    this.engine = engine;
    const inputs: Types.PublicViewportInput[] = [];
    const rendered: Promise<void>[] = [];
    for (const name of names) {
      const cell = document.createElement("div");
      cell.className = "viewport-cell";
      cell.dataset.view = name;
      // The cell takes the focus (Cornerstone sets its own element's tabindex): the keys act on its view.
      cell.tabIndex = 0;
      cell.setAttribute("role", "img");
      cell.setAttribute("aria-label", `${series.modality} ${series.description} ${name}`.trim());
      const element = document.createElement("div");
      element.className = "study-viewport";
      element.oncontextmenu = (e) => e.preventDefault();
      const label = document.createElement("span");
      label.className = "viewport-label";
      label.textContent = name;
      cell.append(element, label);
      this.grid.append(cell);
      inputs.push(
        mpr
          ? {
              viewportId: name,
              type: Enums.ViewportType.ORTHOGRAPHIC,
              element,
              defaultOptions: { orientation: ORIENTATION[name as (typeof MPR_VIEWS)[number]], background: [0, 0, 0] },
            }
          : { viewportId: name, type: Enums.ViewportType.STACK, element, defaultOptions: { background: [0, 0, 0] } },
      );
      rendered.push(
        new Promise<void>((resolve) =>
          element.addEventListener(Enums.Events.IMAGE_RENDERED, () => {
            cell.dataset.rendered = "true";
            resolve();
          }),
        ),
      );
    }
    engine.setViewports(inputs);
    this.names = names;
    this.bindTools(names);
    if (mpr) {
      const volumeId = `cornerstoneStreamingImageVolume:${series.uid}`;
      const volume = await volumeLoader.createAndCacheVolume(volumeId, { imageIds: series.imageIds });
      const loaded = volumeLoaded(volumeId, volume);
      await setVolumesForViewports(engine, [{ volumeId }], names);
      engine.renderViewports(names);
      await loaded;
      engine.renderViewports(names);
    } else {
      const viewport = engine.getViewport("stack") as Types.IStackViewport;
      await viewport.setStack(series.imageIds, Math.floor(series.imageIds.length / 2));
      viewport.render();
    }
    await Promise.all(rendered);
    this.grid.dataset.viewports = names.join(",");
    this.shown = { layout: mpr ? "mpr" : "stack", names, series };
    return this.shown;
  }

  private bindTools(names: string[]): void {
    ToolGroupManager.destroyToolGroup(GROUP);
    const group = ToolGroupManager.createToolGroup(GROUP);
    if (!group) throw new Error("the tool group could not be created");
    for (const name of Object.values(TOOL_OF)) group.addTool(name);
    for (const id of names) group.addViewport(id, ENGINE);
    this.setTool(this.tool);
  }

  /** Bind `name` to the primary mouse button; the middle button pans, the right one zooms, the wheel scrolls. */
  setTool(name: ToolName): void {
    const group = ToolGroupManager.getToolGroup(GROUP);
    this.tool = name;
    if (!group) return;
    const { Primary, Auxiliary, Secondary, Wheel } = ToolEnums.MouseBindings;
    for (const toolName of Object.values(TOOL_OF)) group.setToolPassive(toolName, { removeAllBindings: true });
    const bindings: Record<string, { mouseButton: number }[]> = {
      [TOOL_OF.window]: [],
      [TOOL_OF.pan]: [{ mouseButton: Auxiliary }],
      [TOOL_OF.zoom]: [{ mouseButton: Secondary }],
      [TOOL_OF.scroll]: [{ mouseButton: Wheel }],
    };
    bindings[TOOL_OF[name]].push({ mouseButton: Primary });
    for (const [toolName, wanted] of Object.entries(bindings)) {
      if (wanted.length) group.setToolActive(toolName, { bindings: wanted });
    }
  }

  get activeTool(): ToolName {
    return this.tool;
  }

  private viewport(name: string): Types.IStackViewport | Types.IVolumeViewport | null {
    return (this.engine?.getViewport(name) as Types.IStackViewport | Types.IVolumeViewport | undefined) ?? null;
  }

  /** Move `name`'s slice by `delta` (a stack's image, a volume viewport's slab). */
  scroll(name: string, delta: number): void {
    const vp = this.viewport(name);
    if (!vp) return;
    if (vp.type === Enums.ViewportType.STACK) {
      const stack = vp as Types.IStackViewport;
      const next = Math.min(Math.max(stack.getCurrentImageIdIndex() + delta, 0), stack.getImageIds().length - 1);
      void stack.setImageIdIndex(next);
    } else {
      (vp as Types.IVolumeViewport).scroll(delta);
    }
  }

  /** The slice `name` shows (a stack's image index, a volume viewport's slice index). */
  slice(name: string): number | null {
    return this.viewport(name)?.getSliceIndex() ?? null;
  }

  /** Change window width and centre by the given amounts in every viewport (keyboard window/level). */
  adjustWindow(dWidth: number, dCenter: number): void {
    for (const name of this.names) {
      const vp = this.viewport(name);
      const range = vp?.getProperties()?.voiRange;
      if (!vp || !range) continue;
      const width = Math.max(1, range.upper - range.lower + dWidth);
      const center = (range.upper + range.lower) / 2 + dCenter;
      vp.setProperties({ voiRange: { lower: center - width / 2, upper: center + width / 2 } });
      vp.render();
    }
  }

  /** Set a window (centre/width) in every viewport. */
  setWindow(center: number, width: number): void {
    for (const name of this.names) {
      const vp = this.viewport(name);
      if (!vp) continue;
      vp.setProperties({ voiRange: { lower: center - width / 2, upper: center + width / 2 } });
      vp.render();
    }
  }

  /** Zoom every viewport by `factor` (keyboard zoom). */
  zoom(factor: number): void {
    for (const name of this.names) {
      const vp = this.viewport(name);
      if (!vp) continue;
      vp.setZoom(vp.getZoom() * factor);
      vp.render();
    }
  }

  /** Camera and window back to how the series opened. */
  reset(): void {
    for (const name of this.names) {
      const vp = this.viewport(name);
      if (!vp) continue;
      vp.resetCamera();
      (vp as { resetProperties?: () => void }).resetProperties?.();
      vp.render();
    }
  }

  /** The current window of the first viewport, for the status line. */
  window(): { center: number; width: number } | null {
    const range = this.names.length ? this.viewport(this.names[0])?.getProperties()?.voiRange : undefined;
    return range ? { center: (range.upper + range.lower) / 2, width: range.upper - range.lower } : null;
  }

  /** Fit the viewports to their cells after a resize. */
  resize(): void {
    this.engine?.resize(true, true);
  }

  private teardown(): void {
    ToolGroupManager.destroyToolGroup(GROUP);
    this.engine?.destroy();
    this.engine = null;
    this.grid.replaceChildren();
    this.shown = null;
  }
}
