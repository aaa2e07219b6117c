// The server's reason for a refusal, as a reader can read it.
import { ApiError } from "../api";

/** The server's reason, readable: FastAPI's validation errors (a JSON list of `msg`) joined by "; ". */
export function reasonOf(error: unknown): string {
  if (!(error instanceof ApiError)) return error instanceof Error ? error.message : String(error);
  try {
    const parsed = JSON.parse(error.detail) as { msg?: string }[];
    if (Array.isArray(parsed)) return parsed.map((e) => (e.msg ?? "").replace(/^Value error, /, "")).join("; ");
  } catch {
    // a plain-text reason
  }
  return error.detail;
}
