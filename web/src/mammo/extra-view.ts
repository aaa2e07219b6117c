// The extra viewport of the reading screen: one stack viewport, beside the hanging, for an image the four views
// leave out (an extra view such as XCCL or a spot compression, a retake, a tomosynthesis stack). A stack holds
// one image id per frame; the mouse wheel (StackScrollTool, bound by the hanging's tool group) and scroll()
// (the arrow keys) move through it. The label says which view and which frame is shown.

import { Enums, type RenderingEngine, type Types } from "@cornerstonejs/core";
import { type MammoImage, mirrored } from "./images";

export const EXTRA_VIEWPORT = "vp-extra";

/** Where the extra viewport is: its image, the frame shown (0-based) and how many frames the image has. */
export interface ExtraState {
  sop: string;
  frame: number;
  frames: number;
  tomo: boolean;
}

export class ExtraView {
  readonly element: HTMLDivElement;
  private readonly label: HTMLSpanElement;
  private image: MammoImage | null = null;
  private rendered = false;
  private waiters: (() => void)[] = [];

  constructor(
    private readonly engine: RenderingEngine,
    grid: HTMLElement,
  ) {
    const cell = document.createElement("div");
    cell.className = "view-cell";
    cell.dataset.view = "extra";
    this.element = document.createElement("div");
    this.element.className = "view-element";
    this.element.oncontextmenu = (e) => e.preventDefault();
    this.label = document.createElement("span");
    this.label.className = "view-label";
    this.label.id = "extra-label";
    cell.append(this.element, this.label);
    grid.append(cell);
    this.element.addEventListener(Enums.Events.IMAGE_RENDERED, () => {
      this.rendered = true;
      const waiting = this.waiters;
      this.waiters = [];
      for (const w of waiting) w();
      this.relabel();
    });
    this.element.addEventListener(Enums.Events.STACK_NEW_IMAGE, () => this.relabel());
  }

  /** The viewport's input, for the rendering engine's setViewports. */
  get input(): Types.PublicViewportInput {
    return { viewportId: EXTRA_VIEWPORT, type: Enums.ViewportType.STACK, element: this.element, defaultOptions: {} };
  }

  private get viewport(): Types.IStackViewport {
    return this.engine.getViewport(EXTRA_VIEWPORT) as Types.IStackViewport;
  }

  /** Show `image` (every frame of a stack, the first one shown); resolves once it has rendered. */
  async open(image: MammoImage): Promise<void> {
    this.image = image;
    this.rendered = false;
    const viewport = this.viewport;
    await viewport.setStack(image.imageIds, 0);
    viewport.resetCamera();
    viewport.setCamera({ flipHorizontal: mirrored(image) });
    if (image.window) {
      const { center, width } = image.window;
      viewport.setProperties({ voiRange: { lower: center - width / 2, upper: center + width / 2 } });
    }
    viewport.render();
    await new Promise<void>((resolve) => (this.rendered ? resolve() : this.waiters.push(resolve)));
    this.relabel();
  }

  /** Move the stack by `delta` frames (held at its ends); resolves once the frame is set. */
  async scroll(delta: number): Promise<void> {
    const state = this.state();
    if (!state) return;
    const target = Math.min(Math.max(state.frame + delta, 0), state.frames - 1);
    if (target !== state.frame) await this.viewport.setImageIdIndex(target);
  }

  /** The image shown and its frame, or null when the viewport is closed. */
  state(): ExtraState | null {
    const image = this.image;
    if (!image) return null;
    const frame = this.viewport.getCurrentImageIdIndex();
    return { sop: image.sop, frame, frames: image.imageIds.length, tomo: image.tomo };
  }

  /** Close the viewport (the page hides its block). */
  close(): void {
    this.image = null;
  }

  private relabel(): void {
    const image = this.image;
    if (!image) return;
    const name = `${image.view.replace("-", " ")}${image.modifier ? ` ${image.modifier}` : ""}`;
    const frame = (this.state()?.frame ?? 0) + 1;
    this.label.textContent = image.tomo ? `${name} tomosynthesis · frame ${frame}/${image.imageIds.length}` : name;
  }
}
