// The reusable slide viewer: an OpenSeadragon viewer on the slide's Deep Zoom tiles (/tiles/{id}.dzi), which
// the browser fetches with the session cookie. Pages (the viewer, the multi-head microscope) build on it.
import OpenSeadragon from "openseadragon";

/** A viewport in level-0 image pixels: the centre and the zoom (screen pixels per image pixel). */
export interface ImageViewport {
  center: [number, number];
  /** Screen pixels per level-0 image pixel (1 = native resolution). */
  zoom: number;
}

export interface SlideViewerOptions {
  /** Show the navigator (overview inset); default true. */
  navigator?: boolean;
  /** Called (throttled to animation frames by OpenSeadragon) whenever the viewport changes. */
  onViewport?: (viewport: ImageViewport) => void;
  /** Called once the first view is fully loaded, with the milliseconds since the open started. */
  onOpened?: (ms: number) => void;
  /** Extra OpenSeadragon options (they win over ours). */
  osd?: Partial<OpenSeadragon.Options>;
}

/** The tile source address of a slide. */
export function tileSourceUrl(slideId: string): string {
  return `/tiles/${encodeURIComponent(slideId)}.dzi`;
}

/**
 * Open slide `slideId` in `element`. Returns the OpenSeadragon viewer at once; the image arrives
 * asynchronously (`onOpened` fires when its first view is fully loaded).
 */
export function openSlideViewer(
  element: HTMLElement,
  slideId: string,
  options: SlideViewerOptions = {},
): OpenSeadragon.Viewer {
  const started = performance.now();
  const viewer = OpenSeadragon({
    element,
    tileSources: tileSourceUrl(slideId),
    prefixUrl: "",
    // The canvas drawer gives the same pixels with or without a GPU (WebGL may be missing headless).
    drawer: "canvas",
    showNavigationControl: false,
    showNavigator: options.navigator ?? true,
    navigatorPosition: "BOTTOM_RIGHT",
    // Tiles are authenticated by the same-origin session cookie.
    loadTilesWithAjax: true,
    ajaxWithCredentials: true,
    crossOriginPolicy: false,
    maxZoomPixelRatio: 4,
    visibilityRatio: 0.5,
    constrainDuringPan: false,
    gestureSettingsMouse: { clickToZoom: false, dblClickToZoom: true },
    keyboardNavEnabled: false,
    ...options.osd,
  });
  if (options.onViewport) {
    const hook = options.onViewport;
    viewer.addHandler("viewport-change", () => {
      const current = imageViewport(viewer);
      if (current) hook(current);
    });
  }
  if (options.onOpened) {
    const hook = options.onOpened;
    whenFullyLoaded(viewer, () => hook(performance.now() - started));
  }
  return viewer;
}

/** Open another slide in `viewer`; `done` gets the milliseconds until its first view is fully loaded. */
export function switchSlide(viewer: OpenSeadragon.Viewer, slideId: string, done?: (ms: number) => void): void {
  const started = performance.now();
  viewer.addOnceHandler("open", () => {
    if (done) whenFullyLoaded(viewer, () => done(performance.now() - started));
  });
  viewer.open(tileSourceUrl(slideId) as unknown as OpenSeadragon.TileSourceSpecifier);
}

/** Call `done` once, when every tile the current view needs has been drawn. */
export function whenFullyLoaded(viewer: OpenSeadragon.Viewer, done: () => void): void {
  const check = (): void => {
    const item = viewer.world.getItemAt(0);
    if (!item) return;
    if (item.getFullyLoaded()) {
      done();
      return;
    }
    const handler = (event: { fullyLoaded: boolean }): void => {
      if (event.fullyLoaded) {
        item.removeHandler("fully-loaded-change", handler);
        done();
      }
    };
    item.addHandler("fully-loaded-change", handler);
  };
  if (viewer.world.getItemCount() > 0) check();
  else viewer.addOnceHandler("open", () => setTimeout(check, 0));
}

/** The viewer's viewport in level-0 image pixels, or null before the image is open. */
export function imageViewport(viewer: OpenSeadragon.Viewer): ImageViewport | null {
  const item = viewer.world.getItemAt(0);
  if (!item) return null;
  const centre = item.viewportToImageCoordinates(viewer.viewport.getCenter(true));
  const zoom = item.viewportToImageZoom(viewer.viewport.getZoom(true));
  return { center: [centre.x, centre.y], zoom };
}

/** Move the viewer to `target` (level-0 image pixels); `immediately` skips the animation. */
export function setImageViewport(viewer: OpenSeadragon.Viewer, target: ImageViewport, immediately = false): void {
  const item = viewer.world.getItemAt(0);
  if (!item) return;
  viewer.viewport.zoomTo(item.imageToViewportZoom(target.zoom), undefined, immediately);
  viewer.viewport.panTo(item.imageToViewportCoordinates(target.center[0], target.center[1]), immediately);
}
