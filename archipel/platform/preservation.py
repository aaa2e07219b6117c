"""The preservation record of every referenced blob: its tier, its replica copy and its last fixity check.

One :class:`PreservedBlob` row per (store, key) that some registered source references (``blob_refs``). Rows are
added by :func:`sync_inventory`, which tiering and fixity call first, so ingest's hot path writes nothing here.
A deletion of a blob (retention) calls :func:`forget_blob`, which removes every copy and the row.

Also here: the copy and hash steps that tiering, replication and repair share. They stream through a spool file,
so a slide source of several GiB is never held in memory.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import BigInteger, String, Text, exists, func, insert, literal, select
from sqlalchemy.orm import Mapped, mapped_column

from archipel.platform import blob_refs
from archipel.platform.db import Base, Database, UTCDateTime
from archipel.platform.settings import Settings
from archipel.platform.storage import BlobNotFound, BlobStore, open_blob_store

if TYPE_CHECKING:
    from archipel.platform.storage_tiers import ArchiveReadCache

log = logging.getLogger("archipel.storage")

#: Tiers of a blob of the main store. ``moving``: copied to the archive and verified there, the hot copy not yet
#: known to be deleted (a crash in between leaves this state, and the next tiering run finishes the move).
HOT, MOVING, ARCHIVE = "hot", "moving", "archive"
#: Results of a fixity check.
OK, CORRUPT, MISSING, REPAIRED = "ok", "corrupt", "missing", "repaired"
PROBLEMS = (CORRUPT, MISSING)

_CHUNK = 1 << 20


class PreservedBlob(Base):
    """Where one referenced blob is (tier, replica) and what its last fixity check found."""

    __tablename__ = "preserved_blobs"

    store: Mapped[str] = mapped_column(String(32), primary_key=True)
    key: Mapped[str] = mapped_column(String(128), primary_key=True)
    #: The SHA-256 its references expect (the key itself for content-addressed blobs).
    sha256: Mapped[str] = mapped_column(String(64))
    size: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    tier: Mapped[str] = mapped_column(String(16), default=HOT, server_default=HOT, index=True)
    tiered_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    replicated_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    checked_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True, index=True)
    #: ``ok``, ``corrupt``, ``missing``, ``repaired``; empty until the first check.
    status: Mapped[str] = mapped_column(String(16), default="", server_default="", index=True)
    problem: Mapped[str] = mapped_column(Text, default="", server_default="")
    problem_since: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)


class BlobCorrupt(ValueError):
    """A copy's bytes do not hash to the SHA-256 their references expect."""

    def __init__(self, key: str, expected: str, found: str) -> None:
        super().__init__(f"blob {key}: SHA-256 {found} instead of {expected}")
        self.key, self.expected, self.found = key, expected, found


@dataclass
class Stores:
    """The stores the lifecycle works on: the main store's tiers, the optional replica, and the other named
    stores (``slide-sources``), opened on first use."""

    settings: Settings
    hot: BlobStore
    archive: BlobStore | None = None
    replica: BlobStore | None = None
    #: The runtime's cache of archive reads, which a deletion must empty too.
    cache: ArchiveReadCache | None = None
    _others: dict[str, BlobStore] = field(default_factory=dict)

    @property
    def spool(self) -> Path:
        """Folder of the spool files that copies stream through (inside the data dir)."""
        folder = self.settings.data_dir / "storage-spool"
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    def primary(self, store: str, tier: str = HOT) -> BlobStore:
        """The store holding a blob of ``store`` in ``tier`` (another store than the main one has one tier)."""
        if store != blob_refs.MAIN_STORE:
            if store not in self._others:
                self._others[store] = blob_refs.store_opener(store)(self.settings)
            return self._others[store]
        if tier in (MOVING, ARCHIVE):
            if self.archive is None:
                raise RuntimeError("a blob is in the archive tier but archive_blob_url is not set")
            return self.archive
        return self.hot

    def alternates(self, store: str, tier: str) -> list[tuple[str, BlobStore]]:
        """Other places that may hold a good copy of a blob of ``store`` in ``tier``, named, in repair order."""
        found: list[tuple[str, BlobStore]] = []
        if store == blob_refs.MAIN_STORE:
            if tier == HOT and self.archive is not None:
                found.append(("archive", self.archive))
            elif tier in (MOVING, ARCHIVE):
                found.append(("hot", self.hot))
        if self.replica is not None:
            found.append(("replica", self.replica))
        return found


def stores_for(settings: Settings, blobs: BlobStore) -> Stores:
    """The lifecycle's stores for a runtime whose blob store is ``blobs`` (a tiered store or a plain one)."""
    from archipel.platform.storage_tiers import TieredBlobStore

    archive: BlobStore | None
    cache = None
    if isinstance(blobs, TieredBlobStore):
        hot, archive, cache = blobs.hot, blobs.archive, blobs.cache
    else:
        hot = blobs
        archive = open_blob_store(settings.archive_blob_url) if settings.archive_blob_url else None
    replica = open_blob_store(settings.replica_blob_url) if settings.replica_blob_url else None
    return Stores(settings, hot, archive, replica, cache)


def sync_inventory(db: Database, store: str) -> int:
    """Add a row for every blob of ``store`` that a source references and that has none yet; return how many.

    One INSERT ... SELECT: the references never pass through Python.
    """
    refs = blob_refs.references(store)
    if refs is None:
        return 0
    pb = PreservedBlob.__table__
    known = exists().where(pb.c.store == store, pb.c.key == refs.c.key)
    missing = (
        select(literal(store), refs.c.key, func.max(refs.c.sha256), func.max(refs.c.size))
        .where(~known)
        .group_by(refs.c.key)
    )
    with db.write() as s:
        result = s.execute(insert(PreservedBlob).from_select(["store", "key", "sha256", "size"], missing))
    added = max(int(getattr(result, "rowcount", 0) or 0), 0)
    if added:
        log.info("event=storage_inventory store=%s added=%d", store, added)
    return added


def forget_blob(db: Database, stores: Stores, key: str, store: str = blob_refs.MAIN_STORE) -> None:
    """Delete every copy of ``key`` (hot, archive, replica, read cache) and its preservation row.

    For a deletion (retention): call it once no row references ``key`` any more, after that row's deletion is
    committed. Each step is idempotent, so a crash halfway is finished by calling it again.
    """
    places = [stores.primary(store)]
    if store == blob_refs.MAIN_STORE and stores.archive is not None:
        places.append(stores.archive)
    if stores.replica is not None:
        places.append(stores.replica)
    for place in places:
        place.delete(key)
    if store == blob_refs.MAIN_STORE and stores.cache is not None:
        stores.cache.discard(key)
    with db.write() as s:
        row = s.get(PreservedBlob, (store, key))
        if row is not None:
            s.delete(row)
    log.info("event=storage_forget store=%s key=%s", store, key)


def sha256_of(store: BlobStore, key: str) -> str:
    """The SHA-256 of the bytes stored under ``key``, read in chunks; raises :class:`BlobNotFound`."""
    digest = hashlib.sha256()
    with contextlib.closing(store.open(key)) as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def holds_good_copy(store: BlobStore, key: str, sha256: str) -> bool:
    """Whether ``store`` holds ``key`` with the expected bytes."""
    try:
        return sha256_of(store, key) == sha256
    except BlobNotFound:
        return False


def verified_copy(src: BlobStore, dst: BlobStore, key: str, sha256: str, spool: Path) -> None:
    """Copy ``key`` from ``src`` to ``dst`` and check its SHA-256 on the way and again as ``dst`` returns it.

    Raises :class:`BlobCorrupt` when either hash differs (nothing wrong is left in ``dst`` by the first; the
    second removes the bad copy), :class:`BlobNotFound` when ``src`` lacks the key.
    """
    tmp = spool / f"{key}.{uuid.uuid4().hex}"
    digest = hashlib.sha256()
    try:
        with contextlib.closing(src.open(key)) as f, open(tmp, "wb") as out:
            while chunk := f.read(_CHUNK):
                digest.update(chunk)
                out.write(chunk)
        if digest.hexdigest() != sha256:
            raise BlobCorrupt(key, sha256, digest.hexdigest())
        # put_file keeps an existing object as it is: a bad one must go first (the good copy is in the spool).
        if dst.exists(key) and not holds_good_copy(dst, key, sha256):
            dst.delete(key)
        dst.put_file(key, tmp)
    finally:
        tmp.unlink(missing_ok=True)
    found = sha256_of(dst, key)
    if found != sha256:
        dst.delete(key)
        raise BlobCorrupt(key, sha256, found)
