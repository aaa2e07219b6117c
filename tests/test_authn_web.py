"""Browser sessions: Secure, HttpOnly, SameSite cookies, and CSRF protection on state-changing requests."""

from __future__ import annotations

from fastapi.testclient import TestClient

from archipel.platform.runtime import Runtime
from tests.auth_helpers import Account, Clock, client, denied_events, make_account

SESSION = "__Host-archipel-session"
CSRF = "__Host-archipel-csrf"


def _browser_login(http: TestClient, account: Account, clock: Clock) -> str:
    clock.advance(seconds=30)
    r = http.post(
        "/api/auth/session",
        data={"username": account.name, "password": account.password, "totp": account.code(clock.now)},
    )
    assert r.status_code == 200, r.text
    return str(r.json()["csrf_token"])


def test_browser_login_sets_a_secure_httponly_samesite_cookie(
    runtime: Runtime, clock: Clock, http: TestClient
) -> None:
    rad = make_account(runtime, "rad")
    clock.advance(seconds=30)
    r = http.post(
        "/api/auth/session", data={"username": "rad", "password": rad.password, "totp": rad.code(clock.now)}
    )
    cookies = {c.split("=", 1)[0]: c.lower() for c in r.headers.get_list("set-cookie")}
    session, csrf = cookies[SESSION], cookies[CSRF]
    for attribute in ("secure", "samesite=strict", "path=/", "max-age=43200"):
        assert attribute in session and attribute in csrf
    assert "httponly" in session and "httponly" not in csrf
    assert "domain=" not in session
    assert r.json()["csrf_token"] == http.cookies[CSRF]
    # the long-lived cookie value is not a bearer token
    as_bearer = http.get("/api/auth/me", headers={"Authorization": f"Bearer {http.cookies[SESSION]}"})
    assert as_bearer.status_code == 401 and as_bearer.json()["detail"] == "invalid token"


def test_the_cookie_authenticates_reads_without_a_csrf_token(
    runtime: Runtime, clock: Clock, http: TestClient
) -> None:
    rad = make_account(runtime, "rad")
    _browser_login(http, rad, clock)
    me = http.get("/api/auth/me")
    assert me.status_code == 200 and me.json()["subject"] == "rad"
    assert http.get("/api/jobs").status_code == 200


def test_state_changes_with_the_cookie_need_the_csrf_header(
    runtime: Runtime, clock: Clock, http: TestClient
) -> None:
    rad = make_account(runtime, "rad")
    csrf = _browser_login(http, rad, clock)
    missing = http.post("/api/auth/logout")
    assert missing.status_code == 403 and missing.json()["detail"] == "CSRF token missing or invalid"
    wrong = http.post("/api/auth/logout", headers={"X-CSRF-Token": "0" * 64})
    assert wrong.status_code == 403
    assert denied_events(runtime, "csrf-check")[-1].detail == "CSRF token missing or invalid"
    assert http.get("/api/auth/me").status_code == 200  # still logged in
    ok = http.post("/api/auth/logout", headers={"X-CSRF-Token": csrf})
    assert ok.status_code == 200 and ok.json() == {"revoked": 1}


def test_a_csrf_token_of_another_session_does_not_work(runtime: Runtime, clock: Clock) -> None:
    rad, other = make_account(runtime, "rad"), make_account(runtime, "other")
    with client() as mine, client() as theirs:
        _browser_login(mine, rad, clock)
        their_csrf = _browser_login(theirs, other, clock)
        r = mine.post("/api/auth/logout", headers={"X-CSRF-Token": their_csrf})
        assert r.status_code == 403


def test_a_revoked_or_idle_cookie_session_is_refused(
    runtime: Runtime, clock: Clock, http: TestClient
) -> None:
    rad = make_account(runtime, "rad")
    csrf = _browser_login(http, rad, clock)
    clock.advance(minutes=31)
    r = http.get("/api/auth/me")
    assert r.status_code == 401 and r.json()["detail"] == "session ended after inactivity"
    csrf = _browser_login(http, rad, clock)
    http.post("/api/auth/logout-all", headers={"X-CSRF-Token": csrf})
    assert http.get("/api/auth/me").status_code == 401  # the cookie is cleared and the session revoked
