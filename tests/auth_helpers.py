"""Shared pieces of the authentication tests: an injected clock, an in-process client, accounts with TOTP."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pyotp
from fastapi.testclient import TestClient
from sqlalchemy import select

from archipel.platform import mfa
from archipel.platform.audit import AuditEvent
from archipel.platform.authn import create_user, find_user
from archipel.platform.runtime import Runtime

START = datetime(2026, 3, 2, 8, 0, 0, tzinfo=UTC)


class Clock:
    """A clock the tests move by hand."""

    def __init__(self, start: datetime = START) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> datetime:
        self.now += timedelta(**delta)
        return self.now


@dataclass
class Account:
    """A local account the test created: its name, password and TOTP generator."""

    name: str
    password: str
    totp: pyotp.TOTP | None

    def code(self, at: datetime) -> str:
        assert self.totp is not None
        return self.totp.at(at)


def make_account(
    rt: Runtime, name: str, role: str = "radiologist", site: str = "SITE-A", totp: bool = True
) -> Account:
    """Create ``name`` with a known password, and a TOTP secret unless ``totp`` is False."""
    password = f"pw-{name}-0123456789"
    with rt.db.write() as s:
        create_user(s, name, role, password, site)
        generator = None
        if totp:
            user = find_user(s, name)
            assert user is not None
            generator = pyotp.TOTP(mfa.enrol(user, rt.settings.signing_key(), "Archipel").secret)
    return Account(name, password, generator)


def client() -> TestClient:
    """The application over HTTPS (so Secure cookies travel), in this process."""
    from archipel.app import create_app

    return TestClient(create_app(), base_url="https://testserver")


def login(c: TestClient, account: Account, at: datetime, code: str | None = None) -> Any:
    """POST the token form; returns the response."""
    data = {"username": account.name, "password": account.password}
    totp = code if code is not None else (account.code(at) if account.totp else "")
    if totp:
        data["totp"] = totp
    return c.post("/api/auth/token", data=data)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def denied_events(rt: Runtime, action: str | None = None) -> list[AuditEvent]:
    """USER_AUTHENTICATION events that were refusals, oldest first."""
    with rt.db.sessions() as s:
        q = select(AuditEvent).where(AuditEvent.event_type == "110114", AuditEvent.outcome == "denied")
        if action:
            q = q.where(AuditEvent.action == action)
        return list(s.execute(q.order_by(AuditEvent.id)).scalars())
