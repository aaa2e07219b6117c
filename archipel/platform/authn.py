"""Authentication of professionals: local accounts with argon2 hashes, and short-lived bearer tokens.

OpenID Connect, TOTP, lock-out and patient access codes extend this module (identity & access issue).
"""

from __future__ import annotations

import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

import jwt
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import Boolean, String, select
from sqlalchemy.orm import Mapped, Session, mapped_column

from archipel.platform.db import Base, UTCDateTime, utcnow

ROLES = (
    "admin",
    "radiologist",
    "pathologist",
    "surgeon",
    "screening-reader",
    "treating-doctor",
    "identity-officer",
    "auditor",
    "technician",
)

_hasher = PasswordHasher()


class User(Base):
    """A professional's local account."""

    __tablename__ = "users"

    id: Mapped[int] = mapped_column(primary_key=True)
    username: Mapped[str] = mapped_column(String(128), unique=True)
    role: Mapped[str] = mapped_column(String(32))
    site: Mapped[str] = mapped_column(String(64), default="")
    password_hash: Mapped[str] = mapped_column(String(255))
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class AuthError(Exception):
    """Authentication failed; the message is safe to show."""


@dataclass(frozen=True)
class Principal:
    """Who is acting: a user, or a DICOM node."""

    subject: str
    role: str
    site: str = ""
    kind: str = "user"


def create_user(s: Session, username: str, role: str, password: str | None = None, site: str = "") -> str:
    """Create a local account and return its password (generated when not given)."""
    if role not in ROLES:
        raise ValueError(f"unknown role {role!r}; choose one of: {', '.join(ROLES)}")
    if not username or len(username) > 128:
        raise ValueError("a user name of 1 to 128 characters is required")
    if s.execute(select(User).where(User.username == username)).scalar_one_or_none() is not None:
        raise ValueError(f"user {username!r} exists already")
    if password is None:
        password = secrets.token_urlsafe(15)
    elif len(password) < 8:
        raise ValueError("passwords have at least 8 characters")
    s.add(User(username=username, role=role, site=site, password_hash=_hasher.hash(password)))
    s.flush()
    return password


def authenticate(s: Session, username: str, password: str) -> User:
    """The active user whose password matches, else :class:`AuthError`."""
    user = s.execute(select(User).where(User.username == username)).scalar_one_or_none()
    if user is None or not user.active:
        _hasher.hash(password)  # spend the same time as a real check
        raise AuthError("incorrect user name or password")
    try:
        _hasher.verify(user.password_hash, password)
    except (VerificationError, InvalidHashError) as exc:
        raise AuthError("incorrect user name or password") from exc
    return user


def issue_token(user: User, key: str, minutes: int) -> str:
    """A signed access token for ``user``, valid ``minutes``."""
    now = utcnow()
    claims = {
        "sub": user.username,
        "role": user.role,
        "site": user.site,
        "iat": now,
        "exp": now + timedelta(minutes=minutes),
        "jti": uuid.uuid4().hex,
    }
    return jwt.encode(claims, key, algorithm="HS256")


def read_token(token: str, key: str) -> Principal:
    """The principal a valid token names; :class:`AuthError` if it is expired, forged or malformed."""
    try:
        claims = jwt.decode(token, key, algorithms=["HS256"], options={"require": ["exp", "sub"]})
    except jwt.ExpiredSignatureError as exc:
        raise AuthError("token expired") from exc
    except jwt.PyJWTError as exc:
        raise AuthError("invalid token") from exc
    return Principal(
        subject=str(claims["sub"]), role=str(claims.get("role", "")), site=claims.get("site", "")
    )
