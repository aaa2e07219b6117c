"""Blob stores: where original bytes live, apart from the index that describes them.

A blob store holds immutable objects under string keys. ``put`` returns only once the bytes are durable
(fsynced file and directory on the filesystem store), so a caller may acknowledge a sender right after
committing the index row that names the key.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, Protocol
from urllib.parse import urlparse

if TYPE_CHECKING:
    from archipel.platform.settings import Settings


class BlobNotFound(KeyError):
    """No blob is stored under the key."""


class BlobStoreError(OSError):
    """The store could not carry out an operation (e.g. the object store is unreachable); the message names the
    key and the reason."""


def check_key(key: str) -> None:
    """Refuse a key that could escape the store's namespace (empty, with a slash, or hidden)."""
    if not key or "/" in key or key.startswith("."):
        raise ValueError(f"invalid blob key {key!r}")


class BlobStore(Protocol):
    """Interface every blob backend implements (:class:`FileBlobStore`, ``storage_s3.S3BlobStore``)."""

    def put(self, key: str, data: bytes) -> None:
        """Store ``data`` under ``key`` durably; an existing blob with that key is left as it is."""

    def put_file(self, key: str, path: Path) -> None:
        """Store the file at ``path`` under ``key`` durably, without reading it whole into memory.

        The file is consumed (moved or removed); an existing blob with that key is left as it is.
        """

    def get(self, key: str) -> bytes:
        """All bytes of ``key``; raises :class:`BlobNotFound`."""

    def read_range(self, key: str, offset: int, length: int) -> bytes:
        """``length`` bytes of ``key`` from ``offset``, without reading the rest."""

    def open(self, key: str) -> BinaryIO:
        """A binary file object positioned at the start of ``key``."""

    def exists(self, key: str) -> bool:
        """Whether ``key`` is stored."""

    def size(self, key: str) -> int:
        """Size of ``key`` in bytes."""

    def delete(self, key: str) -> None:
        """Remove ``key``; missing keys are ignored."""

    def keys(self, older_than: float | None = None) -> Iterator[str]:
        """Every stored key, optionally only those last written before the epoch time ``older_than``."""

    def sweep_temporary(self) -> int:
        """Remove half-written temporary files left by a crash; return how many."""


class FileBlobStore:
    """Blobs as files under ``root/objects/ab/cd/KEY``; writes go through ``root/tmp`` and an atomic rename."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.objects = root / "objects"
        self.tmp = root / "tmp"
        self.objects.mkdir(parents=True, exist_ok=True)
        self.tmp.mkdir(parents=True, exist_ok=True)

    def path(self, key: str) -> Path:
        """Filesystem path of ``key`` (whether or not it exists)."""
        check_key(key)
        return self.objects / key[:2] / key[2:4] / key

    def put(self, key: str, data: bytes) -> None:
        # Every directory entry is made first and flushed after: the file's fsync then commits the rename
        # and any new fan-out directory with it (one journal commit on ext4), and the directory fsyncs that
        # POSIX asks for find nothing left to write. The price is that a crash between the rename and the
        # fsync can leave a torn file under its final name. No index row names it (rows are committed after
        # put returns), so the start-up sweep removes it, and until then put checks an existing file's bytes
        # before trusting it.
        final = self.path(key)
        if final.exists() and self._holds(final, data):
            return
        tmp = self.tmp / f"{key}.{uuid.uuid4().hex}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640)
        try:
            view = memoryview(data)
            while view:
                written = os.write(fd, view)
                view = view[written:]
            created = self._fan_out(final.parent)
            os.replace(tmp, final)
            # The directory flushes run beside the file's: each is a disk cache flush of its own, and
            # concurrent ones share the journal commit, so the put waits about one flush instead of three.
            flushing = [
                _flushers().submit(_fsync_dir, d) for d in (final.parent, *(c.parent for c in created))
            ]
            os.fsync(fd)
        finally:
            os.close(fd)
        for done in flushing:
            done.result()

    def _fan_out(self, parent: Path) -> list[Path]:
        """Create ``parent`` (``objects/ab/cd``) and its own parent if missing; return those created."""
        created = []
        for directory in (parent.parent, parent):
            if not directory.exists():
                directory.mkdir(exist_ok=True)
                created.append(directory)
        return created

    def _holds(self, final: Path, data: bytes) -> bool:
        """Whether the file at ``final`` holds exactly ``data``; if so, make sure it is durable.

        Its writer may be another thread or process that has not flushed it yet, so it is flushed here.
        """
        try:
            fd = os.open(final, os.O_RDONLY)
        except FileNotFoundError:
            return False
        try:
            if os.fstat(fd).st_size != len(data):
                return False
            with open(fd, "rb", closefd=False) as f:
                if f.read() != data:
                    return False
            os.fsync(fd)
        finally:
            os.close(fd)
        _fsync_dir(final.parent)
        _fsync_dir(final.parent.parent)
        return True

    def put_file(self, key: str, path: Path) -> None:
        final = self.path(key)
        if final.exists():
            path.unlink(missing_ok=True)
            return
        tmp = self.tmp / f"{key}.{uuid.uuid4().hex}"
        try:
            # Same filesystem (uploads spooled under the data dir): a rename, not a copy of gigabytes.
            os.replace(path, tmp)
        except OSError:
            with open(path, "rb") as src, open(tmp, "wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
            path.unlink(missing_ok=True)
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        final.parent.mkdir(parents=True, exist_ok=True)
        _fsync_dir(self.objects)
        _fsync_dir(final.parent.parent)
        os.replace(tmp, final)
        _fsync_dir(final.parent)

    def get(self, key: str) -> bytes:
        try:
            return self.path(key).read_bytes()
        except FileNotFoundError as exc:
            raise BlobNotFound(key) from exc

    def read_range(self, key: str, offset: int, length: int) -> bytes:
        try:
            with open(self.path(key), "rb") as f:
                f.seek(offset)
                return f.read(length)
        except FileNotFoundError as exc:
            raise BlobNotFound(key) from exc

    def open(self, key: str) -> BinaryIO:
        try:
            return open(self.path(key), "rb")
        except FileNotFoundError as exc:
            raise BlobNotFound(key) from exc

    def exists(self, key: str) -> bool:
        return self.path(key).exists()

    def size(self, key: str) -> int:
        try:
            return self.path(key).stat().st_size
        except FileNotFoundError as exc:
            raise BlobNotFound(key) from exc

    def delete(self, key: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.path(key).unlink()

    def keys(self, older_than: float | None = None) -> Iterator[str]:
        for entry in self.objects.glob("*/*/*"):
            if older_than is not None and entry.stat().st_mtime >= older_than:
                continue
            yield entry.name

    def sweep_temporary(self) -> int:
        removed = 0
        cutoff = time.time()
        for entry in self.tmp.iterdir():
            if entry.stat().st_mtime <= cutoff:
                entry.unlink(missing_ok=True)
                removed += 1
        return removed


_flushers_lock = threading.Lock()
_flusher_pool: ThreadPoolExecutor | None = None


def _flushers() -> ThreadPoolExecutor:
    """Threads that flush directories while the caller flushes the file it renamed into them."""
    global _flusher_pool
    with _flushers_lock:
        if _flusher_pool is None:
            _flusher_pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="archipel-dirsync")
        return _flusher_pool


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def open_blob_store(url: str, settings: Settings | None = None) -> BlobStore:
    """The blob store named by ``url``: ``file:///abs/path`` or ``s3://BUCKET/PREFIX``.

    An S3 store takes its endpoint and region from ``settings`` (the process's settings when omitted).
    """
    parsed = urlparse(url)
    if parsed.scheme == "file":
        return FileBlobStore(Path(parsed.path))
    if parsed.scheme == "s3":
        from archipel.platform.settings import get_settings
        from archipel.platform.storage_s3 import S3BlobStore

        s = settings or get_settings()
        return S3BlobStore(parsed.netloc, parsed.path, endpoint_url=s.s3_endpoint_url, region=s.s3_region)
    raise ValueError(f"unsupported blob store URL scheme {parsed.scheme!r} (supported: file, s3)")
