"""Local login: password, then TOTP, under the lock-out and hourly limits, with every outcome audited.

Every local role needs TOTP when ``require_totp`` is on (the default): all of them but admin and auditor read
patient data, an administrator can grant any role, and an auditor reads who saw which patient. A missing or
wrong code counts as a failed attempt, so a password cannot be confirmed by trying it without a code.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from archipel.platform import audit, mfa, throttle
from archipel.platform.authn import AuthError, Principal, authenticate
from archipel.platform.db import Database
from archipel.platform.sessions import SessionPolicy
from archipel.platform.settings import Settings

log = logging.getLogger("archipel.auth")

PASSWORD_TOTP = "password+totp"
PASSWORD = "password"


def throttle_policy(settings: Settings) -> throttle.Throttle:
    """The lock-out and hourly limits configured in ``settings``."""
    return throttle.Throttle(
        threshold=max(1, settings.lockout_threshold),
        lock=timedelta(minutes=settings.lockout_minutes),
        per_hour=max(1, settings.failed_attempts_per_hour),
    )


def session_policy(settings: Settings) -> SessionPolicy:
    """Token and session lifetimes configured in ``settings``."""
    return SessionPolicy(
        token_ttl=timedelta(minutes=settings.token_minutes),
        idle=timedelta(minutes=settings.session_idle_minutes),
        absolute=timedelta(hours=settings.session_max_hours),
    )


def account_key(username: str) -> str:
    """The throttle key of a user name (case-folded, so that case games do not multiply the limit)."""
    return "user:" + username.strip().lower()[:150]


def password_login(
    db: Database,
    settings: Settings,
    username: str,
    password: str,
    totp: str,
    *,
    now: datetime,
    source: str = "",
    action: str = "login",
) -> Principal:
    """The principal of a successful local login; :class:`AuthError` (401, 423 or 429) with the reason otherwise.

    Both outcomes are written to the audit trail as USER_AUTHENTICATION events.
    """
    key = account_key(username)
    policy = throttle_policy(settings)
    signing_key = settings.signing_key()
    who = Principal(subject=username.strip()[:128], role="")
    error: AuthError | None = None
    detail = ""
    try:
        with db.sessions() as s:
            throttle.check(s, key, policy, now)
    except AuthError as exc:
        _denied(db, who, action, exc.reason, source)
        raise
    with db.write() as s:
        try:
            user = authenticate(s, username.strip(), password)
            who = Principal(subject=user.username, role=user.role, site=user.site)
            method = PASSWORD
            if settings.require_totp or user.totp_secret:
                if not user.totp_secret:
                    raise AuthError(mfa.NOT_ENROLLED)
                if not totp:
                    raise AuthError(mfa.REQUIRED)
                mfa.consume(s, user, totp, signing_key, now)
                method = PASSWORD_TOTP
            throttle.succeed(s, key)
        except AuthError as exc:
            error = exc
            if exc.reason == mfa.REPLAYED:
                detail = "totp replay"
                log.warning("event=totp_replay actor=%s source=%s", who.subject, source)
            if throttle.fail(s, key, policy, now):
                detail = (detail + "; " if detail else "") + "account locked"
    if error is not None:
        _denied(db, who, action, error.reason + (f" ({detail})" if detail else ""), source)
        raise error
    audit.record(db, who, audit.USER_AUTHENTICATION, action, source=source, detail=method)
    return Principal(subject=who.subject, role=who.role, site=who.site, auth_time=now, method=method)


def _denied(db: Database, who: Principal, action: str, reason: str, source: str) -> None:
    audit.record(db, who, audit.USER_AUTHENTICATION, action, outcome="denied", source=source, detail=reason)
