"""A blob store of two tiers: hot first, then archive, behind the one ``BlobStore`` interface.

Writes always go to hot. A read looks in hot, then in the archive; what it fetched from the archive is kept in a
bounded local read cache, so a study reopened after years is slow once, not at every frame. The tiering job
(``tiering``) moves old blobs from hot to archive; this class only has to find them wherever they are.

Why a local read cache rather than promoting the blob back to hot: a read then stays a read (no database write
on a WADO or C-GET path, no race with a tiering run deciding the same blob's tier), and the cache's size is
bounded by a setting; its price is that each machine warms its own cache (decision 0039).
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from archipel.platform.settings import Settings
from archipel.platform.storage import BlobNotFound, BlobStore, FileBlobStore, open_blob_store

log = logging.getLogger("archipel.storage")


class ArchiveReadCache:
    """Blobs fetched from the archive, in a local folder bounded to ``max_bytes``; the least recently read go
    first. Blobs larger than a quarter of the bound are not cached (range reads go to the archive)."""

    def __init__(self, root: Path, max_bytes: int) -> None:
        self.files = FileBlobStore(root)
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        self._used: int | None = None

    def cacheable(self, size: int) -> bool:
        """Whether a blob of ``size`` bytes is kept in the cache."""
        return 0 < size <= self.max_bytes // 4

    def lookup(self, key: str) -> Path | None:
        """The cached file of ``key``, marked as just read, or ``None``."""
        path = self.files.path(key)
        try:
            os.utime(path)
        except FileNotFoundError:
            return None
        return path

    def fill(self, archive: BlobStore, key: str) -> Path:
        """Fetch ``key`` from ``archive`` into the cache (streamed) and return its cached file."""
        tmp = self.files.tmp / f"fill-{key}.{uuid.uuid4().hex}"
        try:
            with contextlib.closing(archive.open(key)) as src, open(tmp, "wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
            size = tmp.stat().st_size
            self.files.put_file(key, tmp)
        finally:
            tmp.unlink(missing_ok=True)
        self._account(size)
        return self.files.path(key)

    def discard(self, key: str) -> None:
        """Drop ``key`` from the cache."""
        self.files.delete(key)

    def _account(self, added: int) -> None:
        with self._lock:
            if self._used is None:
                self._used = self._scan()[1]
            else:
                self._used += added
            if self._used <= self.max_bytes:
                return
            # Other processes fill the same folder: rescan before evicting, so the count is the folder's own.
            entries, self._used = self._scan()
            for _mtime, size, path in sorted(entries):
                if self._used <= self.max_bytes:
                    break
                path.unlink(missing_ok=True)
                self._used -= size
                log.info("event=archive_cache_evict key=%s bytes=%d", path.name, size)

    def _scan(self) -> tuple[list[tuple[float, int, Path]], int]:
        entries = []
        for path in self.files.objects.glob("*/*/*"):
            with contextlib.suppress(FileNotFoundError):
                st = path.stat()
                entries.append((st.st_mtime, st.st_size, path))
        return entries, sum(e[1] for e in entries)


class TieredBlobStore:
    """``hot`` then ``archive``, with an optional read cache of archive reads; writes go to ``hot``."""

    def __init__(self, hot: BlobStore, archive: BlobStore, cache: ArchiveReadCache | None = None) -> None:
        self.hot = hot
        self.archive = archive
        self.cache = cache
        # Writes go to the hot tier: a blob written as it arrives too, when the hot tier can (storage.drafts).
        maker = getattr(hot, "draft", None)
        if maker is not None:
            self.draft = maker

    def put(self, key: str, data: bytes) -> None:
        self.hot.put(key, data)

    def put_file(self, key: str, path: Path) -> None:
        self.hot.put_file(key, path)

    def get(self, key: str) -> bytes:
        try:
            return self.hot.get(key)
        except BlobNotFound:
            cached = self._cached(key)
            if cached is not None:
                return cached.read_bytes()
            log.info("event=archive_read key=%s whole=1", key)
            return self.archive.get(key)

    def read_range(self, key: str, offset: int, length: int) -> bytes:
        try:
            return self.hot.read_range(key, offset, length)
        except BlobNotFound:
            cached = self._cached(key)
            if cached is None:
                log.info("event=archive_read key=%s offset=%d length=%d", key, offset, length)
                return self.archive.read_range(key, offset, length)
            with open(cached, "rb") as f:
                f.seek(offset)
                return f.read(length)

    def open(self, key: str) -> BinaryIO:
        try:
            return self.hot.open(key)
        except BlobNotFound:
            cached = self._cached(key)
            if cached is not None:
                return open(cached, "rb")
            log.info("event=archive_read key=%s whole=1", key)
            return self.archive.open(key)

    def _cached(self, key: str) -> Path | None:
        """The cached copy of an archived ``key``, fetched into the cache first when it fits; ``None`` when the
        cache is off or the blob too large for it. Raises :class:`BlobNotFound` when the archive lacks it too."""
        if self.cache is None:
            return None
        path = self.cache.lookup(key)
        if path is not None:
            return path
        if not self.cache.cacheable(self.archive.size(key)):
            return None
        log.info("event=archive_read key=%s cached=1", key)
        return self.cache.fill(self.archive, key)

    def exists(self, key: str) -> bool:
        return self.hot.exists(key) or self.archive.exists(key)

    def size(self, key: str) -> int:
        try:
            return self.hot.size(key)
        except BlobNotFound:
            return self.archive.size(key)

    def delete(self, key: str) -> None:
        self.hot.delete(key)
        self.archive.delete(key)
        if self.cache is not None:
            self.cache.discard(key)

    def keys(self, older_than: float | None = None) -> Iterator[str]:
        yield from self.hot.keys(older_than)
        for key in self.archive.keys(older_than):
            if not self.hot.exists(key):
                yield key

    def sweep_temporary(self, older_than: float | None = None) -> int:
        removed = self.hot.sweep_temporary(older_than) + self.archive.sweep_temporary(older_than)
        if self.cache is not None:
            removed += self.cache.files.sweep_temporary()
        return removed


def open_runtime_store(settings: Settings) -> BlobStore:
    """The runtime's blob store: the hot store alone, or hot and archive tiers when ``archive_blob_url`` is set."""
    hot = open_blob_store(settings.effective_blob_url)
    if not settings.archive_blob_url:
        return hot
    cache = None
    if settings.archive_cache_mb > 0:
        folder = (
            Path(settings.archive_cache_dir)
            if settings.archive_cache_dir
            else settings.data_dir / "archive-cache"
        )
        cache = ArchiveReadCache(folder, settings.archive_cache_mb << 20)
    return TieredBlobStore(hot, open_blob_store(settings.archive_blob_url), cache)
