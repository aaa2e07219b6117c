"""The dead-letter list: messages refused or unreadable, kept with their raw bytes, listed, shown and replayed.

A replay runs the kept bytes through :func:`archipel.radiology.hl7.receiver.receive` again, exactly as if the
RIS had sent them now (after the missing sender or patient was added, say). A replay that is accepted marks the
dead letter resolved; one that is refused again keeps it open with the new reason.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select

from archipel.platform.db import Database
from archipel.platform.runtime import Runtime
from archipel.radiology.hl7.messages import CHARSETS, Rejected, charset_of
from archipel.radiology.hl7.models import OPEN, RESOLVED, Hl7DeadLetter
from archipel.radiology.hl7.receiver import Result, receive


class DeadLetterNotFound(LookupError):
    """No dead letter has this id."""


class AlreadyResolved(ValueError):
    """The dead letter was replayed successfully already; replaying it again would apply it twice."""


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

    def as_dict(self) -> dict[str, object]:
        """JSON-ready fields (times in ISO 8601)."""
        out = dict(self.__dict__)
        out["received_at"] = self.received_at.isoformat()
        out["resolved_at"] = self.resolved_at.isoformat() if self.resolved_at else None
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
    """One dead letter and its raw bytes; :class:`DeadLetterNotFound` if there is none."""
    with db.sessions() as s:
        row = s.get(Hl7DeadLetter, dead_id)
        if row is None:
            raise DeadLetterNotFound(f"no dead letter {dead_id}")
        return _view(row), bytes(row.raw)


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
    """Run a dead letter through the intake again; :class:`AlreadyResolved` if it was applied already."""
    letter, raw = get_dead_letter(rt.db, dead_id)
    if letter.state == RESOLVED:
        raise AlreadyResolved(f"dead letter {dead_id} was resolved already ({letter.resolved_by})")
    return receive(rt, raw, letter.peer, replay_of=dead_id, by=by)
