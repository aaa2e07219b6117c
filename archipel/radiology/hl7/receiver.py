"""The one path every HL7 message takes, from the listener or a replay: read, check the sender, skip a duplicate,
apply, acknowledge; keep whatever is refused in the dead-letter list.

The acknowledgement is built only after the message's changes are committed, so an ``AA`` is never sent for
something that was not applied. A message that is refused is acknowledged ``AE`` (understood, refused) or ``AR``
(unreadable), with the reason in MSA-3 and ERR, and its raw bytes are kept with that reason.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from archipel.platform import audit
from archipel.platform.authn import Principal
from archipel.platform.db import Database, utcnow
from archipel.platform.runtime import Runtime
from archipel.radiology.hl7 import orders, results  # noqa: F401  (they register their message types)
from archipel.radiology.hl7.handlers import Outcome, Sender, handler_for
from archipel.radiology.hl7.messages import (
    APPLICATION_ERROR,
    UNKNOWN_KEY,
    Header,
    MessageError,
    Parsed,
    Refused,
    ack,
    header_fields,
    parse,
)
from archipel.radiology.hl7.models import RESOLVED, Hl7DeadLetter, Hl7Message
from archipel.radiology.hl7.sources import site_of

log = logging.getLogger("archipel.hl7")


@dataclass(frozen=True)
class Result:
    """What became of one message: the acknowledgement to send, its code and reason, and its dead letter."""

    ack: bytes
    code: str
    reason: str = ""
    dead_letter: int | None = None
    duplicate: bool = False


def sender_principal(facility: str, site: str) -> Principal:
    """The principal a sender acts as: a node of its site (what the policy and the audit trail see)."""
    return Principal(subject=f"hl7:{facility}"[:128], role="node", site=site, kind="node")


def receive(rt: Runtime, raw: bytes, peer: str = "", *, replay_of: int | None = None, by: str = "") -> Result:
    """Apply one raw message (MLLP framing removed) and return its acknowledgement.

    ``replay_of`` names the dead letter being replayed (by administrator ``by``): it is resolved on success,
    and on a new refusal its reason is updated instead of a new dead letter being added.
    """
    db = rt.db
    parsed: Parsed | None = None
    try:
        parsed = parse(raw)
        header = parsed.header
        site = _site(db, header)
        with _applying(header):
            if _seen(db, header):
                log.info(
                    "event=hl7_duplicate control_id=%s type=%s facility=%s",
                    header.control_id,
                    header.kind,
                    header.sending_facility,
                )
                _resolve(db, replay_of, by)
                return Result(ack(header, "AA", "duplicate: already applied"), "AA", duplicate=True)
            sender = Sender(site, sender_principal(header.sending_facility, site), peer)
            outcome = handler_for(header.kind)(rt, parsed, sender)
            _accepted(db, parsed, sender, outcome)
    except MessageError as exc:
        return keep_refused(db, raw, peer, parsed.header if parsed else None, exc, replay_of)
    except Exception as exc:  # a fault of ours: the message must still be kept and answered
        log.exception("event=hl7_error peer=%s", peer)
        error = Refused(
            f"internal error while applying the message ({type(exc).__name__})", APPLICATION_ERROR
        )
        return keep_refused(db, raw, peer, parsed.header if parsed else None, error, replay_of)
    _resolve(db, replay_of, by)
    log.info(
        "event=hl7_accepted control_id=%s type=%s facility=%s outcome=%r",
        header.control_id,
        header.kind,
        header.sending_facility,
        outcome.text,
    )
    return Result(ack(header, "AA", outcome.text), "AA", outcome.text)


_busy: dict[tuple[str, str, str], tuple[threading.Lock, int]] = {}
_busy_lock = threading.Lock()


@contextmanager
def _applying(header: Header) -> Iterator[None]:
    """Hold the message's (sender, control id) while it is applied: a RIS that timed out and resent it on
    another connection waits, then sees it applied, instead of applying it a second time (in this process;
    the unique index on the accepted messages catches the rest)."""
    key = (header.sending_facility, header.sending_application, header.control_id)
    with _busy_lock:
        lock, users = _busy.get(key, (threading.Lock(), 0))
        _busy[key] = (lock, users + 1)
    try:
        with lock:
            yield
    finally:
        with _busy_lock:
            lock, users = _busy[key]
            if users == 1:
                del _busy[key]
            else:
                _busy[key] = (lock, users - 1)


def _site(db: Database, header: Header) -> str:
    with db.sessions() as s:
        site = site_of(s, header.sending_facility, header.sending_application)
    if site is None:
        raise Refused(
            f"unknown sender {header.sending_application}/{header.sending_facility} (MSH-3/MSH-4): "
            "register it with `archipel hl7 sources add`",
            UNKNOWN_KEY,
        )
    return site


def _seen(db: Database, header: Header) -> bool:
    with db.sessions() as s:
        found = s.execute(
            select(Hl7Message.id).where(
                Hl7Message.facility == header.sending_facility,
                Hl7Message.application == header.sending_application,
                Hl7Message.control_id == header.control_id,
            )
        ).first()
    return found is not None


def _accepted(db: Database, parsed: Parsed, sender: Sender, outcome: Outcome) -> None:
    """Remember the message (for duplicates) and audit it as a change of the patient's record."""
    h = parsed.header
    try:
        with db.write() as s:
            s.add(
                Hl7Message(
                    facility=h.sending_facility[:64],
                    application=h.sending_application[:64],
                    control_id=h.control_id[:64],
                    message_type=h.kind[:16],
                    site=sender.site,
                    outcome=outcome.text,
                    received_at=utcnow(),
                )
            )
            audit.append(
                s,
                sender.principal,
                audit.PATIENT_RECORD,
                f"hl7:{h.kind}",
                patient=outcome.patient,
                master=outcome.master,
                obj=f"control_id={h.control_id}",
                source=sender.peer,
                detail=outcome.text,
            )
    except IntegrityError:
        # The same message arrived twice at once on two connections: the other one recorded it.
        log.info("event=hl7_duplicate_race control_id=%s", h.control_id)


def keep_refused(
    db: Database,
    raw: bytes,
    peer: str,
    header: Header | None,
    exc: MessageError,
    replay_of: int | None,
    *,
    received_size: int | None = None,
) -> Result:
    """Keep a refused message as a dead letter (or update the one being replayed) and return its NAK.

    ``received_size`` larger than ``raw``: ``raw`` is only the beginning of a message that was too large, kept
    as a truncated dead letter (to be corrected before any replay)."""
    fields = header_fields(raw)
    size = len(raw) if received_size is None else received_size
    with db.write() as s:
        row = s.get(Hl7DeadLetter, replay_of) if replay_of is not None else None
        if row is None:
            row = Hl7DeadLetter(
                received_at=utcnow(),
                peer=peer[:255],
                facility=fields["facility"],
                application=fields["application"],
                control_id=fields["control_id"],
                message_type=fields["message_type"],
                raw=raw,
                replays=0,
                resolved_by="",
                truncated=size > len(raw),
                received_size=size,
            )
            s.add(row)
        else:
            row.replays += 1
        row.ack_code, row.reason = exc.code, exc.reason
        s.flush()
        dead = row.id
    log.warning(
        "event=hl7_refused code=%s control_id=%s type=%s facility=%s dead_letter=%d reason=%r",
        exc.code,
        fields["control_id"],
        fields["message_type"],
        fields["facility"],
        dead,
        exc.reason,
    )
    answer = ack(header, exc.code, exc.reason, exc.error, raw_fields=fields)
    return Result(answer, exc.code, exc.reason, dead)


def unkept(raw: bytes) -> bytes:
    """The NAK of a message that could be neither applied nor kept (the database is unavailable, say): ``AE``
    with error 207, and the RIS is asked to send it again later, since nothing of it was recorded."""
    try:
        header: Header | None = parse(raw).header
    except MessageError:
        header = None
    # Short enough for MSA-3 (80 characters); the log line names the error.
    reason = "not applied and not kept (the database may be unavailable): send it again later"
    return ack(header, "AE", reason, APPLICATION_ERROR, raw_fields=header_fields(raw))


def _resolve(db: Database, dead_letter: int | None, by: str) -> None:
    if dead_letter is None:
        return
    with db.write() as s:
        row = s.get(Hl7DeadLetter, dead_letter)
        if row is not None and row.state != RESOLVED:
            row.state, row.resolved_at, row.resolved_by = RESOLVED, utcnow(), by[:128]
            row.replays += 1
