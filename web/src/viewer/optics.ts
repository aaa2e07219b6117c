// Magnification and physical sizes on screen.
//
// Convention (docs/viewer.md): magnification = 10 µm / (µm per screen pixel), with one CSS pixel as the screen
// pixel. So 40× is 0.25 µm per screen pixel: a slide scanned at 0.25 µm/px shown at 1 screen px per image px.
// A slide of mpp m shown at magnification M has zoom (screen px per level-0 px) = m × M / 10.
import type OpenSeadragon from "openseadragon";
import { imageViewport, setImageViewport } from "./open";

export const PRESETS = [2.5, 5, 10, 20, 40] as const;
const MICRONS_AT_1X = 10;

/** Zoom (screen px per level-0 px) that shows a slide of `mpp` µm/px at `magnification`. */
export function zoomFor(mpp: number, magnification: number): number {
  return (mpp * magnification) / MICRONS_AT_1X;
}

/** The magnification a zoom shows for a slide of `mpp` µm/px. */
export function magnificationOf(mpp: number, zoom: number): number {
  return (MICRONS_AT_1X * zoom) / mpp;
}

/** Show `magnification`, keeping the centre. */
export function setMagnification(viewer: OpenSeadragon.Viewer, mpp: number, magnification: number, now = false): void {
  const current = imageViewport(viewer);
  if (!current) return;
  setImageViewport(viewer, { center: current.center, zoom: zoomFor(mpp, magnification) }, now);
}

/** A round length (1, 2 or 5 × 10^n µm) whose bar is at most `maxPx` screen pixels at `micronsPerPx`. */
export function scaleBarLength(micronsPerPx: number, maxPx = 160): { microns: number; px: number; text: string } {
  const limit = micronsPerPx * maxPx;
  let microns = 10 ** Math.floor(Math.log10(limit));
  for (const k of [5, 2]) {
    if (microns * k <= limit) {
      microns *= k;
      break;
    }
  }
  const text = microns >= 1000 ? `${microns / 1000} mm` : `${microns} µm`;
  return { microns, px: microns / micronsPerPx, text };
}

/** Length of a polyline of level-0 points in µm. */
export function lengthMicrons(points: [number, number][], mpp: [number, number]): number {
  let total = 0;
  for (let i = 1; i < points.length; i++) {
    total += Math.hypot((points[i][0] - points[i - 1][0]) * mpp[0], (points[i][1] - points[i - 1][1]) * mpp[1]);
  }
  return total;
}

/** Area of a polygon of level-0 points (shoelace) in mm². */
export function areaSquareMm(points: [number, number][], mpp: [number, number]): number {
  let twice = 0;
  for (let i = 0; i < points.length; i++) {
    const [x1, y1] = points[i];
    const [x2, y2] = points[(i + 1) % points.length];
    twice += x1 * y2 - x2 * y1;
  }
  return (Math.abs(twice) / 2) * mpp[0] * mpp[1] * 1e-6;
}

/** Keep a scale bar and a magnification read-out in `element` up to date with the viewer. */
export function attachScaleBar(viewer: OpenSeadragon.Viewer, element: HTMLElement, mpp: () => [number, number] | null): void {
  const bar = document.createElement("div");
  bar.className = "scale-bar-line";
  const label = document.createElement("span");
  label.className = "scale-bar-text";
  const magnification = document.createElement("span");
  magnification.className = "magnification";
  element.replaceChildren(bar, label, magnification);
  const update = (): void => {
    const m = mpp();
    const view = imageViewport(viewer);
    if (!m || !view) {
      element.hidden = true;
      return;
    }
    element.hidden = false;
    const scale = scaleBarLength(m[0] / view.zoom);
    bar.style.width = `${scale.px.toFixed(1)}px`;
    label.textContent = scale.text;
    magnification.textContent = `${magnificationOf(m[0], view.zoom).toFixed(1)}×`;
  };
  viewer.addHandler("update-viewport", update);
  viewer.addHandler("open", update);
}
