"""Sessions: revocation, idle and absolute expiry, sliding refresh, re-authentication before sensitive actions."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated

import jwt
from fastapi import Depends, FastAPI
from fastapi.testclient import TestClient

from archipel.platform import sessions
from archipel.platform.authn import Principal
from archipel.platform.http import require_recent_auth
from archipel.platform.runtime import Runtime
from tests.auth_helpers import Account, Clock, bearer, denied_events, login, make_account


def _token(http: TestClient, account: Account, clock: Clock) -> str:
    clock.advance(seconds=30)  # a fresh TOTP step for every login
    r = login(http, account, clock.now)
    assert r.status_code == 200, r.text
    return str(r.json()["access_token"])


def test_logout_revokes_the_token_at_once(runtime: Runtime, clock: Clock, http: TestClient) -> None:
    rad = make_account(runtime, "rad")
    token = _token(http, rad, clock)
    assert http.get("/api/jobs", headers=bearer(token)).status_code == 200
    assert http.post("/api/auth/logout", headers=bearer(token)).json() == {"revoked": 1}
    r = http.get("/api/jobs", headers=bearer(token))
    assert r.status_code == 401 and r.json()["detail"] == "session revoked"
    assert r.headers["www-authenticate"] == 'Bearer error="invalid_token"'
    assert denied_events(runtime, "token-check")[-1].detail == "session revoked"


def test_logout_everywhere_ends_every_session_of_the_user(
    runtime: Runtime, clock: Clock, http: TestClient
) -> None:
    rad = make_account(runtime, "rad")
    other = make_account(runtime, "other")
    first, second, theirs = _token(http, rad, clock), _token(http, rad, clock), _token(http, other, clock)
    assert http.post("/api/auth/logout-all", headers=bearer(second)).json() == {"revoked": 2}
    for token in (first, second):
        assert http.get("/api/auth/me", headers=bearer(token)).status_code == 401
    assert http.get("/api/auth/me", headers=bearer(theirs)).status_code == 200


def test_access_tokens_are_short_lived_and_refresh_within_the_session(
    runtime: Runtime, clock: Clock, http: TestClient
) -> None:
    rad = make_account(runtime, "rad")
    token = _token(http, rad, clock)
    clock.advance(minutes=14)
    fresh = http.post("/api/auth/refresh", headers=bearer(token))
    assert fresh.status_code == 200
    clock.advance(minutes=2)
    r = http.get("/api/auth/me", headers=bearer(token))
    assert r.status_code == 401 and r.json()["detail"] == "token expired"
    assert http.get("/api/auth/me", headers=bearer(fresh.json()["access_token"])).status_code == 200


def test_a_session_ends_after_thirty_idle_minutes(runtime: Runtime, clock: Clock, http: TestClient) -> None:
    runtime.settings.token_minutes = 120  # let the session, not the token, be what ends
    rad = make_account(runtime, "rad")
    token = _token(http, rad, clock)
    clock.advance(minutes=29)
    assert http.get("/api/auth/me", headers=bearer(token)).status_code == 200
    clock.advance(minutes=29)
    assert http.get("/api/auth/me", headers=bearer(token)).status_code == 200
    clock.advance(minutes=30, seconds=1)
    r = http.get("/api/auth/me", headers=bearer(token))
    assert r.status_code == 401 and r.json()["detail"] == "session ended after inactivity"
    assert http.post("/api/auth/refresh", headers=bearer(token)).status_code == 401


def test_a_busy_session_still_ends_twelve_hours_after_login(
    runtime: Runtime, clock: Clock, http: TestClient
) -> None:
    rad = make_account(runtime, "rad")
    token = _token(http, rad, clock)
    for _ in range(12 * 6 - 1):
        clock.advance(minutes=10)
        r = http.post("/api/auth/refresh", headers=bearer(token))
        assert r.status_code == 200, r.text
        token = r.json()["access_token"]
    assert r.json()["expires_in"] == 10 * 60  # never past the session's end
    clock.advance(minutes=10)
    r = http.get("/api/auth/me", headers=bearer(token))
    assert r.status_code == 401 and r.json()["detail"] in (
        "session reached its maximum duration",
        "token expired",
    )
    late = jwt.encode(
        {
            "sub": "rad",
            "sid": sessions.session_id_of(token, runtime.settings.signing_key()),
            "exp": int((clock.now + timedelta(hours=1)).timestamp()),
        },
        runtime.settings.signing_key(),
        algorithm="HS256",
    )
    r = http.get("/api/auth/me", headers=bearer(late))
    assert r.status_code == 401 and r.json()["detail"] == "session reached its maximum duration"


def test_last_seen_is_written_at_most_once_a_minute(runtime: Runtime, clock: Clock, http: TestClient) -> None:
    rad = make_account(runtime, "rad")
    token = _token(http, rad, clock)
    sid = sessions.session_id_of(token, runtime.settings.signing_key())
    login_time = clock.now
    for _ in range(5):
        clock.advance(seconds=10)
        assert http.get("/api/auth/me", headers=bearer(token)).status_code == 200
    row = sessions.get_session(runtime.db, sid)
    assert row is not None and row.last_seen == login_time
    clock.advance(seconds=20)
    http.get("/api/auth/me", headers=bearer(token))
    row = sessions.get_session(runtime.db, sid)
    assert row is not None and row.last_seen == clock.now


def test_forged_expired_and_malformed_tokens_are_refused_with_their_reason_and_audited(
    runtime: Runtime, clock: Clock, http: TestClient
) -> None:
    rad = make_account(runtime, "rad")
    token = _token(http, rad, clock)
    key = runtime.settings.signing_key()
    claims = jwt.decode(token, key, algorithms=["HS256"], options={"verify_exp": False})
    forged = jwt.encode({**claims, "role": "admin"}, "not-the-key-" * 4, algorithm="HS256")
    no_session = jwt.encode({"sub": "rad", "exp": claims["exp"]}, key, algorithm="HS256")
    unknown_session = jwt.encode({**claims, "sid": "nope"}, key, algorithm="HS256")
    expired = jwt.encode({**claims, "exp": int(clock.now.timestamp()) - 1}, key, algorithm="HS256")
    cases = {
        forged: "invalid token",
        "garbage": "invalid token",
        no_session: "invalid token",
        unknown_session: "invalid token",
        expired: "token expired",
    }
    before = len(denied_events(runtime, "token-check"))
    for bad, reason in cases.items():
        r = http.get("/api/jobs", headers=bearer(bad))
        assert (r.status_code, r.json()["detail"]) == (401, reason)
    assert len(denied_events(runtime, "token-check")) == before + len(cases)


def _sensitive_app() -> FastAPI:
    from archipel.platform.http import public

    app = FastAPI()
    app.include_router(public)

    @app.post("/sensitive")
    def sensitive(
        who: Annotated[Principal, Depends(require_recent_auth(timedelta(minutes=5)))],
    ) -> dict[str, str]:
        return {"ok": who.subject}

    return app


def test_sensitive_actions_need_a_recent_login_and_reauth_refreshes_it(
    runtime: Runtime, clock: Clock
) -> None:
    rad = make_account(runtime, "rad")
    with TestClient(_sensitive_app(), base_url="https://testserver") as http:
        token = _token(http, rad, clock)
        assert http.post("/sensitive", headers=bearer(token)).json() == {"ok": "rad"}
        clock.advance(minutes=5, seconds=1)
        stale = http.post("/sensitive", headers=bearer(token))
        assert stale.status_code == 401
        assert stale.json()["detail"].startswith("re-authentication required")
        challenge = stale.headers["www-authenticate"]
        assert 'error="insufficient_user_authentication"' in challenge and "max_age=300" in challenge
        assert denied_events(runtime, "recent-auth-check")[-1].actor == "rad"
        bad = http.post(
            "/api/auth/reauth",
            headers=bearer(token),
            data={"password": "wrong-password", "totp": rad.code(clock.now)},
        )
        assert bad.status_code == 401 and bad.json()["detail"] == "incorrect user name or password"
        clock.advance(seconds=30)
        again = http.post(
            "/api/auth/reauth",
            headers=bearer(token),
            data={"password": rad.password, "totp": rad.code(clock.now)},
        )
        assert again.status_code == 200, again.text
        # the same session is now recent, whichever of its tokens is used
        assert http.post("/sensitive", headers=bearer(token)).json() == {"ok": "rad"}
        assert http.post("/sensitive", headers=bearer(again.json()["access_token"])).status_code == 200


def test_an_admin_ends_another_users_sessions_only_after_a_recent_login(
    runtime: Runtime, clock: Clock, http: TestClient
) -> None:
    rad = make_account(runtime, "rad")
    admin = make_account(runtime, "root", role="admin", site="")
    victim = _token(http, rad, clock)
    admin_token = _token(http, admin, clock)
    denied = http.post("/api/auth/users/rad/revoke", headers=bearer(victim))
    assert denied.status_code == 403
    clock.advance(minutes=6)
    assert http.post("/api/auth/users/rad/revoke", headers=bearer(admin_token)).status_code == 401
    clock.advance(seconds=30)
    r = http.post(
        "/api/auth/reauth",
        headers=bearer(admin_token),
        data={"password": admin.password, "totp": admin.code(clock.now)},
    )
    assert r.status_code == 200
    assert http.post("/api/auth/users/rad/revoke", headers=bearer(admin_token)).json() == {"revoked": 1}
    assert http.get("/api/auth/me", headers=bearer(victim)).json()["detail"] == "session revoked"
