// The viewer's own timings, sent to POST /api/viewer-timings for the turnaround report. Best effort: a
// server without the endpoint (404) or a failure never disturbs the viewer.
import { csrfToken } from "../api";

export type TimingEvent = "open_case" | "switch_slide" | "next_field";

/** Every timing sent, for the page's read-out and the tests. */
export const sentTimings: { event: TimingEvent; ms: number; slide_id: string }[] = [];

/** Report one timing. */
export function reportTiming(event: TimingEvent, ms: number, slideId: string): void {
  const body = { event, ms: Math.round(ms * 10) / 10, slide_id: slideId };
  sentTimings.push(body);
  void fetch("/api/viewer-timings", {
    method: "POST",
    headers: { "Content-Type": "application/json", "X-CSRF-Token": csrfToken() },
    body: JSON.stringify(body),
    credentials: "same-origin",
  }).catch(() => undefined);
}
