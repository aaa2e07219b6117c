// The slide viewer module: import from here (`import { openSlideViewer } from "./viewer"`).
export { imageViewport, openSlideViewer, setImageViewport, switchSlide, tileSourceUrl, whenFullyLoaded } from "./open";
export type { ImageViewport, SlideViewerOptions } from "./open";
export { PRESETS, magnificationOf, setMagnification, zoomFor } from "./optics";
export { ShapeOverlay } from "./overlay";
export type { Position, Shape } from "./overlay";
export { ViewportLock } from "./sync";
