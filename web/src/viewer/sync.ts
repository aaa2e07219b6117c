// Two viewers locked together: a viewport change in one moves the other to the same level-0 centre and zoom
// (serial sections of one block, e.g. H&E and IHC, share their geometry closely enough).
//
// Only the viewer the user last moved (mouse, wheel, touch, or the page's keys through `lead`) leads: the
// follower's own viewport changes, which OpenSeadragon reports a frame later (its opening animation, the view
// it was given), are never sent back, so they cannot stop the leader's animation half-way.
import type OpenSeadragon from "openseadragon";
import { imageViewport, setImageViewport } from "./open";

export class ViewportLock {
  locked = true;
  private leader: OpenSeadragon.Viewer;

  constructor(a: OpenSeadragon.Viewer, b: OpenSeadragon.Viewer) {
    this.leader = a;
    for (const [from, to] of [
      [a, b],
      [b, a],
    ] as const) {
      for (const event of ["canvas-press", "canvas-scroll", "canvas-pinch"] as const) {
        from.addHandler(event, () => this.lead(from));
      }
      from.addHandler("viewport-change", () => this.follow(from, to));
    }
  }

  /** Make `viewer` the one the other follows (the page calls this when its keys move a viewer). */
  lead(viewer: OpenSeadragon.Viewer): void {
    this.leader = viewer;
  }

  private follow(from: OpenSeadragon.Viewer, to: OpenSeadragon.Viewer): void {
    if (!this.locked || from !== this.leader) return;
    const view = imageViewport(from);
    if (view) setImageViewport(to, view, true);
  }
}
