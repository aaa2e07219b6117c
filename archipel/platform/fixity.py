"""Fixity: re-read stored blobs, compare each with the SHA-256 its references expect, repair what is wrong.

The inventory is the database's references (``blob_refs``), not a listing of the store, so a blob that vanished
is found as *missing*, not only one whose bytes changed. Each run checks the blobs whose last check is oldest,
enough of them to cover everything once per ``fixity_cycle_days`` (and every blob never checked or overdue).

A corrupt or missing blob raises an alert: an audit event (security alert), a structured log line, and one
notification per run in each administrator's inbox. It is then repaired from a good copy elsewhere (the other
tier, then the replica store), and checked again.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, false, func, or_, select, update

from archipel.platform import audit, blob_refs, inbox
from archipel.platform.authn import Principal, User
from archipel.platform.db import Database
from archipel.platform.jobs import Job
from archipel.platform.preservation import (
    CORRUPT,
    MISSING,
    OK,
    PROBLEMS,
    REPAIRED,
    BlobCorrupt,
    PreservedBlob,
    Stores,
    holds_good_copy,
    sha256_of,
    sync_inventory,
    verified_copy,
)
from archipel.platform.storage import BlobNotFound

log = logging.getLogger("archipel.storage")

#: Kind of the job rows of fixity runs (scheduled or by hand): the last one is the "last run" admins see.
FIXITY_JOB = "storage.fixity"
FIXITY_ACTOR = Principal(subject="storage-fixity", role="system", kind="system")


@dataclass(frozen=True)
class Target:
    """One blob to check: its store, key, expected SHA-256 and tier."""

    store: str
    key: str
    sha256: str
    tier: str


@dataclass
class FixitySummary:
    """What a run found: blobs checked, good, repaired, and still missing or corrupt after repair."""

    checked: int = 0
    ok: int = 0
    repaired: int = 0
    missing: int = 0
    corrupt: int = 0
    problems: list[dict[str, str]] = field(default_factory=list)

    @property
    def unresolved(self) -> int:
        """Blobs still wrong at the end of the run."""
        return self.missing + self.corrupt

    def as_dict(self) -> dict[str, Any]:
        """The summary as a job result (the problems name blobs by key only: no patient data)."""
        return asdict(self)


def _referenced() -> ColumnElement[bool]:
    """Rows that some registered source still references (a blob deleted without ``forget_blob`` is skipped)."""
    pb = PreservedBlob
    clauses: list[ColumnElement[bool]] = []
    for store in blob_refs.store_names():
        refs = blob_refs.references(store)
        if refs is not None:
            clauses.append((pb.store == store) & pb.key.in_(select(refs.c.key)))
    return or_(*clauses) if clauses else false()


def fixity_plan(
    db: Database,
    now: datetime,
    cycle_days: int,
    *,
    period_days: float = 1.0,
    everything: bool = False,
    sample: int | None = None,
) -> list[Target]:
    """The blobs one run checks, oldest check first: every one (``everything``), a random ``sample``, or the
    share of a run every ``period_days`` in a cycle of ``cycle_days``, and at least every overdue one."""
    for store in blob_refs.store_names():
        sync_inventory(db, store)
    pb = PreservedBlob
    base = select(pb.store, pb.key, pb.sha256, pb.tier).where(_referenced())
    with db.sessions() as s:
        if sample is not None:
            stmt = base.order_by(func.random()).limit(max(sample, 0))
        else:
            stmt = base.order_by(pb.checked_at.is_(None).desc(), pb.checked_at.asc(), pb.key)
            if not everything:
                total = s.execute(select(func.count()).select_from(base.subquery())).scalar_one()
                overdue_at = now - timedelta(days=cycle_days)
                overdue = s.execute(
                    select(func.count()).select_from(
                        base.where(or_(pb.checked_at.is_(None), pb.checked_at < overdue_at)).subquery()
                    )
                ).scalar_one()
                stmt = stmt.limit(max(math.ceil(total * period_days / cycle_days), overdue))
        return [Target(*row) for row in s.execute(stmt)]


def check_blob(stores: Stores, target: Target) -> tuple[str, str]:
    """Read ``target`` where its tier says it is: ``(ok, "")``, ``(missing, where)`` or ``(corrupt, detail)``."""
    try:
        found = sha256_of(stores.primary(target.store, target.tier), target.key)
    except BlobNotFound:
        return MISSING, f"absent from the {target.tier} tier of {target.store}"
    if found != target.sha256:
        return CORRUPT, f"SHA-256 {found} in the {target.tier} tier of {target.store}"
    return OK, ""


def repair_blob(stores: Stores, target: Target) -> str:
    """Copy a good copy of ``target`` back where it belongs; return the place it came from, or ``""`` when no
    place holds a good copy. The caller checks the blob again."""
    primary = stores.primary(target.store, target.tier)
    for name, place in stores.alternates(target.store, target.tier):
        try:
            if holds_good_copy(place, target.key, target.sha256):
                verified_copy(place, primary, target.key, target.sha256, stores.spool)
                return name
        except (BlobCorrupt, BlobNotFound, OSError) as exc:
            log.warning("event=fixity_repair_failed key=%s from=%s reason=%s", target.key, name, exc)
    return ""


def verify_one(db: Database, stores: Stores, target: Target, now: datetime, summary: FixitySummary) -> str:
    """Check ``target``, repair and re-check it when wrong, record the result and raise the alert; return the
    final status (``ok``, ``repaired``, ``missing`` or ``corrupt``)."""
    summary.checked += 1
    status, detail = check_blob(stores, target)
    if status == OK:
        summary.ok += 1
        _record(db, target, OK, "", now)
        return OK
    source = repair_blob(stores, target)
    if source and check_blob(stores, target)[0] == OK:
        final, detail = REPAIRED, f"{status}: {detail}; repaired from the {source}"
        summary.repaired += 1
    else:
        final, detail = status, f"{detail}; no good copy to repair from"
        summary.missing += final == MISSING
        summary.corrupt += final == CORRUPT
    summary.problems.append({"store": target.store, "key": target.key, "status": final, "detail": detail})
    _record(db, target, final, detail, now)
    log.warning(
        "event=fixity_problem store=%s key=%s tier=%s found=%s status=%s repaired_from=%s",
        target.store,
        target.key,
        target.tier,
        status,
        final,
        source or "-",
    )
    audit.record(
        db,
        FIXITY_ACTOR,
        audit.SECURITY_ALERT,
        f"fixity:{status}",
        outcome=audit.SUCCESS if final == REPAIRED else audit.FAILURE,
        obj=f"blob {target.store}/{target.key}",
        purpose=audit.OPERATIONS,
        detail=detail,
    )
    return final


def _record(db: Database, target: Target, status: str, detail: str, now: datetime) -> None:
    pb = PreservedBlob
    values: dict[str, Any] = {"checked_at": now, "status": status, "problem": detail}
    with db.write() as s:
        row = s.get(pb, (target.store, target.key))
        if row is None:
            return
        if status in (OK, REPAIRED):
            values["problem_since"] = None
        elif row.problem_since is None:
            values["problem_since"] = now
        s.execute(update(pb).where(pb.store == target.store, pb.key == target.key).values(**values))


def run_fixity(
    db: Database, stores: Stores, now: datetime, plan: list[Target], tick: Callable[[], None] | None = None
) -> FixitySummary:
    """Verify every blob of ``plan``; alert the administrators once when something was wrong."""
    summary = FixitySummary()
    for target in plan:
        verify_one(db, stores, target, now, summary)
        if tick is not None:
            tick()
    log.info(
        "event=fixity_run checked=%d ok=%d repaired=%d missing=%d corrupt=%d",
        summary.checked,
        summary.ok,
        summary.repaired,
        summary.missing,
        summary.corrupt,
    )
    if summary.problems:
        _tell_admins(db, summary)
    return summary


def _tell_admins(db: Database, summary: FixitySummary) -> None:
    title = (
        f"Fixity: {summary.unresolved} stored objects still wrong, {summary.repaired} repaired"
        if summary.unresolved
        else f"Fixity: {summary.repaired} stored objects were wrong and are repaired"
    )
    body = "\n".join(f"{p['store']}/{p['key']}: {p['detail']}" for p in summary.problems[:50])
    with db.write() as s:
        admins = s.execute(select(User.username).where(User.role == "admin", User.active.is_(True))).scalars()
        for username in list(admins):
            inbox.notify_user(s, username, kind="fixity", title=title, body=body, link="/api/storage/fixity")


def fixity_status(db: Database, limit: int = 100) -> dict[str, Any]:
    """What the admin page shows: the last fixity run (its job), counts by status and by tier, and the open
    problems (blobs still missing or corrupt), oldest problem first."""
    pb = PreservedBlob
    with db.sessions() as s:
        last = s.execute(select(Job).where(Job.kind == FIXITY_JOB).order_by(Job.created_at.desc()).limit(1))
        job = last.scalars().first()
        by_status = dict(s.execute(select(pb.status, func.count()).group_by(pb.status)).all())
        by_tier = dict(s.execute(select(pb.tier, func.count()).group_by(pb.tier)).all())
        open_rows = s.execute(
            select(pb).where(pb.status.in_(PROBLEMS)).order_by(pb.problem_since, pb.key).limit(limit)
        ).scalars()
        problems = [
            {
                "store": r.store,
                "key": r.key,
                "tier": r.tier,
                "status": r.status,
                "detail": r.problem,
                "since": r.problem_since.isoformat() if r.problem_since else None,
                "checked_at": r.checked_at.isoformat() if r.checked_at else None,
            }
            for r in open_rows
        ]
    return {
        "last_run": job.as_dict() if job is not None else None,
        "objects": sum(by_status.values()),
        "never_checked": by_status.pop("", 0),
        "by_status": by_status,
        "by_tier": by_tier,
        "open_problems": problems,
    }
