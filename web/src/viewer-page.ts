// The slide viewer page: /app/viewer.html?slide=ID
import { requireUser } from "./api";
import { openSlideViewer } from "./viewer";

await requireUser();
const slideId = new URLSearchParams(location.search).get("slide") ?? "";
document.querySelector<HTMLElement>("#slide-title")!.textContent = slideId;
const viewer = openSlideViewer(document.querySelector<HTMLElement>("#viewer")!, slideId);
(window as unknown as { archipelViewer: unknown }).archipelViewer = viewer;
