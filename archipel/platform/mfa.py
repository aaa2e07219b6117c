"""TOTP second factor (RFC 6238, 30 s steps, 6 digits) for local accounts.

A code is accepted in the current step or one step either side (clock drift), and only once: the step of the
last accepted code is kept on the account, and a code of that step or an earlier one is refused as a replay.
Secrets are sealed (Fernet) with a key derived from the platform's signing key, so a copy of the database alone
does not yield them.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from dataclasses import dataclass
from datetime import datetime

import pyotp
from cryptography.fernet import Fernet, InvalidToken
from sqlalchemy import update
from sqlalchemy.orm import Session

from archipel.platform.authn import AuthError, User

STEP_SECONDS = 30
#: Steps either side of the current one that are still accepted (clock drift between phone and server).
DRIFT_STEPS = 1

INVALID = "invalid TOTP code"
REPLAYED = "TOTP code already used"
REQUIRED = "TOTP code required"
NOT_ENROLLED = "TOTP is required for this account but none is enrolled; ask an administrator"


@dataclass(frozen=True)
class Enrolment:
    """A fresh TOTP enrolment: the base32 secret and its ``otpauth://`` URI, shown to the user once."""

    secret: str
    uri: str


def _fernet(signing_key: str) -> Fernet:
    digest = hashlib.sha256(b"archipel-totp-seal:" + signing_key.encode()).digest()
    return Fernet(base64.urlsafe_b64encode(digest))


def seal(secret: str, signing_key: str) -> str:
    """``secret`` encrypted for storage."""
    return _fernet(signing_key).encrypt(secret.encode()).decode()


def unseal(sealed: str, signing_key: str) -> str:
    """The secret sealed by :func:`seal`; :class:`AuthError` if the signing key changed since."""
    try:
        return _fernet(signing_key).decrypt(sealed.encode()).decode()
    except InvalidToken as exc:
        raise AuthError("TOTP secret unreadable (signing key changed?); re-enrol the account") from exc


def enrol(user: User, signing_key: str, issuer: str) -> Enrolment:
    """Give ``user`` a new TOTP secret (replacing any previous one) and return it, for display once."""
    secret = pyotp.random_base32()
    user.totp_secret = seal(secret, signing_key)
    user.totp_last_step = 0
    uri = pyotp.TOTP(secret).provisioning_uri(name=user.username, issuer_name=issuer)
    return Enrolment(secret=secret, uri=uri)


def matching_step(secret: str, code: str, now: datetime) -> int | None:
    """The time step (within the drift window) whose code is ``code``, or ``None``."""
    code = code.strip().replace(" ", "")
    if len(code) != 6 or not code.isdigit():
        return None
    totp = pyotp.TOTP(secret, interval=STEP_SECONDS)
    current = int(now.timestamp()) // STEP_SECONDS
    found: int | None = None
    for step in range(current - DRIFT_STEPS, current + DRIFT_STEPS + 1):
        # Compare every candidate, so that timing does not reveal which step matched.
        if hmac.compare_digest(totp.generate_otp(step), code) and found is None:
            found = step
    return found


def consume(s: Session, user: User, code: str, signing_key: str, now: datetime) -> int:
    """Check ``code`` for ``user`` and mark its step used, in the caller's write transaction.

    Returns the accepted step. Raises :class:`AuthError` with :data:`INVALID` or :data:`REPLAYED`.
    """
    step = matching_step(unseal(user.totp_secret, signing_key), code, now)
    if step is None:
        raise AuthError(INVALID)
    # Conditional update: of two concurrent logins with the same code, exactly one wins.
    result = s.execute(
        update(User)
        .where(User.id == user.id, User.totp_last_step < step)
        .values(totp_last_step=step)
        .execution_options(synchronize_session=False)
    )
    if getattr(result, "rowcount", 0) != 1:
        raise AuthError(REPLAYED)
    return step
