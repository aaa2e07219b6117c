"""Sessions behind access tokens: revocable, ended after 30 min idle and 12 h in all.

Logging in opens a session (a row keyed by a random id, ``sid``). Access tokens are short-lived HS256 JWTs that
name their session; every request checks the session row, so revoking it (logout, "log out everywhere", an
administrator) ends every token issued for it at once. Idle time is measured from ``last_seen``, which a request
moves forward at most once a minute, so that reading a token costs a database read but rarely a write.
"""

from __future__ import annotations

import logging
import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

import jwt
from sqlalchemy import Integer, String, select, update
from sqlalchemy.orm import Mapped, Session, mapped_column

from archipel.platform.authn import AuthError, Principal
from archipel.platform.db import Base, Database, UTCDateTime

log = logging.getLogger("archipel.auth")

ALGORITHM = "HS256"
ACCESS = "access"
COOKIE = "cookie"

INVALID = "invalid token"
EXPIRED = "token expired"
REVOKED = "session revoked"
IDLE = "session ended after inactivity"
ABSOLUTE = "session reached its maximum duration"


class AuthSession(Base):
    """One logged-in session of a user or a patient."""

    __tablename__ = "auth_sessions"

    id: Mapped[str] = mapped_column(String(43), primary_key=True)
    subject: Mapped[str] = mapped_column(String(160), index=True)
    role: Mapped[str] = mapped_column(String(32))
    site: Mapped[str] = mapped_column(String(64), default="")
    kind: Mapped[str] = mapped_column(String(16), default="user")
    method: Mapped[str] = mapped_column(String(32), default="")
    auth_time: Mapped[datetime] = mapped_column(UTCDateTime())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    last_seen: Mapped[datetime] = mapped_column(UTCDateTime())
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime())
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    revoked_reason: Mapped[str] = mapped_column(String(64), default="")
    #: The patient access code a portal session was opened with: revoking the code ends the session.
    access_code_id: Mapped[int | None] = mapped_column(Integer, nullable=True, index=True)


@dataclass(frozen=True)
class SessionPolicy:
    """How long tokens and sessions live."""

    token_ttl: timedelta = timedelta(minutes=15)
    idle: timedelta = timedelta(minutes=30)
    absolute: timedelta = timedelta(hours=12)
    #: ``last_seen`` is written at most this often.
    touch_every: timedelta = timedelta(seconds=60)


@dataclass(frozen=True)
class IssuedToken:
    """An access token and when it expires."""

    token: str
    expires_at: datetime
    session: str

    def seconds_left(self, now: datetime) -> int:
        """Seconds until the token expires."""
        return max(0, int((self.expires_at - now).total_seconds()))


def new_session(
    who: Principal, method: str, policy: SessionPolicy, now: datetime, access_code_id: int | None = None
) -> AuthSession:
    """A session row for ``who``, authenticated by ``method`` just now, not yet stored (the caller adds it in
    its own transaction)."""
    return AuthSession(
        id=secrets.token_urlsafe(24),
        subject=who.subject,
        role=who.role,
        site=who.site,
        kind=who.kind,
        method=method,
        auth_time=now,
        created_at=now,
        last_seen=now,
        expires_at=now + policy.absolute,
        revoked_reason="",
        access_code_id=access_code_id,
    )


def open_session(
    db: Database, who: Principal, method: str, policy: SessionPolicy, now: datetime
) -> AuthSession:
    """Start a session for ``who``, authenticated by ``method`` just now."""
    row = new_session(who, method, policy, now)
    with db.write() as s:
        s.add(row)
    log.info("event=session_open kind=%s method=%s", who.kind, method)
    return row


def issue_token(
    row: AuthSession,
    key: str,
    policy: SessionPolicy,
    now: datetime,
    ttl: timedelta | None = None,
    use: str = ACCESS,
) -> IssuedToken:
    """A signed token for session ``row``, valid ``ttl`` (the policy's) but never past the session.

    ``use`` is :data:`ACCESS` (a bearer token) or :data:`COOKIE` (the browser session cookie); each is accepted
    only where it belongs, so the long-lived cookie value does not work as a bearer token.
    """
    exp = min(now + (ttl or policy.token_ttl), row.expires_at)
    claims = {
        "sub": row.subject,
        "role": row.role,
        "site": row.site,
        "kind": row.kind,
        "sid": row.id,
        "jti": uuid.uuid4().hex,
        "iat": int(now.timestamp()),
        "exp": int(exp.timestamp()),
        "auth_time": int(row.auth_time.timestamp()),
        "use": use,
    }
    return IssuedToken(jwt.encode(claims, key, algorithm=ALGORITHM), exp, row.id)


def session_id_of(token: str, key: str) -> str:
    """The session id a validly signed token names (expired or not); empty if there is none."""
    try:
        claims = jwt.decode(token, key, algorithms=[ALGORITHM], options={"verify_exp": False})
    except jwt.PyJWTError:
        return ""
    return str(claims.get("sid", ""))


def resolve(
    db: Database, token: str, key: str, policy: SessionPolicy, now: datetime, use: str = ACCESS
) -> Principal:
    """The principal of a valid token of ``use`` whose session is live; :class:`AuthError` with the reason
    otherwise."""
    try:
        claims = jwt.decode(
            token, key, algorithms=[ALGORITHM], options={"verify_exp": False, "require": ["exp", "sub"]}
        )
    except jwt.PyJWTError as exc:
        raise AuthError(INVALID) from exc
    try:
        exp = float(claims["exp"])
    except (TypeError, ValueError) as exc:
        raise AuthError(INVALID) from exc
    if exp <= now.timestamp():
        raise AuthError(EXPIRED)
    sid = claims.get("sid")
    if not isinstance(sid, str) or not sid or claims.get("use", ACCESS) != use:
        raise AuthError(INVALID)
    with db.sessions() as s:
        row = s.get(AuthSession, sid)
    if row is None:
        raise AuthError(INVALID)
    check_live(row, policy, now)
    if now - row.last_seen >= policy.touch_every:
        with db.write() as s:
            s.execute(
                update(AuthSession)
                .where(AuthSession.id == sid, AuthSession.last_seen < now)
                .values(last_seen=now)
                .execution_options(synchronize_session=False)
            )
    return principal_of(row)


def check_live(row: AuthSession, policy: SessionPolicy, now: datetime) -> None:
    """Raise :class:`AuthError` if session ``row`` is revoked, idle too long or past its maximum duration."""
    if row.revoked_at is not None:
        raise AuthError(REVOKED)
    if now >= row.expires_at:
        raise AuthError(ABSOLUTE)
    if now - row.last_seen > policy.idle:
        raise AuthError(IDLE)


def principal_of(row: AuthSession) -> Principal:
    """The principal acting through session ``row``."""
    return Principal(
        subject=row.subject,
        role=row.role,
        site=row.site,
        kind=row.kind,
        session=row.id,
        auth_time=row.auth_time,
        method=row.method,
    )


def get_session(db: Database, sid: str) -> AuthSession | None:
    """The session ``sid``, if it exists."""
    with db.sessions() as s:
        return s.get(AuthSession, sid)


def reauthenticated(db: Database, sid: str, now: datetime) -> AuthSession | None:
    """Record that the person behind session ``sid`` proved who they are again just now."""
    with db.write() as s:
        row = s.get(AuthSession, sid)
        if row is not None:
            row.auth_time = now
            row.last_seen = now
    return row


def revoke(db: Database, sid: str, reason: str, now: datetime) -> bool:
    """End session ``sid`` and every token issued for it; False if it was unknown or already ended."""
    with db.write() as s:
        result = s.execute(
            update(AuthSession)
            .where(AuthSession.id == sid, AuthSession.revoked_at.is_(None))
            .values(revoked_at=now, revoked_reason=reason[:64])
            .execution_options(synchronize_session=False)
        )
    done = getattr(result, "rowcount", 0) == 1
    if done:
        log.info("event=session_revoked reason=%s", reason)
    return done


def revoke_all(db: Database, subject: str, reason: str, now: datetime, kind: str = "user") -> int:
    """End every live session of ``subject``; return how many were ended."""
    with db.write() as s:
        result = s.execute(
            update(AuthSession)
            .where(AuthSession.subject == subject, AuthSession.kind == kind, AuthSession.revoked_at.is_(None))
            .values(revoked_at=now, revoked_reason=reason[:64])
            .execution_options(synchronize_session=False)
        )
    count = int(getattr(result, "rowcount", 0) or 0)
    log.info("event=sessions_revoked count=%d reason=%s", count, reason)
    return count


def revoke_for_access_code(s: Session, access_code_id: int, reason: str, now: datetime) -> int:
    """End, in the caller's transaction, every live session opened with patient access code
    ``access_code_id``; return how many were ended."""
    result = s.execute(
        update(AuthSession)
        .where(AuthSession.access_code_id == access_code_id, AuthSession.revoked_at.is_(None))
        .values(revoked_at=now, revoked_reason=reason[:64])
        .execution_options(synchronize_session=False)
    )
    return int(getattr(result, "rowcount", 0) or 0)


def live_sessions(db: Database, subject: str, now: datetime, kind: str = "user") -> list[AuthSession]:
    """The sessions of ``subject`` that are neither revoked nor past their maximum duration."""
    with db.sessions() as s:
        return list(
            s.execute(
                select(AuthSession).where(
                    AuthSession.subject == subject,
                    AuthSession.kind == kind,
                    AuthSession.revoked_at.is_(None),
                    AuthSession.expires_at > now,
                )
            ).scalars()
        )
