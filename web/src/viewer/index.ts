// The slide viewer module: import from here (`import { openSlideViewer } from "./viewer"`).
export { imageViewport, openSlideViewer, setImageViewport, tileSourceUrl, whenFullyLoaded } from "./open";
export type { ImageViewport, SlideViewerOptions } from "./open";
