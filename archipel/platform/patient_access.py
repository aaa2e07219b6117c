"""Patients' way in: the access code handed out after an exam, plus a one-time code sent through ``notify``.

An access code is 20 Crockford base32 characters (printed ``XXXX-XXXX-XXXX-XXXX-XXXX``): the first 8 are a
public id used to find the row, the other 12 a 60-bit secret stored only as an argon2 hash (so 100 bits in
all, well past guessing under the rate limits). Codes expire and can be revoked. Every failed attempt counts
against the code (lock-out and hourly cap) and against the caller's address (hourly cap only, since addresses
are shared); see ``throttle``. A one-time code is 6 digits, valid ``patient_otp_minutes`` (10 at most), good
for one login and for 5 tries. At most ``sends_per_hour`` one-time codes are sent for one access code in any
sliding hour (``patient_otp_sends_per_hour``, 5 by default): a valid code cannot be used to flood a phone.
Staff also issue, list and revoke codes over HTTP and the CLI (``patient_codes``): a portal session remembers
the code it was opened with (:func:`open_portal_session`), so revoking the code ends it.

The patient is named by an opaque ``patient_ref``, ``"ISSUER/PATIENT_ID"`` for now; it becomes the master
patient id once the MPI (``platform.identity``) is in place.
"""

from __future__ import annotations

import math
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import ForeignKey, Integer, String, func, select
from sqlalchemy.orm import Mapped, Session, mapped_column

from archipel.platform import notify, sessions, throttle
from archipel.platform.authn import AuthError, Principal, hash_secret, secret_matches
from archipel.platform.db import Base, Database, UTCDateTime

ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"  # Crockford base32: no I, L, O, U
PUBLIC_LEN = 8
SECRET_LEN = 12
OTP_TRIES = 5
MAX_OTP_MINUTES = 10

INVALID_CODE = "invalid access code"
TOO_MANY_SENDS = "too many one-time codes sent for this access code in the last hour"
HOUR = timedelta(hours=1)
EXPIRED_CODE = "access code expired"
INVALID_OTP = "invalid one-time code"
EXPIRED_OTP = "one-time code expired; ask for a new one"
USED_OTP = "one-time code already used; ask for a new one"
NO_OTP = "no one-time code was requested for this access code"

#: Who may hold an access code (the role of the principal it logs in).
PATIENT = "patient"
LEGAL_REPRESENTATIVE = "legal-representative"
HOLDERS = (PATIENT, LEGAL_REPRESENTATIVE)


@dataclass(frozen=True)
class PatientLogin:
    """A successful patient log-in: the patient (``ISSUER/PATIENT_ID``) and who holds the code."""

    patient_ref: str
    holder: str
    #: The access code used (its row id): the portal session is tied to it.
    access_code_id: int = 0


class PatientAccessCode(Base):
    """An access code given to a patient, stored as its public id and a salted hash of its secret."""

    __tablename__ = "patient_access_codes"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    public_id: Mapped[str] = mapped_column(String(16), unique=True)
    patient_ref: Mapped[str] = mapped_column(String(160), index=True)
    secret_hash: Mapped[str] = mapped_column(String(255))
    channel: Mapped[str] = mapped_column(String(16))
    contact: Mapped[str] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime())
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    created_by: Mapped[str] = mapped_column(String(160), default="")
    #: Who logs in with the code: the patient, or their legal representative (parent, guardian), who does not
    #: see what is marked INVISIBLE_REPRESENTANTS_LEGAUX.
    holder: Mapped[str] = mapped_column(String(32), default=PATIENT, server_default=PATIENT)
    #: Who revoked the code (staff user name) and why.
    revoked_by: Mapped[str] = mapped_column(String(160), default="", server_default="")
    revoked_reason: Mapped[str] = mapped_column(String(500), default="", server_default="")


class PatientOneTimeCode(Base):
    """A one-time code sent for an access code: a salted hash, its expiry, its use and its tries."""

    __tablename__ = "patient_one_time_codes"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    access_code_id: Mapped[int] = mapped_column(ForeignKey("patient_access_codes.id"), index=True)
    code_hash: Mapped[str] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime())
    used_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)


@dataclass(frozen=True)
class OtpSent:
    """Where a one-time code went: the channel and a masked address that the patient can recognise."""

    channel: str
    masked_contact: str
    #: The outbox message carrying the code (to be delivered at once, and alone).
    message_id: int = 0


def _random(n: int) -> str:
    return "".join(secrets.choice(ALPHABET) for _ in range(n))


def normalise(code: str) -> str:
    """``code`` without spaces or dashes, upper case, with the look-alikes Crockford allows mapped back."""
    cleaned = code.replace("-", "").replace(" ", "").upper()
    return cleaned.translate(str.maketrans("ILO", "110"))


def format_code(raw: str) -> str:
    """``raw`` in groups of four, as printed for the patient."""
    return "-".join(raw[i : i + 4] for i in range(0, len(raw), 4))


def mask(channel: str, contact: str) -> str:
    """A recognisable but partial form of ``contact``."""
    if channel == "email" and "@" in contact:
        local, domain = contact.split("@", 1)
        return f"{local[:1]}***@{domain}"
    return "*" * max(0, len(contact) - 2) + contact[-2:]


def issue_access_code(
    s: Session,
    patient_ref: str,
    channel: str,
    contact: str,
    *,
    now: datetime,
    valid_for: timedelta,
    created_by: str = "",
    holder: str = PATIENT,
) -> str:
    """Create an access code for ``patient_ref`` and return it, formatted; it is not stored and shown only once.

    ``holder`` says who will use it: the patient, or their legal representative.
    """
    if holder not in HOLDERS:
        raise ValueError(f"unknown holder {holder!r}; choose one of: {', '.join(HOLDERS)}")
    if "/" not in patient_ref or patient_ref.startswith("/") or patient_ref.endswith("/"):
        raise ValueError("patient_ref is ISSUER/PATIENT_ID")
    if channel not in notify.CHANNELS:
        raise ValueError(f"unknown channel {channel!r}; choose one of: {', '.join(notify.CHANNELS)}")
    if not contact.strip():
        raise ValueError("a contact (e-mail address or phone number) is required to send one-time codes")
    public_id = _random(PUBLIC_LEN)
    while s.execute(select(PatientAccessCode.id).where(PatientAccessCode.public_id == public_id)).first():
        public_id = _random(PUBLIC_LEN)
    secret = _random(SECRET_LEN)
    s.add(
        PatientAccessCode(
            public_id=public_id,
            patient_ref=patient_ref,
            secret_hash=hash_secret(secret),
            channel=channel,
            contact=contact.strip(),
            created_at=now,
            expires_at=now + valid_for,
            created_by=created_by,
            holder=holder,
        )
    )
    s.flush()
    return format_code(public_id + secret)


def _keys(code: str, source: str) -> tuple[str, list[str]]:
    raw = normalise(code)
    public_id = raw[:PUBLIC_LEN] if len(raw) == PUBLIC_LEN + SECRET_LEN else "malformed"
    keys = [f"patient-code:{public_id}"]
    if source:
        keys.append(f"patient-ip:{source}")
    return raw, keys


def _policy_for(key: str, policy: throttle.Throttle) -> throttle.Throttle:
    # An address may be shared (a clinic's NAT, a family): it gets the hourly cap but no lock-out.
    if key.startswith("patient-ip:"):
        return throttle.Throttle(threshold=2**31 - 1, lock=policy.lock, per_hour=policy.per_hour)
    return policy


def _check(db: Database, keys: list[str], policy: throttle.Throttle, now: datetime) -> None:
    with db.sessions() as s:
        for key in keys:
            throttle.check(s, key, _policy_for(key, policy), now)


def _fail(db: Database, keys: list[str], policy: throttle.Throttle, now: datetime) -> None:
    with db.write() as s:
        for key in keys:
            throttle.fail(s, key, _policy_for(key, policy), now)


def _find(s: Session, raw: str, now: datetime, for_update: bool = False) -> PatientAccessCode:
    if len(raw) != PUBLIC_LEN + SECRET_LEN or any(c not in ALPHABET for c in raw):
        hash_secret(raw)  # same cost as a real check
        raise AuthError(INVALID_CODE)
    query = select(PatientAccessCode).where(PatientAccessCode.public_id == raw[:PUBLIC_LEN])
    row = s.execute(query.with_for_update() if for_update else query).scalar_one_or_none()
    if row is None:
        hash_secret(raw)
        raise AuthError(INVALID_CODE)
    if not secret_matches(row.secret_hash, raw[PUBLIC_LEN:]) or row.revoked_at is not None:
        raise AuthError(INVALID_CODE)
    if now >= row.expires_at:
        raise AuthError(EXPIRED_CODE)
    return row


def request_one_time_code(
    db: Database,
    code: str,
    *,
    now: datetime,
    policy: throttle.Throttle,
    otp_minutes: int,
    source: str = "",
    sends_per_hour: int = 5,
) -> tuple[str, OtpSent]:
    """Check an access code and queue a one-time code to its contact; return ``(patient_ref, where)``.

    Raises :class:`AuthError` (401, 423, 429) with the reason; failures count against the code and ``source``.
    More than ``sends_per_hour`` codes in an hour is 429 with the seconds to wait, and is not a failure (the
    code was right).
    """
    raw, keys = _keys(code, source)
    _check(db, keys, policy, now)
    otp = f"{secrets.randbelow(1_000_000):06d}"
    try:
        with db.write() as s:
            # The row lock makes concurrent requests for one code count one after the other (PostgreSQL).
            row = _find(s, raw, now, for_update=True)
            _check_sends(s, row, sends_per_hour, now)
            s.add(
                PatientOneTimeCode(
                    access_code_id=row.id,
                    code_hash=hash_secret(otp),
                    created_at=now,
                    expires_at=now + timedelta(minutes=min(otp_minutes, MAX_OTP_MINUTES)),
                    attempts=0,
                )
            )
            message = notify.enqueue(
                s,
                row.channel,
                row.contact,
                "Your Archipel one-time code",
                f"Your one-time code is {otp}. It is valid for {min(otp_minutes, MAX_OTP_MINUTES)} minutes "
                "and works once. Never share it.",
                purpose="patient-otp",
            )
            ref = row.patient_ref
            sent = OtpSent(row.channel, mask(row.channel, row.contact), message.id)
    except SendsThrottled:
        raise
    except AuthError:
        _fail(db, keys, policy, now)
        raise
    return ref, sent


class SendsThrottled(AuthError):
    """Too many one-time codes were sent for one access code lately (429; not a failed attempt)."""


def _check_sends(s: Session, row: PatientAccessCode, per_hour: int, now: datetime) -> None:
    count, oldest = s.execute(
        select(func.count(PatientOneTimeCode.id), func.min(PatientOneTimeCode.created_at)).where(
            PatientOneTimeCode.access_code_id == row.id, PatientOneTimeCode.created_at > now - HOUR
        )
    ).one()
    if count >= per_hour:
        wait = math.ceil((oldest + HOUR - now).total_seconds()) if oldest is not None else 3600
        raise SendsThrottled(
            f"{TOO_MANY_SENDS} (limit {per_hour}); try again later", status=429, retry_after=max(1, wait)
        )


def verify_one_time_code(
    db: Database, code: str, otp: str, *, now: datetime, policy: throttle.Throttle, source: str = ""
) -> PatientLogin:
    """The patient (and who holds the code) of an access code whose latest one-time code is ``otp``; the
    one-time code is used up.

    Raises :class:`AuthError` with the reason; failures count against the code and ``source``.
    """
    raw, keys = _keys(code, source)
    _check(db, keys, policy, now)
    error: AuthError | None = None
    with db.write() as s:
        try:
            row = _find(s, raw, now)
            challenge = s.execute(
                select(PatientOneTimeCode)
                .where(PatientOneTimeCode.access_code_id == row.id)
                .order_by(PatientOneTimeCode.id.desc())
                .limit(1)
            ).scalar_one_or_none()
            if challenge is None:
                raise AuthError(NO_OTP)
            if challenge.used_at is not None:
                raise AuthError(USED_OTP)
            if now >= challenge.expires_at:
                raise AuthError(EXPIRED_OTP)
            if challenge.attempts >= OTP_TRIES:
                raise AuthError(f"{INVALID_OTP}; too many tries, ask for a new one")
            challenge.attempts += 1
            if not secret_matches(challenge.code_hash, otp.strip()):
                raise AuthError(INVALID_OTP)
            challenge.used_at = now
            login = PatientLogin(row.patient_ref, row.holder or PATIENT, row.id)
        except AuthError as exc:
            error = exc
    if error is not None:
        _fail(db, keys, policy, now)
        raise error
    return login


def open_portal_session(
    db: Database, login: PatientLogin, method: str, policy: sessions.SessionPolicy, now: datetime
) -> sessions.AuthSession:
    """Open the patient's session, tied to the access code of ``login``; :class:`AuthError` (401) if the code
    was revoked or expired since the one-time code was checked.

    The code's row is locked (PostgreSQL; SQLite serialises writers) as a revocation locks it, so a session is
    either opened before the revocation, which then ends it, or refused."""
    who = Principal(subject=login.patient_ref, role=login.holder, kind="patient")
    with db.write() as s:
        row = s.execute(
            select(PatientAccessCode).where(PatientAccessCode.id == login.access_code_id).with_for_update()
        ).scalar_one_or_none()
        if row is None or row.revoked_at is not None:
            raise AuthError(INVALID_CODE)
        if now >= row.expires_at:
            raise AuthError(EXPIRED_CODE)
        session = sessions.new_session(who, method, policy, now, access_code_id=row.id)
        s.add(session)
    return session
