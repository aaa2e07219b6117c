"""The dead-letter list: messages refused or unreadable, kept with their raw bytes, listed, shown and replayed.

A replay runs the kept bytes through :func:`archipel.radiology.hl7.receiver.receive` again, exactly as if the
RIS had sent them now (after the missing sender or patient was added, say). A replay that is accepted marks the
dead letter resolved; one that is refused again keeps it open with the new reason.

A message that is wrong in itself (a missing control id, a bad segment, cut at the size limit) is corrected
first (:func:`correct`): the administrator's text is kept beside the original bytes, which never change, the
correction is audited, and the replay applies the correction. A truncated letter is replayed only corrected.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select

from archipel.platform import audit
from archipel.platform.authn import Principal
from archipel.platform.db import Database, utcnow
from archipel.platform.runtime import Runtime
from archipel.radiology.hl7.messages import CHARSETS, MessageError, Rejected, charset_of, parse
from archipel.radiology.hl7.models import OPEN, RESOLVED, Hl7DeadLetter
from archipel.radiology.hl7.receiver import Result, receive


class DeadLetterNotFound(LookupError):
    """No dead letter has this id."""


class AlreadyResolved(ValueError):
    """The dead letter was replayed successfully already; replaying it again would apply it twice."""


class NeedsCorrection(ValueError):
    """The dead letter holds only the beginning of a message that was too large: correct it before replaying."""


class CorrectionInvalid(ValueError):
    """A correction that is not a readable HL7 message; the message says why."""


@dataclass(frozen=True)
class DeadLetter:
    """One kept message, as listed: no patient data, only who sent it, what it was and why it was refused."""

    id: int
    received_at: datetime
    peer: str
    facility: str
    application: str
    control_id: str
    message_type: str
    ack_code: str
    reason: str
    state: str
    replays: int
    resolved_at: datetime | None
    resolved_by: str
    truncated: bool = False
    received_size: int = 0
    corrected: bool = False
    corrected_at: datetime | None = None
    corrected_by: str = ""

    def as_dict(self) -> dict[str, object]:
        """JSON-ready fields (times in ISO 8601)."""
        out = dict(self.__dict__)
        for key in ("received_at", "resolved_at", "corrected_at"):
            when = out[key]
            out[key] = when.isoformat() if isinstance(when, datetime) else None
        return out


def _view(row: Hl7DeadLetter) -> DeadLetter:
    return DeadLetter(
        row.id,
        row.received_at,
        row.peer,
        row.facility,
        row.application,
        row.control_id,
        row.message_type,
        row.ack_code,
        row.reason,
        row.state,
        row.replays,
        row.resolved_at,
        row.resolved_by,
        bool(row.truncated),
        row.received_size or len(row.raw),
        row.corrected is not None,
        row.corrected_at,
        row.corrected_by,
    )


def list_dead_letters(db: Database, state: str | None = OPEN, limit: int = 200) -> list[DeadLetter]:
    """Dead letters in ``state`` (``open``, ``resolved``, or ``None`` for both), newest first."""
    if state not in (OPEN, RESOLVED, None):
        raise ValueError(f"state {state!r} is not open or resolved")
    stmt = select(Hl7DeadLetter).order_by(Hl7DeadLetter.id.desc()).limit(max(1, min(limit, 1000)))
    if state is not None:
        stmt = stmt.where(Hl7DeadLetter.state == state)
    with db.sessions() as s:
        return [_view(r) for r in s.execute(stmt).scalars()]


def get_dead_letter(db: Database, dead_id: int) -> tuple[DeadLetter, bytes]:
    """One dead letter and its raw bytes as received; :class:`DeadLetterNotFound` if there is none."""
    with db.sessions() as s:
        row = s.get(Hl7DeadLetter, dead_id)
        if row is None:
            raise DeadLetterNotFound(f"no dead letter {dead_id}")
        return _view(row), bytes(row.raw)


def get_correction(db: Database, dead_id: int) -> bytes | None:
    """The corrected message of a dead letter, or ``None`` when it was not corrected."""
    with db.sessions() as s:
        row = s.get(Hl7DeadLetter, dead_id)
        if row is None:
            raise DeadLetterNotFound(f"no dead letter {dead_id}")
        return bytes(row.corrected) if row.corrected is not None else None


def message_of(text: str) -> bytes:
    """An administrator's text of a message (segments on their own lines, as :func:`readable` shows them) as
    HL7 bytes: segments ended by ``<CR>``, encoded in the character set its MSH-18 names;
    :class:`CorrectionInvalid` when it is not a readable message."""
    lines = [line.strip("\r") for line in text.replace("\r\n", "\n").replace("\r", "\n").split("\n")]
    joined = "\r".join(line for line in lines if line.strip()) + "\r"
    try:
        codec = charset_of(joined.encode("utf-8"))  # MSH is ASCII: its MSH-18 reads the same in any encoding
        raw = joined.encode(codec)
    except Rejected as exc:
        raise CorrectionInvalid(exc.reason) from exc
    except UnicodeEncodeError as exc:
        raise CorrectionInvalid(
            f"character {exc.object[exc.start]!r} cannot be written in the message's character set (MSH-18)"
        ) from exc
    try:
        parse(raw)
    except MessageError as exc:
        raise CorrectionInvalid(exc.reason) from exc
    return raw


def correct(db: Database, dead_id: int, text: str, by: Principal, *, source: str = "") -> DeadLetter:
    """Keep ``text`` as the corrected message of an open dead letter (the original stays as received) and
    audit it; the next replay applies it. :class:`AlreadyResolved` for a resolved letter,
    :class:`CorrectionInvalid` for a text that is not a readable message."""
    raw = message_of(text)
    with db.write() as s:
        row = s.get(Hl7DeadLetter, dead_id)
        if row is None:
            raise DeadLetterNotFound(f"no dead letter {dead_id}")
        if row.state == RESOLVED:
            raise AlreadyResolved(f"dead letter {dead_id} was resolved already ({row.resolved_by})")
        row.corrected, row.corrected_at, row.corrected_by = raw, utcnow(), by.subject[:128]
        view = _view(row)
    audit.record(
        db,
        by,
        audit.PATIENT_RECORD,
        "hl7-dead-letter-corrected",
        obj=f"dead-letter {dead_id}",
        source=source,
        detail=f"corrected message of {len(raw)} bytes; original of {view.received_size} bytes kept",
    )
    return view


def readable(raw: bytes) -> str:
    """The raw message as text for a person: decoded by its MSH-18 when possible, segments on their own
    lines, other control characters shown as ``\\xNN``."""
    try:
        codec = charset_of(raw)
    except Rejected:
        codec = CHARSETS[""]
    text = raw.decode(codec, errors="backslashreplace")
    lines = text.replace("\r\n", "\r").replace("\n", "\r").split("\r")
    return "\n".join(
        "".join(c if c.isprintable() else f"\\x{ord(c):02x}" for c in line) for line in lines if line
    )


def replay(rt: Runtime, dead_id: int, by: str) -> Result:
    """Run a dead letter (its correction, if it has one) through the intake again; :class:`AlreadyResolved` if
    it was applied already, :class:`NeedsCorrection` for a truncated one not corrected."""
    letter, raw = get_dead_letter(rt.db, dead_id)
    if letter.state == RESOLVED:
        raise AlreadyResolved(f"dead letter {dead_id} was resolved already ({letter.resolved_by})")
    corrected = get_correction(rt.db, dead_id)
    if corrected is None and letter.truncated:
        raise NeedsCorrection(
            f"dead letter {dead_id} keeps only the first {len(raw)} of {letter.received_size} bytes: "
            "correct it (or have the RIS send it again) before replaying"
        )
    return receive(rt, corrected if corrected is not None else raw, letter.peer, replay_of=dead_id, by=by)
