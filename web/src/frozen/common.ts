// What the frozen-section pages share: the request as the API gives it (docs/frozen-section.md), its live event
// stream, times and states in the user's words, and the alert tone.
import { ApiError } from "../api";

export const TARGET_MINUTES = 20;

export interface FrozenSlide {
  slide_id: string;
  status: string;
  attached_at: string;
  how: string;
  tiles: string;
}

export interface Verdict {
  diagnosis: string;
  margins: string;
  text: string;
  pathologist: string;
  signed_at: string;
  verify_url: string;
}

export interface FrozenRequest {
  request_id: number;
  state: "requested" | "scanned" | "claimed" | "answered" | "seen";
  issuer: string;
  patient_id: string;
  accession: string;
  specimen: string;
  specimen_site: string;
  clinical_question: string;
  or_phone: string;
  requested_by: string;
  requesting_site: string;
  slides: FrozenSlide[];
  claim: { holder: string; expires_at: string } | null;
  steps: Record<"requested_at" | "first_slide_at" | "first_view_at" | "verdict_at" | "seen_at", string | null>;
  elapsed_minutes: number;
  target_minutes: number;
  overdue: boolean;
  verdict: Verdict | null;
  events_url: string;
}

/** One event of a request's stream or of the on-duty stream. */
export interface FrozenEvent {
  event_id: number;
  request_id: number;
  kind: string;
  at: string;
  state: string;
  [field: string]: unknown;
}

export const EVENT_KINDS = ["requested", "slide-attached", "claimed", "released", "first-view", "verdict", "seen"];

export const STATE_LABELS: Record<string, string> = {
  requested: "Waiting for slides",
  scanned: "Slides scanned, waiting for a pathologist",
  claimed: "A pathologist is reading",
  answered: "Verdict signed",
  seen: "Verdict read by the surgeon",
};

export const STEP_LABELS: [keyof FrozenRequest["steps"], string][] = [
  ["requested_at", "Requested"],
  ["first_slide_at", "First slide scanned"],
  ["first_view_at", "First view by a pathologist"],
  ["verdict_at", "Verdict signed"],
  ["seen_at", "Read by the surgeon"],
];

/** Follow a Server-Sent Events stream of frozen-section events (the browser reconnects and resumes by itself). */
export function listen(url: string, onEvent: (event: FrozenEvent) => void, onEnd?: () => void): EventSource {
  const source = new EventSource(url, { withCredentials: true });
  for (const kind of EVENT_KINDS) {
    source.addEventListener(kind, (message) => onEvent(JSON.parse((message as MessageEvent<string>).data) as FrozenEvent));
  }
  source.addEventListener("end", () => {
    source.close();
    onEnd?.();
  });
  return source;
}

/** A time of day (hh:mm:ss), or a dash. */
export function clock(iso: string | null | undefined): string {
  return iso ? new Date(iso).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit" }) : "—";
}

export function minutes(value: number | null | undefined): string {
  return value === null || value === undefined ? "—" : `${value.toFixed(1)} min`;
}

export function errorText(error: unknown): string {
  return error instanceof ApiError ? error.detail : String(error);
}

/** `tag` with a class and text, for building rows without innerHTML (patient data is never parsed as HTML). */
export function el<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  text = "",
  className = "",
): HTMLElementTagNameMap[K] {
  const node = document.createElement(tag);
  if (text) node.textContent = text;
  if (className) node.className = className;
  return node;
}

let audio: AudioContext | null = null;

/** Count of alert tones played (or attempted: a browser may keep audio muted until the page is clicked). */
export let beeps = 0;

/** The browser lets a page start audio only after a user gesture: the first click unlocks it. */
export function unlockAudioOnGesture(): void {
  const unlock = (): void => {
    audio ??= new AudioContext();
    void audio.resume();
  };
  document.addEventListener("pointerdown", unlock, { once: true });
  document.addEventListener("keydown", unlock, { once: true });
}

/** Two short tones (Web Audio, no sound file): a new urgent request. */
export function beep(): void {
  beeps += 1;
  try {
    audio ??= new AudioContext();
    const at = audio.currentTime;
    for (const [offset, frequency] of [[0, 880], [0.25, 660]] as const) {
      const tone = audio.createOscillator();
      const gain = audio.createGain();
      tone.frequency.value = frequency;
      gain.gain.setValueAtTime(0.2, at + offset);
      gain.gain.exponentialRampToValueAtTime(0.001, at + offset + 0.2);
      tone.connect(gain).connect(audio.destination);
      tone.start(at + offset);
      tone.stop(at + offset + 0.2);
    }
  } catch {
    // No audio device (or audio refused): the badge still shows the request.
  }
}
