"""Who is acting, and local accounts: argon2 password hashes, roles, and the errors authentication raises.

The rest of authentication lives beside this module, one concept each: ``mfa`` (TOTP), ``throttle`` (lock-out
and rate limits), ``sessions`` (revocable tokens, idle and absolute expiry), ``login`` (the local login that ties
them together), ``oidc`` (an external identity provider) and ``patient_access`` (access code + one-time code).
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from datetime import datetime

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import Boolean, Integer, String, select
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
    #: Reception and records staff of a site: hand out (and revoke) patients' portal access codes.
    "reception",
)

_hasher = PasswordHasher()
_EMAIL = re.compile(r"[^@\s]{1,64}@[^@\s]{1,190}\.[^@\s]{2,63}")


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
    #: The TOTP secret, sealed with a key derived from the signing key (see ``mfa``); empty when not enrolled.
    totp_secret: Mapped[str] = mapped_column(String(255), default="", server_default="")
    #: The last TOTP time step accepted: a code of this step or an earlier one is a replay.
    totp_last_step: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    #: Where alerts reach the professional (e.g. a break-the-glass on one of their patients); may be empty.
    email: Mapped[str] = mapped_column(String(255), default="", server_default="")


class AuthError(Exception):
    """Authentication failed. ``reason`` is safe to show; ``status`` is the HTTP status to answer with
    (401 bad credentials, 403 authenticated but not admitted, 423 locked, 429 too many attempts)."""

    def __init__(self, reason: str, status: int = 401, retry_after: int | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status
        self.retry_after = retry_after


@dataclass(frozen=True)
class Principal:
    """Who is acting: a user, a patient, or a DICOM node.

    ``session`` is the revocable session id behind a token (empty for nodes and stateless tokens), ``auth_time``
    when the person last proved who they are, and ``method`` how (``password+totp``, ``oidc``, ...).
    """

    subject: str
    role: str
    site: str = ""
    kind: str = "user"
    session: str = ""
    auth_time: datetime | None = None
    method: str = ""


def create_user(
    s: Session, username: str, role: str, password: str | None = None, site: str = "", email: str = ""
) -> str:
    """Create a local account and return its password (generated when not given)."""
    if role not in ROLES:
        raise ValueError(f"unknown role {role!r}; choose one of: {', '.join(ROLES)}")
    if not username or len(username) > 128:
        raise ValueError("a user name of 1 to 128 characters is required")
    if ":" in username:
        raise ValueError(
            "a user name may not contain ':' (reserved for external identities such as rpps:...)"
        )
    if s.execute(select(User).where(User.username == username)).scalar_one_or_none() is not None:
        raise ValueError(f"user {username!r} exists already")
    email = email.strip()
    if email and not _EMAIL.fullmatch(email):
        raise ValueError(f"{email!r} is not an e-mail address")
    if password is None:
        password = secrets.token_urlsafe(15)
    elif len(password) < 8:
        raise ValueError("passwords have at least 8 characters")
    s.add(User(username=username, role=role, site=site, email=email, password_hash=_hasher.hash(password)))
    s.flush()
    return password


def find_user(s: Session, username: str) -> User | None:
    """The account named ``username``, if any."""
    return s.execute(select(User).where(User.username == username)).scalar_one_or_none()


def authenticate(s: Session, username: str, password: str) -> User:
    """The active user whose password matches, else :class:`AuthError`.

    This checks the password only; :func:`archipel.platform.login.password_login` adds TOTP and lock-out.
    """
    user = find_user(s, username)
    if user is None or not user.active:
        _hasher.hash(password)  # spend the same time as a real check
        raise AuthError("incorrect user name or password")
    try:
        _hasher.verify(user.password_hash, password)
    except (VerificationError, InvalidHashError) as exc:
        raise AuthError("incorrect user name or password") from exc
    return user


def hash_secret(value: str) -> str:
    """A salted argon2 hash of ``value`` (passwords, patient access codes, one-time codes)."""
    return _hasher.hash(value)


def secret_matches(hashed: str, value: str) -> bool:
    """Whether ``value`` matches the argon2 hash ``hashed``."""
    try:
        return _hasher.verify(hashed, value)
    except (VerificationError, InvalidHashError):
        return False
