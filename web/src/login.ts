// The login page: user name, password and TOTP code open a cookie session, then back to `?next=`.
import { ApiError, login } from "./api";

const form = document.querySelector<HTMLFormElement>("#login")!;
const message = document.querySelector<HTMLElement>("#login-error")!;

/** Only same-app paths are followed after login, never another site. */
function nextPage(): string {
  const next = new URLSearchParams(location.search).get("next") ?? "";
  return next.startsWith("/app/") ? next : "/app/";
}

form.addEventListener("submit", async (event) => {
  event.preventDefault();
  const data = new FormData(form);
  message.textContent = "";
  try {
    await login(String(data.get("username")), String(data.get("password")), String(data.get("totp")));
    location.assign(nextPage());
  } catch (error) {
    message.textContent = error instanceof ApiError ? error.detail : String(error);
  }
});
