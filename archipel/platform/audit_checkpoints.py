"""Signed checkpoints of the audit chain, and retention that purges old events without breaking it.

A checkpoint is a signed statement "event N of the chain has hash H". Head checkpoints, written regularly, stop
anyone who can write to the index from rebuilding the chain after a change: the rebuilt hashes no longer match
what was signed. Each checkpoint also signs the digest of the one before it, so deleting one shows as well.

A purge deletes the events older than the retention and writes an *anchor* checkpoint naming the last purged
event and its hash: the kept chain starts from that signed hash instead of genesis.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import BigInteger, Integer, String, Text, delete, func, select, text
from sqlalchemy.orm import Mapped, Session, mapped_column

from archipel.platform import audit
from archipel.platform.audit import AuditEvent
from archipel.platform.audit_signing import key_id, load_signing_key
from archipel.platform.db import Base, Database, UTCDateTime, utcnow
from archipel.platform.settings import Settings

log = logging.getLogger("archipel.audit")

HEAD = "head"
ANCHOR = "anchor"


class AuditCheckpoint(Base):
    """One signed statement about the chain: ``event_id`` has ``event_hash`` (see the module docstring)."""

    __tablename__ = "audit_checkpoints"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    kind: Mapped[str] = mapped_column(String(16))
    event_id: Mapped[int] = mapped_column(BigInteger, index=True)
    event_hash: Mapped[str] = mapped_column(String(64))
    detail: Mapped[str] = mapped_column(Text, default="")
    prev_digest: Mapped[str] = mapped_column(String(64))
    key_id: Mapped[str] = mapped_column(String(64))
    signature: Mapped[str] = mapped_column(String(128))


def payload(c: AuditCheckpoint) -> bytes:
    """The exact bytes a checkpoint's signature covers."""
    body = {
        "at": c.at.isoformat(),
        "kind": c.kind,
        "event_id": c.event_id,
        "event_hash": c.event_hash,
        "detail": c.detail,
        "prev_digest": c.prev_digest,
        "key_id": c.key_id,
    }
    return json.dumps(body, sort_keys=True, separators=(",", ":")).encode()


def digest(c: AuditCheckpoint) -> str:
    """What the next checkpoint's ``prev_digest`` must be."""
    return hashlib.sha256(payload(c)).hexdigest()


def _lock_chain(s: Session) -> None:
    if s.get_bind().dialect.name == "postgresql":
        s.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": audit._CHAIN_LOCK_KEY})


def _sign(
    s: Session, settings: Settings, kind: str, event_id: int, event_hash: str, detail: str
) -> AuditCheckpoint:
    key = load_signing_key(settings)
    assert key is not None  # created on demand
    last = s.execute(
        select(AuditCheckpoint).order_by(AuditCheckpoint.id.desc()).limit(1)
    ).scalar_one_or_none()
    c = AuditCheckpoint(
        at=utcnow(),
        kind=kind,
        event_id=event_id,
        event_hash=event_hash,
        detail=detail,
        prev_digest=digest(last) if last is not None else audit.GENESIS,
        key_id=key_id(key.public_key()),
        signature="",
    )
    c.signature = key.sign(payload(c)).hex()
    s.add(c)
    s.flush()
    return c


def write_checkpoint(db: Database, settings: Settings) -> AuditCheckpoint | None:
    """Sign the chain's current head; ``None`` when there is no event or the head is already signed."""
    with audit._chain_lock, db.write() as s:
        _lock_chain(s)
        head = s.execute(
            select(AuditEvent.id, AuditEvent.hash).order_by(AuditEvent.id.desc()).limit(1)
        ).one_or_none()
        if head is None:
            return None
        signed = s.execute(
            select(AuditCheckpoint.id).where(
                AuditCheckpoint.event_id == head.id, AuditCheckpoint.event_hash == head.hash
            )
        ).first()
        if signed is not None:
            return None
        c = _sign(s, settings, HEAD, head.id, head.hash, "")
    log.info("event=audit_checkpoint checkpoint=%d head=%d key=%s", c.id, c.event_id, c.key_id)
    return c


def events_since_checkpoint(db: Database) -> tuple[int, datetime | None]:
    """How many events follow the last checkpoint, and when that checkpoint was written."""
    with db.sessions() as s:
        last = s.execute(
            select(AuditCheckpoint.event_id, AuditCheckpoint.at).order_by(AuditCheckpoint.id.desc()).limit(1)
        ).one_or_none()
        after = last.event_id if last is not None else 0
        n = s.execute(select(func.count()).select_from(AuditEvent).where(AuditEvent.id > after)).scalar_one()
        return int(n), (last.at if last is not None else None)


@dataclass(frozen=True)
class PurgeResult:
    """What a purge did: events removed, the anchor written (``None`` when nothing was old enough)."""

    purged: int
    cutoff: datetime
    anchor: AuditCheckpoint | None


class PurgeRefused(Exception):
    """The chain does not verify: purging would destroy the evidence. ``event_id`` is where it breaks."""

    def __init__(self, event_id: int | None) -> None:
        super().__init__(f"the audit chain is broken at event {event_id}: run 'archipel audit verify'")
        self.event_id = event_id


def purge(db: Database, settings: Settings, now: datetime | None = None) -> PurgeResult:
    """Delete events older than ``audit_retention_days`` and anchor the kept chain with a signed checkpoint.

    The newest event is always kept, so the chain goes on from it. A broken chain raises
    :class:`PurgeRefused` and nothing is deleted.
    """
    cutoff = (now or utcnow()) - timedelta(days=settings.audit_retention_days)
    with audit._chain_lock, db.write() as s:
        _lock_chain(s)
        newest = s.execute(select(func.max(AuditEvent.id))).scalar_one_or_none()
        if newest is None:
            return PurgeResult(0, cutoff, None)
        # Everything before the first event at or after the cutoff goes (ids grow with time).
        first_kept = s.execute(select(func.min(AuditEvent.id)).where(AuditEvent.at >= cutoff)).scalar_one()
        first_kept = min(first_kept if first_kept is not None else newest, newest)
        last_purged = s.execute(
            select(AuditEvent.id, AuditEvent.hash)
            .where(AuditEvent.id < first_kept)
            .order_by(AuditEvent.id.desc())
            .limit(1)
        ).one_or_none()
        if last_purged is None:
            return PurgeResult(0, cutoff, None)
        ok, broken = audit.verify(s)
        if not ok:
            raise PurgeRefused(broken)
        n = s.execute(
            select(func.count()).select_from(AuditEvent).where(AuditEvent.id <= last_purged.id)
        ).scalar_one()
        detail = json.dumps({"purged": n, "cutoff": cutoff.isoformat(), "first_kept": first_kept})
        anchor = _sign(s, settings, ANCHOR, last_purged.id, last_purged.hash, detail)
        s.execute(delete(AuditEvent).where(AuditEvent.id <= last_purged.id))
        # Checkpoints about purged events can no longer be checked against the chain; keep the anchor chain
        # intact by leaving them (they are small) - verification only checks their signatures.
    log.info("event=audit_purge purged=%d last_purged=%d anchor=%d", n, last_purged.id, anchor.id)
    return PurgeResult(int(n), cutoff, anchor)


class CheckpointScheduler:
    """A background thread of ``archipel serve``: signs the head after ``audit_checkpoint_events`` events or
    ``audit_checkpoint_seconds``, whichever comes first, and purges expired events once a day."""

    def __init__(self, db: Database, settings: Settings, poll_seconds: float = 5.0) -> None:
        self.db, self.settings, self.poll = db, settings, poll_seconds
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="audit-checkpoints", daemon=True)
        self._last_purge: datetime | None = None

    def start(self) -> CheckpointScheduler:
        """Start the thread; returns self."""
        load_signing_key(self.settings)  # fail now, not later, on an unreadable key
        self._thread.start()
        return self

    def stop(self) -> None:
        """Sign a last checkpoint and stop."""
        self._stop.set()
        self._thread.join(timeout=10)
        self._tick(final=True)

    def _run(self) -> None:
        while not self._stop.wait(self.poll):
            try:
                self._tick()
            except Exception:
                log.exception("event=audit_checkpoint_failed")

    def _tick(self, final: bool = False) -> None:
        pending, last_at = events_since_checkpoint(self.db)
        if pending:
            due = last_at is None or utcnow() - last_at >= timedelta(
                seconds=self.settings.audit_checkpoint_seconds
            )
            if final or due or pending >= self.settings.audit_checkpoint_events:
                write_checkpoint(self.db, self.settings)
        now = utcnow()
        if not final and (self._last_purge is None or now - self._last_purge >= timedelta(days=1)):
            self._last_purge = now
            try:
                purge(self.db, self.settings, now)
            except PurgeRefused as exc:
                log.error("event=audit_purge_refused broken_at=%s", exc.event_id)
