"""Local login: TOTP second factor, replay refusal, lock-out and the hourly cap, each refusal audited."""

from __future__ import annotations

from datetime import timedelta

import pyotp
import pytest
from fastapi.testclient import TestClient

from archipel.platform import throttle
from archipel.platform.runtime import Runtime
from tests.auth_helpers import Clock, bearer, denied_events, login, make_account


def test_login_needs_the_totp_code_and_succeeds_with_it(
    runtime: Runtime, clock: Clock, http: TestClient
) -> None:
    rad = make_account(runtime, "rad")
    r = login(http, rad, clock.now, code="")
    assert r.status_code == 401 and r.json()["detail"] == "TOTP code required"
    clock.advance(seconds=30)
    r = login(http, rad, clock.now)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["token_type"] == "bearer" and 0 < body["expires_in"] <= 15 * 60
    me = http.get("/api/auth/me", headers=bearer(body["access_token"])).json()
    assert me["subject"] == "rad" and me["method"] == "password+totp" and me["role"] == "radiologist"
    assert [e.detail for e in denied_events(runtime, "login")] == ["TOTP code required"]


def test_admin_accounts_need_totp_too(runtime: Runtime, clock: Clock, http: TestClient) -> None:
    admin = make_account(runtime, "root", role="admin", site="")
    assert login(http, admin, clock.now, code="").status_code == 401
    assert login(http, admin, clock.now).status_code == 200


def test_an_account_without_totp_is_refused_while_totp_is_required(
    runtime: Runtime, clock: Clock, http: TestClient
) -> None:
    plain = make_account(runtime, "plain", totp=False)
    r = login(http, plain, clock.now)
    assert r.status_code == 401 and "none is enrolled" in r.json()["detail"]
    runtime.settings.require_totp = False
    assert login(http, plain, clock.now).status_code == 200


def test_a_wrong_totp_code_is_refused(runtime: Runtime, clock: Clock, http: TestClient) -> None:
    rad = make_account(runtime, "rad")
    wrong = f"{(int(rad.code(clock.now)) + 1) % 1_000_000:06d}"
    r = login(http, rad, clock.now, code=wrong)
    assert r.status_code == 401 and r.json()["detail"] == "invalid TOTP code"
    assert login(http, rad, clock.now, code="12ab56").json()["detail"] == "invalid TOTP code"


def test_a_totp_code_works_once_and_its_replay_is_refused_and_audited(
    runtime: Runtime, clock: Clock, http: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    rad = make_account(runtime, "rad")
    code = rad.code(clock.now)
    assert login(http, rad, clock.now, code=code).status_code == 200
    clock.advance(seconds=5)
    replay = login(http, rad, clock.now, code=code)
    assert replay.status_code == 401 and replay.json()["detail"] == "TOTP code already used"
    event = denied_events(runtime, "login")[-1]
    assert event.actor == "rad" and "totp replay" in event.detail
    assert "event=totp_replay" in caplog.text and code not in caplog.text
    # an earlier step's code is a replay too, even though it was never used itself
    earlier = rad.code(clock.now - timedelta(seconds=30))
    assert login(http, rad, clock.now, code=earlier).json()["detail"] == "TOTP code already used"
    # the next step brings a new code
    clock.advance(seconds=30)
    assert login(http, rad, clock.now).status_code == 200


def test_consecutive_failures_lock_the_account_even_for_the_right_password(
    runtime: Runtime, clock: Clock, http: TestClient
) -> None:
    runtime.settings.lockout_threshold = 3
    runtime.settings.lockout_minutes = 10
    rad = make_account(runtime, "rad")
    for _ in range(3):
        r = http.post(
            "/api/auth/token", data={"username": "rad", "password": "wrong-password", "totp": "000000"}
        )
        assert r.status_code == 401 and r.json()["detail"] == "incorrect user name or password"
    locked = login(http, rad, clock.now)
    assert locked.status_code == 423
    assert locked.json()["detail"].startswith("locked after repeated failures")
    assert int(locked.headers["retry-after"]) == 600
    assert denied_events(runtime, "login")[-1].detail.startswith("locked after repeated failures")
    assert "account locked" in denied_events(runtime, "login")[-2].detail
    clock.advance(minutes=10, seconds=1)
    assert login(http, rad, clock.now).status_code == 200


def test_failures_are_capped_per_hour_whatever_the_lock_out(
    runtime: Runtime, clock: Clock, http: TestClient
) -> None:
    runtime.settings.lockout_threshold = 1000
    runtime.settings.failed_attempts_per_hour = 4
    rad = make_account(runtime, "rad")
    for _ in range(4):
        clock.advance(minutes=1)
        assert login(http, rad, clock.now, code="000001").status_code == 401
    capped = login(http, rad, clock.now)
    assert capped.status_code == 429 and "too many failed attempts" in capped.json()["detail"]
    assert int(capped.headers["retry-after"]) == 57 * 60
    clock.advance(minutes=57, seconds=1)
    assert login(http, rad, clock.now).status_code == 200


def test_the_default_cap_is_one_hundred_failures_an_hour(runtime: Runtime, clock: Clock) -> None:
    policy = throttle.Throttle(
        threshold=10_000, lock=timedelta(minutes=15), per_hour=runtime.settings.failed_attempts_per_hour
    )
    assert policy.per_hour == 100
    with runtime.db.write() as s:
        for _ in range(99):
            throttle.fail(s, "user:x", policy, clock.now)
    with runtime.db.sessions() as s:
        throttle.check(s, "user:x", policy, clock.now)
    with runtime.db.write() as s:
        throttle.fail(s, "user:x", policy, clock.now)
    with runtime.db.sessions() as s, pytest.raises(throttle.AuthError) as err:
        throttle.check(s, "user:x", policy, clock.now)
    assert err.value.status == 429


def test_unknown_user_names_are_throttled_like_real_ones(
    runtime: Runtime, clock: Clock, http: TestClient
) -> None:
    runtime.settings.lockout_threshold = 2
    for _ in range(2):
        r = http.post(
            "/api/auth/token", data={"username": "ghost", "password": "whatever1", "totp": "123456"}
        )
        assert r.status_code == 401 and r.json()["detail"] == "incorrect user name or password"
    r = http.post("/api/auth/token", data={"username": "GHOST", "password": "whatever1", "totp": "123456"})
    assert r.status_code == 423


def test_a_user_re_enrols_totp_after_a_recent_login_and_the_old_secret_stops_working(
    runtime: Runtime, clock: Clock, http: TestClient
) -> None:
    rad = make_account(runtime, "rad")
    token = login(http, rad, clock.now).json()["access_token"]
    r = http.post("/api/auth/totp", headers=bearer(token))
    assert r.status_code == 200, r.text
    new = pyotp.parse_uri(r.json()["otpauth_uri"])
    assert isinstance(new, pyotp.TOTP) and new.secret == r.json()["secret"]
    clock.advance(seconds=30)
    assert login(http, rad, clock.now).json()["detail"] == "invalid TOTP code"
    assert login(http, rad, clock.now, code=new.at(clock.now)).status_code == 200
    clock.advance(minutes=6)
    stale = http.post("/api/auth/totp", headers=bearer(token))
    assert stale.status_code == 401 and "re-authentication required" in stale.json()["detail"]
