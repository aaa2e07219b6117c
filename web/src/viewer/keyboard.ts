// Keyboard navigation: arrows jump a quarter of the view, + and - zoom, 1-5 the magnification presets,
// n and p the next and previous slide of the case, Enter finishes a shape, Escape drops the tool.
import OpenSeadragon from "openseadragon";

export interface KeyActions {
  viewer: () => OpenSeadragon.Viewer;
  preset: (index: number) => void;
  nextSlide: (step: 1 | -1) => void;
  finish: () => void;
  cancel: () => void;
  /** Called before a key acts on the viewer. */
  moving?: (viewer: OpenSeadragon.Viewer) => void;
  /** Called after an arrow key moved the view (the next field of view). */
  panned: () => void;
}

export function bindKeys(actions: KeyActions): void {
  document.addEventListener("keydown", (event) => {
    // Keys typed into a text field or a list are theirs; a checkbox or a button leaves them to the viewer.
    const target = event.target as HTMLElement | null;
    const typing = target instanceof HTMLInputElement && !["checkbox", "radio", "button", "submit"].includes(target.type);
    if (typing || target instanceof HTMLSelectElement || target instanceof HTMLTextAreaElement) return;
    if (event.ctrlKey || event.metaKey || event.altKey) return;
    const viewer = actions.viewer();
    actions.moving?.(viewer);
    const bounds = viewer.viewport.getBounds();
    const pan: Record<string, [number, number]> = {
      ArrowLeft: [-bounds.width / 4, 0],
      ArrowRight: [bounds.width / 4, 0],
      ArrowUp: [0, -bounds.height / 4],
      ArrowDown: [0, bounds.height / 4],
    };
    const key = event.key;
    if (key in pan) {
      const [dx, dy] = pan[key];
      // A jump, not a glide: the next field of view is there at once (its tiles follow).
      viewer.viewport.panBy(new OpenSeadragon.Point(dx, dy), true);
      actions.panned();
    } else if (key === "+" || key === "=") {
      viewer.viewport.zoomBy(1.5);
    } else if (key === "-" || key === "_") {
      viewer.viewport.zoomBy(1 / 1.5);
    } else if (key >= "1" && key <= "5") {
      actions.preset(Number(key) - 1);
    } else if (key === "n" || key === "p") {
      actions.nextSlide(key === "n" ? 1 : -1);
    } else if (key === "Enter") {
      actions.finish();
    } else if (key === "Escape") {
      actions.cancel();
    } else {
      return;
    }
    event.preventDefault();
  });
}
