// The sign-in page at `/`: two ways in.
// - Professionals: user name, password and TOTP code open a cookie session (or the regional OpenID Connect
//   provider when one is configured), then `?next=` or the professional home.
// - Patients: the access code from their exam slip sends a one-time code (SMS or e-mail); both open a cookie
//   session, then their portal.
import { ApiError, login } from "./api";
import { applyTexts, languageSwitch, registerTexts, t } from "./i18n";
import { LOGIN_TEXTS } from "./patient/texts";

registerTexts(LOGIN_TEXTS);
document.querySelector("#language")!.append(languageSwitch());
applyTexts(document);

const CSRF_KEY = "archipel-csrf";
const WAY_KEY = "archipel.way-in";
const form = document.querySelector<HTMLFormElement>("#login")!;
const message = document.querySelector<HTMLElement>("#login-error")!;
const tabs = [...document.querySelectorAll<HTMLButtonElement>("[role=tab]")];
const codeForm = document.querySelector<HTMLFormElement>("#patient-code-form")!;
const otpForm = document.querySelector<HTMLFormElement>("#patient-otp-form")!;
const patientError = document.querySelector<HTMLElement>("#patient-error")!;
const sent = document.querySelector<HTMLElement>("#patient-sent")!;

/** Only same-app paths are followed after sign-in, never another site. */
function nextPage(fallback: string): string {
  const next = new URLSearchParams(location.search).get("next") ?? "";
  return next.startsWith("/app/") ? next : fallback;
}

// --- the two ways in, as tabs (arrow keys move between them, as in any tab list) ---
function select(tab: HTMLButtonElement, focus = false): void {
  for (const other of tabs) {
    const chosen = other === tab;
    other.setAttribute("aria-selected", String(chosen));
    other.tabIndex = chosen ? 0 : -1;
    document.getElementById(other.getAttribute("aria-controls")!)!.hidden = !chosen;
  }
  if (focus) tab.focus();
  try {
    localStorage.setItem(WAY_KEY, tab.id);
  } catch {
    // not remembered
  }
}

for (const [index, tab] of tabs.entries()) {
  tab.addEventListener("click", () => select(tab));
  tab.addEventListener("keydown", (event) => {
    const step = { ArrowRight: 1, ArrowLeft: -1, Home: -index, End: tabs.length - 1 - index }[event.key];
    if (step === undefined) return;
    event.preventDefault();
    select(tabs[(index + step + tabs.length) % tabs.length], true);
  });
}

function initialWay(): HTMLButtonElement {
  const params = new URLSearchParams(location.search);
  const next = params.get("next") ?? "";
  if (params.get("way") === "patient" || next.startsWith("/app/patient")) return tabs[1];
  if (params.get("way") === "professional" || next) return tabs[0];
  let kept: string | null = null;
  try {
    kept = localStorage.getItem(WAY_KEY);
  } catch {
    kept = null;
  }
  return tabs.find((tab) => tab.id === kept) ?? tabs[0];
}
select(initialWay());

// --- professionals ---
form.addEventListener("submit", async (event) => {
  event.preventDefault();
  const data = new FormData(form);
  message.textContent = "";
  try {
    await login(String(data.get("username")), String(data.get("password")), String(data.get("totp")));
    location.assign(nextPage("/app/index.html"));
  } catch (error) {
    message.textContent = error instanceof ApiError ? error.detail : String(error);
  }
});

async function showOidc(): Promise<void> {
  try {
    const response = await fetch("/api/sign-in/options");
    if (!response.ok) return;
    const options = (await response.json()) as { oidc?: boolean };
    if (!options.oidc) return;
    const link = document.querySelector<HTMLAnchorElement>("#oidc-link")!;
    link.href = `/api/auth/oidc/start?next=${encodeURIComponent(nextPage("/app/index.html"))}`;
    document.querySelector<HTMLElement>("#oidc")!.hidden = false;
  } catch {
    // the password form stays
  }
}

// --- patients ---
async function postJson(path: string, body: unknown): Promise<Record<string, unknown>> {
  const response = await fetch(path, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify(body),
    credentials: "same-origin",
  });
  const answer = (await response.json().catch(() => ({}))) as Record<string, unknown>;
  if (!response.ok) {
    const detail = typeof answer.detail === "string" ? answer.detail : t("patient.error.generic");
    throw new ApiError(response.status, detail);
  }
  return answer;
}

/** The server's reason in the patient's words (the API answers in English). */
function patientReason(error: unknown): string {
  if (!(error instanceof ApiError)) return String(error);
  if (error.status === 423) return t("patient.error.locked");
  if (error.status === 429) return t("patient.error.rate");
  const known: Record<string, string> = {
    "invalid access code": "patient.error.code",
    "access code expired": "patient.error.expired",
    "invalid one-time code": "patient.error.otp",
  };
  for (const [reason, key] of Object.entries(known)) if (error.detail === reason) return t(key);
  if (error.detail.startsWith("one-time code expired") || error.detail.startsWith("one-time code already used"))
    return t("patient.error.otp-stale");
  if (error.detail.includes("too many tries")) return t("patient.error.otp-tries");
  return error.detail;
}

let accessCode = "";

async function sendCode(): Promise<void> {
  patientError.textContent = "";
  const answer = await postJson("/api/patient/access", { code: accessCode });
  const channel = answer.channel === "sms" ? t("patient.channel.sms") : t("patient.channel.email");
  sent.textContent = t("patient.sent", { channel, to: String(answer.to ?? "") });
  codeForm.hidden = true;
  otpForm.hidden = false;
  document.querySelector<HTMLInputElement>("#one-time-code")!.focus();
}

codeForm.addEventListener("submit", async (event) => {
  event.preventDefault();
  accessCode = String(new FormData(codeForm).get("code") ?? "").trim();
  try {
    await sendCode();
  } catch (error) {
    patientError.textContent = patientReason(error);
    document.querySelector<HTMLInputElement>("#access-code")!.focus();
  }
});

otpForm.addEventListener("submit", async (event) => {
  event.preventDefault();
  const otp = String(new FormData(otpForm).get("otp") ?? "").trim();
  patientError.textContent = "";
  try {
    const answer = await postJson("/api/patient/session", { code: accessCode, otp });
    sessionStorage.setItem(CSRF_KEY, String(answer.csrf_token));
    const next = nextPage("/app/patient.html");
    location.assign(next.startsWith("/app/patient") || next.startsWith("/app/study") || next.startsWith("/app/viewer")
      ? next
      : "/app/patient.html");
  } catch (error) {
    patientError.textContent = patientReason(error);
    const field = document.querySelector<HTMLInputElement>("#one-time-code")!;
    field.value = "";
    field.focus();
  }
});

document.querySelector("#patient-resend")!.addEventListener("click", async () => {
  try {
    await sendCode();
  } catch (error) {
    patientError.textContent = patientReason(error);
  }
});

void showOidc();
document.body.dataset.ready = "true";
