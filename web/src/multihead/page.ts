// The multi-head microscope page: /app/multihead.html?session=ID
// Everyone sees the same slide: the one in control (the presenter at first) drives, and every other viewer
// follows its viewport (level-0 centre and zoom) and its pointer, live over the session's WebSocket. The one
// in control hands control over to another participant; the presenter may take it back at any time.
import OpenSeadragon from "openseadragon";
import { ApiError, apiFetch, requireUser } from "../api";
import { imageViewport, openSlideViewer, setImageViewport, switchSlide, whenFullyLoaded } from "../viewer";
import { type Incoming, MultiheadConnection, type SessionState, type Viewport } from "./session";
import { showStartForm } from "./start";

const $ = <T extends HTMLElement>(selector: string): T => document.querySelector<T>(selector)!;
const errorBox = $<HTMLElement>("#multihead-error");
const pointerMark = $<HTMLElement>("#pointer");

function showError(error: unknown): void {
  errorBox.textContent = error instanceof ApiError ? error.detail : String(error);
}

const me = (await requireUser()).subject;
const sessionId = new URLSearchParams(location.search).get("session") ?? "";

let state: SessionState | null = null;
let viewer: OpenSeadragon.Viewer | null = null;
/** The slide asked for, and the slide actually open in the viewer (they differ while a switch loads). */
let wantedSlide = "";
let openSlide = "";
let pendingView: Viewport | null = null;
let remotePointer: { x: number; y: number; slide_id?: string; from: string } | null = null;
let applying = false;
let animating = false;

const inControl = (): boolean => state?.control === me;

// --- following ----------------------------------------------------------------------------------------------

function showSlide(slideId: string): void {
  wantedSlide = slideId;
  if (viewer === null) {
    viewer = openSlideViewer($("#viewer"), slideId, { onViewport: () => sendViewport() });
    viewer.addHandler("open", () => {
      openSlide = wantedSlide;
      applyPending();
      sendViewport(true);
      renderSlides();
      whenFullyLoaded(viewer!, () => (document.body.dataset.ready = "true"));
    });
    viewer.addHandler("animation-start", () => (animating = true));
    viewer.addHandler("animation-finish", () => {
      animating = false;
      sendViewport(true);
    });
    viewer.addHandler("update-viewport", placePointer);
    viewer.setMouseNavEnabled(inControl());
    trackPointer(viewer);
  } else if (slideId !== openSlide) {
    switchSlide(viewer, slideId);
  }
  renderSlides();
}

/** Move this viewer to `view` (switching slide first if needed) without echoing it back. */
function follow(view: Viewport): void {
  pendingView = view;
  if (view.slide_id !== wantedSlide) showSlide(view.slide_id);
  applyPending();
}

function applyPending(): void {
  if (viewer === null || pendingView === null || pendingView.slide_id !== openSlide) return;
  applying = true;
  try {
    setImageViewport(viewer, pendingView, true);
  } finally {
    applying = false;
  }
  pendingView = null;
}

// --- driving ------------------------------------------------------------------------------------------------

const SEND_EVERY_MS = 40;
let lastSent = 0;
let trailing: number | undefined;

/** Send this viewer's viewport when in control: at most every 40 ms, and always the last position. */
function sendViewport(now = false): void {
  if (viewer === null || !inControl() || applying || openSlide === "" || openSlide !== wantedSlide) return;
  const elapsed = performance.now() - lastSent;
  if (!now && elapsed < SEND_EVERY_MS) {
    if (trailing === undefined) {
      trailing = window.setTimeout(() => {
        trailing = undefined;
        sendViewport(true);
      }, SEND_EVERY_MS - elapsed);
    }
    return;
  }
  const view = imageViewport(viewer);
  if (view === null) return;
  lastSent = performance.now();
  connection.send({ type: "viewport", slide_id: openSlide, center: view.center, zoom: view.zoom });
}

/** Send the pointer when in control: at most every 40 ms, and always its last position. */
function trackPointer(v: OpenSeadragon.Viewer): void {
  let last = 0;
  let latest: [number, number] | null = null;
  let pending: number | undefined;
  const send = (): void => {
    const item = v.world.getItemAt(0);
    if (!inControl() || !item || latest === null) return;
    last = performance.now();
    const p = item.viewerElementToImageCoordinates(new OpenSeadragon.Point(latest[0], latest[1]));
    connection.send({ type: "pointer", x: p.x, y: p.y, slide_id: openSlide });
  };
  v.element.addEventListener("pointermove", (event) => {
    const box = v.element.getBoundingClientRect();
    latest = [event.clientX - box.left, event.clientY - box.top];
    const wait = SEND_EVERY_MS - (performance.now() - last);
    if (wait <= 0) send();
    else if (pending === undefined) {
      pending = window.setTimeout(() => {
        pending = undefined;
        send();
      }, wait);
    }
  });
}

function placePointer(): void {
  const item = viewer?.world.getItemAt(0);
  const visible = remotePointer !== null && item !== undefined && !inControl() &&
    (remotePointer.slide_id === undefined || remotePointer.slide_id === openSlide);
  pointerMark.hidden = !visible;
  if (!visible || remotePointer === null || item === undefined) return;
  const p = item.imageToViewerElementCoordinates(new OpenSeadragon.Point(remotePointer.x, remotePointer.y));
  pointerMark.style.left = `${p.x}px`;
  pointerMark.style.top = `${p.y}px`;
  pointerMark.replaceChildren(Object.assign(document.createElement("span"), { className: "who", textContent: remotePointer.from }));
}

// --- the session's controls ---------------------------------------------------------------------------------

function renderControl(): void {
  if (state === null) return;
  const mine = inControl();
  document.body.classList.toggle("following", !mine);
  $("#control-status").textContent = mine ? "You have control" : `Following ${state.control}`;
  viewer?.setMouseNavEnabled(mine);
  const others = state.participants.filter((p) => p !== me);
  const select = $<HTMLSelectElement>("#handover-to");
  select.replaceChildren(...others.map((p) => Object.assign(document.createElement("option"), { value: p, textContent: p })));
  const mayHand = mine || state.presenter === me;
  $<HTMLButtonElement>("#handover").disabled = !mayHand || others.length === 0;
  select.disabled = !mayHand || others.length === 0;
  $("#take-control").hidden = !(state.presenter === me && !mine);
  $("#end-session").hidden = state.presenter !== me;
  $("#participants").replaceChildren(
    ...state.participants.map((p) => {
      const li = document.createElement("li");
      li.textContent = p + (p === state!.presenter ? " (presenter)" : "") + (p === me ? " — you" : "");
      li.classList.toggle("in-control", p === state!.control);
      return li;
    }),
  );
  placePointer();
}

function renderSlides(): void {
  if (state === null) return;
  $("#slide-list").replaceChildren(
    ...state.slides.map((slideId, i) => {
      const button = document.createElement("button");
      button.type = "button";
      button.dataset.slide = slideId;
      button.textContent = `Slide ${i + 1}`;
      button.title = slideId;
      button.classList.toggle("current", slideId === wantedSlide);
      button.disabled = !inControl();
      button.addEventListener("click", () => showSlide(slideId));
      return button;
    }),
  );
  $("#join-link").textContent = location.origin + state.join_url;
}

function handle(message: Incoming): void {
  switch (message.type) {
    case "state": {
      const { type: _type, ...rest } = message;
      state = rest;
      errorBox.textContent = "";
      if (message.viewport) follow(message.viewport);
      else showSlide(wantedSlide || message.slides[0]);
      renderControl();
      renderSlides();
      break;
    }
    case "viewport":
      if (state) state.viewport = { slide_id: message.slide_id, center: message.center, zoom: message.zoom };
      follow(message);
      break;
    case "pointer":
      remotePointer = message;
      placePointer();
      break;
    case "control":
      if (state) state.control = message.user;
      renderControl();
      renderSlides();
      if (inControl()) sendViewport(true);
      break;
    case "joined":
    case "left":
      if (state) state.participants = message.participants;
      renderControl();
      break;
    case "invited":
      if (state) state.invitees = message.invitees;
      break;
    case "ended":
      showError(`The session ended: ${message.reason}`);
      viewer?.setMouseNavEnabled(true); // the slide stays open for the one who has it
      break;
    case "error":
      showError(message.reason);
      break;
  }
}

const connection = {
  socket: null as MultiheadConnection | null,
  send(message: Parameters<MultiheadConnection["send"]>[0]): void {
    this.socket?.send(message);
  },
};
if (sessionId === "") {
  // No session yet: the presenter opens one.
  $("#session-body").hidden = true;
  const slide = new URLSearchParams(location.search).get("slide") ?? "";
  showStartForm($<HTMLFormElement>("#start-session"), $("#start-error"), slide);
  for (const control of document.querySelectorAll<HTMLElement>("header.bar .group, #end-session")) control.hidden = true;
} else {
  connection.socket = new MultiheadConnection(sessionId, handle, (reason, final) => {
    if (final) showError(reason);
    else errorBox.textContent = "Connection lost; reconnecting…";
  });
}

$("#handover").addEventListener("click", () => {
  const to = $<HTMLSelectElement>("#handover-to").value;
  if (to) connection.send({ type: "handover", to });
});
$("#take-control").addEventListener("click", () => connection.send({ type: "handover", to: me }));
$("#end-session").addEventListener("click", async () => {
  try {
    await apiFetch(`/api/multihead/${encodeURIComponent(sessionId)}`, { method: "DELETE" });
  } catch (error) {
    showError(error);
  }
});

/** For the end-to-end tests: the page's live objects. */
(window as unknown as { archipel: unknown }).archipel = {
  viewer: () => viewer,
  state: () => state,
  inControl,
  imageViewport: () => (viewer ? imageViewport(viewer) : null),
  /** The visible region in level-0 image pixels: x, y, width, height. */
  bounds: () => {
    const item = viewer?.world.getItemAt(0);
    if (!viewer || !item) return null;
    const r = item.viewportToImageRectangle(viewer.viewport.getBounds(true));
    return [r.x, r.y, r.width, r.height];
  },
  isSettled: () => !animating && (viewer?.world.getItemAt(0)?.getFullyLoaded() ?? false),
};
