"""Lock-out and rate limits on authentication attempts, keyed by what is being guessed.

Two rules apply to each key (``user:NAME``, ``patient-code:ID``, ``patient-ip:ADDR``):

* after ``threshold`` consecutive failures the key is locked for ``lock`` (HTTP 423);
* at most ``per_hour`` failures are allowed in any sliding hour (HTTP 429), locks or not (OWASP ASVS 2.2.1).

Unknown user names are throttled like real ones, so the answers do not reveal which accounts exist. State is
in the database, so every API process of a deployment sees the same counts.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Integer, String, delete, func, select
from sqlalchemy.orm import Mapped, Session, mapped_column

from archipel.platform.authn import AuthError
from archipel.platform.db import Base, UTCDateTime

log = logging.getLogger("archipel.auth")

HOUR = timedelta(hours=1)


class AuthFailure(Base):
    """One failed attempt on a key, kept for an hour to enforce the hourly cap."""

    __tablename__ = "auth_failures"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    key: Mapped[str] = mapped_column(String(200), index=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)


class AuthLock(Base):
    """The consecutive-failure count of a key, and until when it is locked."""

    __tablename__ = "auth_locks"

    key: Mapped[str] = mapped_column(String(200), primary_key=True)
    consecutive: Mapped[int] = mapped_column(Integer, default=0)
    locked_until: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)


@dataclass(frozen=True)
class Throttle:
    """The limits applied to one kind of key."""

    threshold: int = 5
    lock: timedelta = timedelta(minutes=15)
    per_hour: int = 100


def _seconds(delta: timedelta) -> int:
    return max(1, math.ceil(delta.total_seconds()))


def check(s: Session, key: str, policy: Throttle, now: datetime) -> None:
    """Raise :class:`AuthError` (423 or 429) if ``key`` may not try now."""
    lock = s.get(AuthLock, key)
    if lock is not None and lock.locked_until is not None and lock.locked_until > now:
        until = lock.locked_until.strftime("%H:%M:%S UTC")
        raise AuthError(
            f"locked after repeated failures; try again after {until}",
            status=423,
            retry_after=_seconds(lock.locked_until - now),
        )
    since = now - HOUR
    count, oldest = s.execute(
        select(func.count(AuthFailure.id), func.min(AuthFailure.at)).where(
            AuthFailure.key == key, AuthFailure.at > since
        )
    ).one()
    if count >= policy.per_hour:
        retry = _seconds(oldest + HOUR - now) if oldest is not None else 3600
        raise AuthError(
            f"too many failed attempts in the last hour (limit {policy.per_hour}); try again later",
            status=429,
            retry_after=retry,
        )


def fail(s: Session, key: str, policy: Throttle, now: datetime) -> bool:
    """Count a failure on ``key`` in the caller's write transaction; return True if it now locks the key."""
    s.add(AuthFailure(key=key, at=now))
    s.execute(delete(AuthFailure).where(AuthFailure.key == key, AuthFailure.at <= now - HOUR))
    lock = s.get(AuthLock, key)
    if lock is None:
        lock = AuthLock(key=key, consecutive=0)
        s.add(lock)
    lock.consecutive = (lock.consecutive or 0) + 1
    if lock.consecutive >= policy.threshold:
        lock.consecutive = 0
        lock.locked_until = now + policy.lock
        log.warning(
            "event=auth_lock key_kind=%s lock_seconds=%d", key.split(":", 1)[0], _seconds(policy.lock)
        )
        return True
    return False


def succeed(s: Session, key: str) -> None:
    """Reset the consecutive-failure count of ``key`` (its failures still count toward the hourly cap)."""
    lock = s.get(AuthLock, key)
    if lock is not None:
        lock.consecutive = 0


def unlock(s: Session, key: str) -> None:
    """Lift a lock and forget the failures of ``key`` (an administrator's decision)."""
    s.execute(delete(AuthLock).where(AuthLock.key == key))
    s.execute(delete(AuthFailure).where(AuthFailure.key == key))
