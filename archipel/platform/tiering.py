"""Tiering and replication: the daily storage job's two steps.

**Tiering** moves a blob of the main store from hot to archive once every row that references it is older than
``storage_hot_days``: the date is the data's last activity as its source reports it (for a study, the time its
last instance was received). A move is four steps, each safe to interrupt:

1. copy the blob to the archive, checking its SHA-256 as read from hot and again as read back from the archive;
2. record the tier ``moving`` (the archive copy is good);
3. delete the hot copy;
4. record the tier ``archive``.

A kill before 2 leaves a spare archive copy that the next run checks and keeps; a kill after 2 leaves a
``moving`` row that the next run finishes. Reads find the blob at every point (hot first, then archive).

**Replication** copies every blob not yet replicated to the optional replica store, checked the same way, and
records when. It runs off the hot path of ingest, so a blob is unreplicated for up to a day.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta

from sqlalchemy import func, or_, select, update

from archipel.platform import blob_refs
from archipel.platform.db import Database
from archipel.platform.preservation import (
    ARCHIVE,
    HOT,
    MOVING,
    BlobCorrupt,
    PreservedBlob,
    Stores,
    holds_good_copy,
    sync_inventory,
    verified_copy,
)
from archipel.platform.storage import BlobNotFound, BlobStore

log = logging.getLogger("archipel.storage")

Tick = Callable[[], None]


class TieringUnavailable(RuntimeError):
    """Tiering was asked for but no archive store is configured (``archive_blob_url``)."""


@dataclass(frozen=True)
class Candidate:
    """A blob the tiering run will move (or finish moving)."""

    key: str
    sha256: str
    size: int
    tier: str


@dataclass
class TierSummary:
    """What a tiering run did: candidates found, moved, failed (left hot, with a log line each), bytes moved."""

    candidates: int = 0
    moved: int = 0
    failed: int = 0
    bytes: int = 0
    dry_run: bool = False

    def as_dict(self) -> dict[str, int | bool]:
        """The summary as a job result."""
        return asdict(self)


def tier_candidates(db: Database, now: datetime, hot_days: int, limit: int | None = None) -> list[Candidate]:
    """Blobs of the main store to move to the archive: those in hot whose every reference was last active more
    than ``hot_days`` before ``now``, and those a crash left ``moving``; by key."""
    sync_inventory(db, blob_refs.MAIN_STORE)
    refs = blob_refs.references(blob_refs.MAIN_STORE)
    if refs is None:
        return []
    cutoff = now - timedelta(days=hot_days)
    old = select(refs.c.key).group_by(refs.c.key).having(func.max(refs.c.last_active) < cutoff)
    pb = PreservedBlob
    stmt = (
        select(pb.key, pb.sha256, pb.size, pb.tier)
        .where(pb.store == blob_refs.MAIN_STORE)
        .where(or_(pb.tier == MOVING, (pb.tier == HOT) & pb.key.in_(old)))
        .order_by(pb.key)
    )
    if limit is not None:
        stmt = stmt.limit(limit)
    with db.sessions() as s:
        return [Candidate(*row) for row in s.execute(stmt)]


def copy_to_archive(stores: Stores, blob: Candidate) -> None:
    """Step 1: make sure the archive holds a good copy of ``blob`` (copied from hot unless it already does)."""
    archive = _archive(stores)
    if not holds_good_copy(archive, blob.key, blob.sha256):
        verified_copy(stores.hot, archive, blob.key, blob.sha256, stores.spool)


def set_tier(db: Database, key: str, tier: str, now: datetime) -> None:
    """Steps 2 and 4: record ``tier`` for ``key`` of the main store."""
    with db.write() as s:
        s.execute(
            update(PreservedBlob)
            .where(PreservedBlob.store == blob_refs.MAIN_STORE, PreservedBlob.key == key)
            .values(tier=tier, tiered_at=now)
        )


def drop_hot_copy(stores: Stores, key: str) -> None:
    """Step 3: delete the hot copy (missing is fine: a crash may have come after the delete)."""
    stores.hot.delete(key)


def move_blob(db: Database, stores: Stores, blob: Candidate, now: datetime) -> None:
    """Move ``blob`` from hot to archive, steps 1 to 4; raises :class:`BlobCorrupt` or :class:`BlobNotFound`
    (the blob then stays where it was)."""
    copy_to_archive(stores, blob)
    set_tier(db, blob.key, MOVING, now)
    drop_hot_copy(stores, blob.key)
    set_tier(db, blob.key, ARCHIVE, now)


def _archive(stores: Stores) -> BlobStore:
    if stores.archive is None:
        raise TieringUnavailable("no archive tier: set archive_blob_url to a second directory or bucket")
    return stores.archive


def run_tiering(
    db: Database,
    stores: Stores,
    now: datetime,
    hot_days: int,
    *,
    dry_run: bool = False,
    plan: list[Candidate] | None = None,
    tick: Tick | None = None,
) -> TierSummary:
    """Move every candidate (``plan``, else :func:`tier_candidates`) to the archive and return the summary; a
    blob that cannot be moved is logged and left in hot (fixity reports what is wrong with it)."""
    _archive(stores)
    blobs = plan if plan is not None else tier_candidates(db, now, hot_days)
    summary = TierSummary(candidates=len(blobs), dry_run=dry_run)
    for blob in blobs:
        if not dry_run:
            try:
                move_blob(db, stores, blob, now)
            except (BlobCorrupt, BlobNotFound) as exc:
                summary.failed += 1
                log.warning("event=tier_failed key=%s reason=%s", blob.key, type(exc).__name__)
            else:
                summary.moved += 1
                summary.bytes += blob.size
        if tick is not None:
            tick()
    log.info(
        "event=tiering candidates=%d moved=%d failed=%d bytes=%d dry_run=%s",
        summary.candidates,
        summary.moved,
        summary.failed,
        summary.bytes,
        dry_run,
    )
    return summary


def replication_backlog(db: Database) -> list[tuple[str, str, str, str]]:
    """Blobs not yet copied to the replica, as (store, key, sha256, tier), after bringing the inventory up to
    date for every store."""
    for store in blob_refs.store_names():
        sync_inventory(db, store)
    pb = PreservedBlob
    stmt = select(pb.store, pb.key, pb.sha256, pb.tier).where(pb.replicated_at.is_(None)).order_by(pb.key)
    with db.sessions() as s:
        return [(row[0], row[1], row[2], row[3]) for row in s.execute(stmt)]


def run_replication(
    db: Database,
    stores: Stores,
    now: datetime,
    *,
    backlog: list[tuple[str, str, str, str]] | None = None,
    tick: Tick | None = None,
) -> dict[str, int]:
    """Copy every unreplicated blob to the replica store and record it; return counts (``replicated``,
    ``failed``). Nothing to do without ``replica_blob_url``."""
    if stores.replica is None:
        return {"replicated": 0, "failed": 0}
    todo = backlog if backlog is not None else replication_backlog(db)
    done = failed = 0
    for store, key, sha256, tier in todo:
        try:
            if not holds_good_copy(stores.replica, key, sha256):
                verified_copy(_holder(stores, store, key, tier), stores.replica, key, sha256, stores.spool)
        except (BlobCorrupt, BlobNotFound) as exc:
            failed += 1
            log.warning("event=replicate_failed store=%s key=%s reason=%s", store, key, type(exc).__name__)
        else:
            with db.write() as s:
                s.execute(
                    update(PreservedBlob)
                    .where(PreservedBlob.store == store, PreservedBlob.key == key)
                    .values(replicated_at=now)
                )
            done += 1
        if tick is not None:
            tick()
    if todo:
        log.info("event=replication replicated=%d failed=%d", done, failed)
    return {"replicated": done, "failed": failed}


def _holder(stores: Stores, store: str, key: str, tier: str) -> BlobStore:
    """The tier that holds ``key`` now: the recorded one, else the other (a move may have run since the plan)."""
    places = [stores.primary(store, tier)]
    places += [place for name, place in stores.alternates(store, tier) if name != "replica"]
    for place in places:
        if place.exists(key):
            return place
    raise BlobNotFound(key)
