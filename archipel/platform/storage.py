"""Blob stores: where original bytes live, apart from the index that describes them.

A blob store holds immutable objects under string keys. ``put`` returns only once the bytes are durable
(fsynced file and directory on the filesystem store), so a caller may acknowledge a sender right after
committing the index row that names the key.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO, Protocol
from urllib.parse import urlparse


class BlobNotFound(KeyError):
    """No blob is stored under the key."""


class BlobStore(Protocol):
    """Interface every blob backend implements (filesystem now, S3 later)."""

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
        if not key or "/" in key or key.startswith("."):
            raise ValueError(f"invalid blob key {key!r}")
        return self.objects / key[:2] / key[2:4] / key

    def put(self, key: str, data: bytes) -> None:
        final = self.path(key)
        if final.exists():
            return
        tmp = self.tmp / f"{key}.{uuid.uuid4().hex}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640)
        try:
            view = memoryview(data)
            while view:
                written = os.write(fd, view)
                view = view[written:]
            os.fsync(fd)
        finally:
            os.close(fd)
        parent = final.parent
        if not parent.exists():
            # A new directory entry is durable once its parent is fsynced; fsync only the parents that changed.
            if not parent.parent.exists():
                parent.parent.mkdir(exist_ok=True)
                _fsync_dir(self.objects)
            parent.mkdir(exist_ok=True)
            _fsync_dir(parent.parent)
        os.replace(tmp, final)
        _fsync_dir(parent)

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


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def open_blob_store(url: str) -> BlobStore:
    """The blob store named by ``url`` (``file:///abs/path``)."""
    parsed = urlparse(url)
    if parsed.scheme == "file":
        return FileBlobStore(Path(parsed.path))
    raise ValueError(f"unsupported blob store URL scheme {parsed.scheme!r} (supported: file)")
