// An SVG layer over a viewer that draws shapes given in level-0 image pixels (annotations, measurements,
// the shape being drawn), redrawn on every viewport change.
import OpenSeadragon from "openseadragon";

export type Position = [number, number];

export interface Shape {
  kind: "Point" | "LineString" | "Polygon";
  points: Position[];
  label?: string;
  /** CSS class of the shape (annotation, measure, draft). */
  className: string;
  /** data-id of the SVG group (an annotation's id). */
  id?: string;
}

const SVG = "http://www.w3.org/2000/svg";

export class ShapeOverlay {
  readonly svg: SVGSVGElement;
  private layers = new Map<string, Shape[]>();

  constructor(private readonly viewer: OpenSeadragon.Viewer) {
    this.svg = document.createElementNS(SVG, "svg");
    this.svg.classList.add("shape-overlay");
    viewer.canvas.appendChild(this.svg);
    viewer.addHandler("update-viewport", () => this.draw());
    viewer.addHandler("resize", () => this.draw());
  }

  /** Replace the shapes of layer `name` and redraw. */
  set(name: string, shapes: Shape[]): void {
    this.layers.set(name, shapes);
    this.draw();
  }

  private toScreen(p: Position): Position | null {
    const item = this.viewer.world.getItemAt(0);
    if (!item) return null;
    const point = item.imageToViewerElementCoordinates(new OpenSeadragon.Point(p[0], p[1]));
    return [point.x, point.y];
  }

  draw(): void {
    const groups: SVGGElement[] = [];
    for (const [layer, shapes] of this.layers) {
      for (const shape of shapes) {
        const screen = shape.points.map((p) => this.toScreen(p)).filter((p): p is Position => p !== null);
        if (screen.length === 0) continue;
        const g = document.createElementNS(SVG, "g");
        g.setAttribute("class", `shape ${shape.className} layer-${layer}`);
        if (shape.id) g.dataset.id = shape.id;
        g.dataset.kind = shape.kind;
        if (shape.kind === "Point") {
          const c = document.createElementNS(SVG, "circle");
          c.setAttribute("cx", String(screen[0][0]));
          c.setAttribute("cy", String(screen[0][1]));
          c.setAttribute("r", "6");
          g.appendChild(c);
        } else {
          const el = document.createElementNS(SVG, shape.kind === "Polygon" ? "polygon" : "polyline");
          el.setAttribute("points", screen.map((p) => `${p[0].toFixed(1)},${p[1].toFixed(1)}`).join(" "));
          g.appendChild(el);
        }
        if (shape.label) {
          const t = document.createElementNS(SVG, "text");
          t.setAttribute("x", String(screen[0][0] + 8));
          t.setAttribute("y", String(screen[0][1] - 8));
          t.textContent = shape.label;
          g.appendChild(t);
        }
        groups.push(g);
      }
    }
    this.svg.replaceChildren(...groups);
  }
}
