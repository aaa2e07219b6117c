"""Verification of the whole audit trail: the hash chain, the checkpoints' signatures, and that every signed head
is in the chain where it says. Each problem names the event or checkpoint and what differs."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from archipel.platform import audit
from archipel.platform.audit import AuditEvent
from archipel.platform.audit_checkpoints import ANCHOR, AuditCheckpoint, digest, payload
from archipel.platform.audit_signing import TrustedKeys


@dataclass(frozen=True)
class Problem:
    """One place where the trail is not what it should be. ``event_id`` or ``checkpoint_id`` locates it."""

    what: str
    event_id: int | None = None
    checkpoint_id: int | None = None

    def __str__(self) -> str:
        where = []
        if self.event_id is not None:
            where.append(f"event {self.event_id}")
        if self.checkpoint_id is not None:
            where.append(f"checkpoint {self.checkpoint_id}")
        return f"{', '.join(where)}: {self.what}" if where else self.what


@dataclass
class Report:
    """The outcome of :func:`verify_trail`: problems (none means intact) and what was checked."""

    events: int = 0
    first_event: int | None = None
    last_event: int | None = None
    checkpoints: int = 0
    anchor: int | None = None
    problems: list[Problem] = field(default_factory=list)
    #: Events after the last head checkpoint: protected by the chain alone until the next checkpoint.
    unsigned_tail: int = 0
    last_checkpoint_at: datetime | None = None

    @property
    def intact(self) -> bool:
        """True when no problem was found."""
        return not self.problems


def _check_checkpoints(
    rows: list[AuditCheckpoint], keys: TrustedKeys, report: Report
) -> list[AuditCheckpoint]:
    """Signatures and the checkpoints' own chain; returns those whose signature holds."""
    valid: list[AuditCheckpoint] = []
    prev = audit.GENESIS
    for c in rows:
        reason = keys.verify(c.key_id, c.signature, payload(c))
        if reason is not None:
            report.problems.append(Problem(reason, checkpoint_id=c.id))
        else:
            valid.append(c)
        if c.prev_digest != prev:
            report.problems.append(
                Problem(
                    "does not follow the checkpoint before it (a checkpoint was deleted or changed)",
                    None,
                    c.id,
                )
            )
        prev = digest(c)
    return valid


def _events(s: Session, after: int) -> Iterator[AuditEvent]:
    q = (
        select(AuditEvent)
        .where(AuditEvent.id > after)
        .order_by(AuditEvent.id)
        .execution_options(yield_per=2000)
    )
    yield from s.execute(q).scalars()


def verify_trail(s: Session, keys: TrustedKeys) -> Report:
    """Check the chain from its start (genesis, or the last signed retention anchor) to its head, every
    checkpoint's signature and link, and that each head checkpoint's event still has the signed hash."""
    report = Report()
    rows = list(s.execute(select(AuditCheckpoint).order_by(AuditCheckpoint.id)).scalars())
    report.checkpoints = len(rows)
    valid = _check_checkpoints(rows, keys, report)
    anchors = [c for c in valid if c.kind == ANCHOR]
    start_id, prev_hash, prev_id = 0, audit.GENESIS, None
    if anchors:
        start_id, prev_hash = anchors[-1].event_id, anchors[-1].event_hash
        report.anchor = anchors[-1].id
    heads = {c.event_id: c for c in valid if c.kind != ANCHOR and c.event_id > start_id}
    seen: dict[int, str] = {}
    for e in _events(s, start_id):
        report.events += 1
        if report.first_event is None:
            report.first_event = e.id
        report.last_event = e.id
        recomputed = audit.content_hash(e)
        if e.hash != recomputed:
            report.problems.append(
                Problem(
                    f"content changed: stored hash {e.hash[:12]}..., content hashes to {recomputed[:12]}...",
                    e.id,
                )
            )
        elif e.prev_hash != prev_hash:
            report.problems.append(Problem(_link_problem(prev_id, start_id, e.id, bool(anchors)), e.id))
        if e.id in heads:
            seen[e.id] = e.hash
        prev_hash, prev_id = e.hash, e.id
    _check_heads(heads, seen, report, start_id)
    signed_heads = [c for c in valid if c.kind != ANCHOR]
    if signed_heads:
        last = signed_heads[-1]
        report.last_checkpoint_at = last.at
        report.unsigned_tail = _count_after(s, last.event_id)
    else:
        report.unsigned_tail = report.events
    return report


def _count_after(s: Session, event_id: int) -> int:
    return int(
        s.execute(select(func.count()).select_from(AuditEvent).where(AuditEvent.id > event_id)).scalar_one()
    )


def _link_problem(prev_id: int | None, start_id: int, event_id: int, anchored: bool) -> str:
    if prev_id is None:
        base = f"the signed retention anchor (event {start_id})" if anchored else "genesis"
        return f"prev_hash does not match {base}: earlier events were deleted without a signed purge"
    if event_id != prev_id + 1:
        missing = f"{prev_id + 1}" if event_id == prev_id + 2 else f"{prev_id + 1}-{event_id - 1}"
        return f"prev_hash does not match event {prev_id}: event(s) {missing} deleted"
    return f"prev_hash does not match event {prev_id}: the link was rewritten"


def _check_heads(
    heads: dict[int, AuditCheckpoint], seen: dict[int, str], report: Report, start_id: int
) -> None:
    ordered = sorted(heads.values(), key=lambda c: c.event_id)
    matched_before = start_id
    for c in ordered:
        found = seen.get(c.event_id)
        if found is None:
            report.problems.append(
                Problem(
                    f"signed event {c.event_id} is missing from the chain (deleted or the chain truncated)",
                    c.event_id,
                    c.id,
                )
            )
        elif found != c.event_hash:
            report.problems.append(
                Problem(
                    f"chain rebuilt: event {c.event_id} has hash {found[:12]}..., signed {c.event_hash[:12]}...; "
                    f"the change lies in events {matched_before + 1}-{c.event_id}",
                    c.event_id,
                    c.id,
                )
            )
        else:
            matched_before = c.event_id
