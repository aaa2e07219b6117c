// The browser's side of Archipel's API: log in with a cookie session, send the CSRF token on every
// state-changing request, and know who is logged in. Every page of the app uses this module.

/** Raised for a non-2xx answer; `detail` is the server's reason (FastAPI's `detail`). */
export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly detail: string,
  ) {
    super(`${status}: ${detail}`);
  }
}

/** Who the session names (GET /api/auth/me). */
export interface CurrentUser {
  subject: string;
  role: string;
  site: string | null;
  kind: string;
  method: string;
  auth_time: string | null;
}

const CSRF_KEY = "archipel-csrf";
const SAFE = new Set(["GET", "HEAD", "OPTIONS"]);

/** The CSRF token of this browser's session: from the login answer, else from the readable CSRF cookie. */
export function csrfToken(): string {
  const kept = sessionStorage.getItem(CSRF_KEY);
  if (kept) return kept;
  for (const part of document.cookie.split(";")) {
    const [name, ...rest] = part.trim().split("=");
    // The cookie is `__Host-archipel-csrf` when Secure, `archipel-csrf` otherwise.
    if (name === "archipel-csrf" || name === "__Host-archipel-csrf") return decodeURIComponent(rest.join("="));
  }
  return "";
}

/** Open a cookie session (POST /api/auth/session) and keep its CSRF token; throws ApiError on refusal. */
export async function login(username: string, password: string, totp: string): Promise<void> {
  const body = new URLSearchParams({ username, password, totp });
  const response = await fetch("/api/auth/session", { method: "POST", body, credentials: "same-origin" });
  if (!response.ok) throw new ApiError(response.status, await reason(response));
  const answer = (await response.json()) as { csrf_token: string };
  sessionStorage.setItem(CSRF_KEY, answer.csrf_token);
}

/** End the session on the server (best effort) and forget its CSRF token. */
export async function logout(): Promise<void> {
  try {
    await apiFetch("/api/auth/logout", { method: "POST" });
  } finally {
    sessionStorage.removeItem(CSRF_KEY);
  }
}

/**
 * `fetch` for the API: sends the session cookie, adds `X-CSRF-Token` to state-changing requests, and throws
 * ApiError (with the server's reason) on a non-2xx answer. A 401 sends the browser to the login page when
 * `redirectOn401` is left true.
 */
export async function apiFetch(path: string, init: RequestInit = {}, redirectOn401 = true): Promise<Response> {
  const method = (init.method ?? "GET").toUpperCase();
  const headers = new Headers(init.headers);
  if (!SAFE.has(method)) headers.set("X-CSRF-Token", csrfToken());
  const response = await fetch(path, { ...init, method, headers, credentials: "same-origin" });
  if (response.status === 401 && redirectOn401) {
    goToLogin();
  }
  if (!response.ok) throw new ApiError(response.status, await reason(response));
  return response;
}

/** GET `path` and parse its JSON answer. */
export async function getJson<T>(path: string): Promise<T> {
  return (await (await apiFetch(path)).json()) as T;
}

/** Send `body` as JSON with `method` (POST by default) and parse the JSON answer (null for 204). */
export async function sendJson<T>(path: string, body: unknown, method = "POST"): Promise<T> {
  const response = await apiFetch(path, {
    method,
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify(body),
  });
  if (response.status === 204) return null as T;
  return (await response.json()) as T;
}

/** Who is logged in, or null without a live session (never redirects). */
export async function currentUser(): Promise<CurrentUser | null> {
  try {
    return (await (await apiFetch("/api/auth/me", {}, false)).json()) as CurrentUser;
  } catch (error) {
    if (error instanceof ApiError && error.status === 401) return null;
    throw error;
  }
}

/** The logged-in user, or a trip to the login page (which comes back here afterwards). */
export async function requireUser(): Promise<CurrentUser> {
  const who = await currentUser();
  if (who === null) {
    goToLogin();
    throw new ApiError(401, "authentication required");
  }
  return who;
}

/** Send the browser to the login page, which returns to the current page once logged in. */
export function goToLogin(): void {
  const next = location.pathname + location.search;
  location.assign(`/app/login.html?next=${encodeURIComponent(next)}`);
}

async function reason(response: Response): Promise<string> {
  try {
    const body = (await response.json()) as { detail?: unknown };
    if (typeof body.detail === "string") return body.detail;
    return JSON.stringify(body.detail ?? body);
  } catch {
    return response.statusText;
  }
}
