// Drawing on a viewer: clicks on the slide add level-0 positions to the shape being drawn (a quick click;
// a drag still pans). A point ends at its first click, a ruler at its second; lines, polygons and areas end
// with `finish()` (Enter, or the Finish button).
import type OpenSeadragon from "openseadragon";
import type { Position, ShapeOverlay } from "./overlay";

export type Tool = "Point" | "LineString" | "Polygon" | "ruler" | "area";

export interface Drawn {
  tool: Tool;
  points: Position[];
}

const KIND: Record<Tool, "Point" | "LineString" | "Polygon"> = {
  Point: "Point",
  LineString: "LineString",
  Polygon: "Polygon",
  ruler: "LineString",
  area: "Polygon",
};

export class Drawing {
  tool: Tool | null = null;
  private points: Position[] = [];

  constructor(
    viewer: OpenSeadragon.Viewer,
    private readonly overlay: ShapeOverlay,
    private readonly onDone: (drawn: Drawn) => void,
  ) {
    viewer.addHandler("canvas-click", (event) => {
      if (!this.tool || !event.quick) return;
      event.preventDefaultAction = true;
      const item = viewer.world.getItemAt(0);
      if (!item) return;
      const p = item.viewerElementToImageCoordinates(event.position);
      this.add([Math.round(p.x * 10) / 10, Math.round(p.y * 10) / 10]);
    });
  }

  /** Start drawing with `tool` (null stops), dropping any unfinished shape. */
  start(tool: Tool | null): void {
    this.tool = tool;
    this.points = [];
    this.show();
  }

  /** Add a level-0 position to the shape being drawn (what a click does). */
  add(p: Position): void {
    if (!this.tool) return;
    this.points.push(p);
    if (this.tool === "Point" || (this.tool === "ruler" && this.points.length === 2)) {
      this.finish();
      return;
    }
    this.show();
  }

  /** End the shape being drawn, if it has enough positions. Returns whether it ended. */
  finish(): boolean {
    const tool = this.tool;
    if (!tool) return false;
    const least = tool === "Point" ? 1 : tool === "Polygon" || tool === "area" ? 3 : 2;
    if (this.points.length < least) return false;
    const points = this.points;
    this.points = [];
    this.show();
    this.onDone({ tool, points });
    return true;
  }

  private show(): void {
    const kind = this.tool ? KIND[this.tool] : "LineString";
    this.overlay.set("draft", this.points.length ? [{ kind: kind === "Point" ? "Point" : "LineString", points: this.points, className: "draft" }] : []);
  }
}
