"""Blob stores: where original bytes live, apart from the index that describes them.

A blob store holds immutable objects under string keys. ``put`` returns only once the bytes are durable
(fsynced file and directory on the filesystem store), so a caller may acknowledge a sender right after
committing the index row that names the key.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import mmap
import os
import shutil
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, Protocol, cast, runtime_checkable
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


@runtime_checkable
class BlobDraft(Protocol):
    """A content-addressed blob written piece by piece as its bytes arrive; its key is its SHA-256, known once
    the last piece is written.

    ``write`` every piece, ``close`` (which returns the key), then ``place`` to make it durable under that key,
    or ``discard`` at any point to drop it. Nothing is visible under a key before ``place``.
    """

    size: int
    #: The SHA-256 of the pieces so far. A caller that hands pieces to another thread to write may hash them
    #: itself, into this, and write them with :meth:`write_hashed`.
    hasher: hashlib._Hash

    def write(self, piece: bytes | memoryview) -> None:
        """Append ``piece`` (hashed and written at once)."""

    def write_hashed(self, piece: bytes | memoryview) -> None:
        """Append ``piece``, which the caller has added to :attr:`hasher` already."""

    def close(self) -> str:
        """No more pieces: return the blob's key, the SHA-256 of everything written, in hex."""

    def place(self) -> bool:
        """Store the closed draft durably under its key, as ``put`` would; return whether this created the
        blob (False: a blob with the same bytes was there already)."""

    def discard(self) -> None:
        """Drop the draft and whatever it wrote (a no-op once placed)."""


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

    def sweep_temporary(self, older_than: float | None = None) -> int:
        """Remove half-written temporary files left by a crash; return how many. With ``older_than`` (epoch
        time), only those untouched since then: younger ones may belong to another process still writing."""


class FileBlobStore:
    """Blobs as files under ``root/objects/ab/cd/KEY``; writes go through ``root/tmp`` and an atomic rename."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.objects = root / "objects"
        self.tmp = root / "tmp"
        self.objects.mkdir(parents=True, exist_ok=True)
        self.tmp.mkdir(parents=True, exist_ok=True)
        #: Drafts write with ``O_DIRECT`` until the filesystem refuses it once (:class:`FileBlobDraft`).
        self.direct_io = hasattr(os, "O_DIRECT")

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
        if _exists(parent):
            return []  # one system call in an archive that is not young
        created = []
        if not _exists(parent.parent):
            parent.parent.mkdir(exist_ok=True)
            created.append(parent.parent)
        parent.mkdir(exist_ok=True)  # made meanwhile by another writer: flushed once more, harmlessly
        created.append(parent)
        return created

    def _holds(self, final: Path, data: bytes) -> bool:
        """Whether the file at ``final`` holds exactly ``data``; if so, make sure it is durable.

        Its writer may be another thread or process that has not flushed it yet, so it is flushed here.
        """
        return self._holds_same(final, len(data), lambda content: content == data)

    def _holds_same(self, final: Path, size: int, same: Callable[[bytes], bool]) -> bool:
        """Whether the file at ``final`` has ``size`` bytes that ``same`` accepts; if so, flush it."""
        try:
            fd = os.open(final, os.O_RDONLY)
        except FileNotFoundError:
            return False
        try:
            if os.fstat(fd).st_size != size:
                return False
            with open(fd, "rb", closefd=False) as f:
                if not same(f.read()):
                    return False
            os.fsync(fd)
        finally:
            os.close(fd)
        _fsync_dir(final.parent)
        _fsync_dir(final.parent.parent)
        return True

    def draft(self) -> FileBlobDraft:
        """A blob to write as its bytes arrive, placed under its SHA-256 once whole (see :class:`BlobDraft`)."""
        return FileBlobDraft(self)

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

    def sweep_temporary(self, older_than: float | None = None) -> int:
        """Remove the temporary files last written before ``older_than`` (default: now). A draft that another
        process is still receiving is written to as its bytes arrive, so a grace period spares it."""
        removed = 0
        cutoff = time.time() if older_than is None else older_than
        for entry in self.tmp.iterdir():
            with contextlib.suppress(FileNotFoundError):
                if entry.stat().st_mtime <= cutoff:
                    entry.unlink(missing_ok=True)
                    removed += 1
        return removed


#: Writes that bypass the page cache (``O_DIRECT``) are whole blocks of this size from a buffer aligned to it.
_BLOCK = 4096
#: A draft writes what it holds once it holds this much: each piece of a data set goes to disk as it arrives.
_WRITE_AT = 64 * 1024
#: The size of a draft's aligned buffer.
_BUFFER = 1 << 20


class _AlignedBuffers:
    """Page-aligned buffers for direct writes, reused: a fresh mapping costs a page fault per page."""

    def __init__(self, keep: int = 16) -> None:
        self.keep = keep
        self._free: list[mmap.mmap] = []
        self._lock = threading.Lock()

    def take(self) -> mmap.mmap:
        with self._lock:
            if self._free:
                return self._free.pop()
        return mmap.mmap(-1, _BUFFER + _BLOCK)

    def give(self, buffer: mmap.mmap) -> None:
        with self._lock:
            if len(self._free) < self.keep:
                self._free.append(buffer)
                return
        buffer.close()


_aligned = _AlignedBuffers()


class FileBlobDraft:
    """A :class:`BlobDraft` of a :class:`FileBlobStore`: a temporary file that each piece is hashed into and
    written to at once, moved under its digest by :meth:`place` as ``put`` moves a file.

    A receiver writes a data set with it while the rest of the data set is still on the network, so that only
    the flush of the last few kilobytes and of the file's metadata is left when the last piece arrives.

    Where the filesystem allows it, the file is written with ``O_DIRECT``, in whole blocks gathered in an
    aligned buffer: each write goes to the disk at once, and the flush that :meth:`place` waits for has little
    left to do. Writing a new file through the page cache costs a fresh page per 4 KiB (on a virtual machine,
    about 1 ms per 0.5 MB, more than the disk write), and a newly stored object is rarely read at once. Elsewhere
    (tmpfs, some network filesystems) it is written through the page cache. The temporary file is the sweep's
    until it is placed.
    """

    def __init__(self, store: FileBlobStore) -> None:
        self.store = store
        self.path = store.tmp / f"draft.{uuid.uuid4().hex}"
        self.size = 0
        self.hasher = hashlib.sha256()
        self._key = ""
        #: The aligned buffer of a direct draft; ``None`` when written through the page cache.
        self._buffer: mmap.mmap | None = None
        self._held = 0  # bytes in the buffer not yet written
        self._written = 0  # bytes of the file written (a multiple of _BLOCK while direct)
        self._fd: int | None = None
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL
        if store.direct_io:
            try:
                self._fd = os.open(self.path, flags | os.O_DIRECT, 0o640)
                self._buffer = _aligned.take()
            except OSError:
                store.direct_io = False  # not on this filesystem: through the page cache from now on
        if self._fd is None:
            self._fd = os.open(self.path, flags, 0o640)

    def write(self, piece: bytes | memoryview) -> None:
        """Hash and write ``piece``."""
        if self._fd is None or self._key:
            raise ValueError("the draft is closed")
        self.hasher.update(piece)
        self.write_hashed(piece)

    def write_hashed(self, piece: bytes | memoryview) -> None:
        """Write ``piece``, hashed into :attr:`hasher` by the caller."""
        if self._fd is None or self._key:
            raise ValueError("the draft is closed")
        self.size += len(piece)
        if self._buffer is None:
            _write_all(self._fd, piece)
            return
        view = memoryview(piece)
        while view:
            taken = min(_BUFFER - self._held, len(view))
            self._buffer[self._held : self._held + taken] = view[:taken]
            self._held += taken
            view = view[taken:]
            if self._held >= _WRITE_AT:
                self._write_blocks()

    def _write_blocks(self, tail: bool = False) -> None:
        """Write the whole blocks held (with ``tail``, the rest too, padded to a block: the file is cut to its
        size afterwards); keep the remainder at the buffer's start."""
        buffer, fd = cast(mmap.mmap, self._buffer), cast(int, self._fd)
        end = -(-self._held // _BLOCK) * _BLOCK if tail else self._held // _BLOCK * _BLOCK
        if tail:
            buffer[self._held : end] = bytes(end - self._held)
        with memoryview(buffer) as view:
            done = 0
            while done < end:
                try:
                    written = os.pwrite(fd, view[done:end], self._written + done)
                except OSError as exc:
                    if exc.errno == errno.EINVAL:
                        self.store.direct_io = False  # opened, but not written to so: not again
                    raise
                if written % _BLOCK and done + written < end:
                    raise OSError(f"short direct write of {written} bytes to {self.path.name}")
                done += written
        left = max(self._held - end, 0)
        if left:
            buffer.move(0, end, left)
        self._held = left
        self._written += end

    def close(self) -> str:
        """The key: the SHA-256 of every piece written."""
        if not self._key:
            if self._fd is None:
                raise ValueError("the draft was discarded")
            self._key = self.hasher.hexdigest()
        return self._key

    def place(self) -> bool:
        """Flush the file and move it under its key (see ``FileBlobStore.put``); return whether it was new."""
        key = self.close()
        fd = cast(int, self._fd)
        store = self.store
        final = store.path(key)
        # As few system calls as possible: each one gives the GIL away, and this thread may then wait for the
        # receiving threads' Python to give it back.
        try:
            if _exists(final) and store._holds_same(final, self.size, self._same):
                self._drop()
                return False
            if self._buffer is not None:
                if self._held:
                    self._write_blocks(tail=True)
                    os.ftruncate(fd, self.size)
                self._release()
            created = store._fan_out(final.parent)
            os.replace(self.path, final)
            flushing = [
                _flushers().submit(_fsync_dir, d) for d in (final.parent, *(c.parent for c in created))
            ]
            os.fsync(fd)
        except BaseException:
            self._drop()
            raise
        self._fd = None
        os.close(fd)
        for done in flushing:
            done.result()
        return True

    def _same(self, content: bytes) -> bool:
        return hashlib.sha256(content).hexdigest() == self._key

    def discard(self) -> None:
        """Close and remove the temporary file (nothing once placed)."""
        if self._fd is not None:
            self._drop()

    def _release(self) -> None:
        buffer, self._buffer = self._buffer, None
        if buffer is not None:
            _aligned.give(buffer)

    def _drop(self) -> None:
        self._release()
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)
        self.path.unlink(missing_ok=True)


def _exists(path: Path) -> bool:
    """``path.exists()`` in one system call, without pathlib's wrapping."""
    try:
        os.stat(path)
    except FileNotFoundError:
        return False
    return True


def _write_all(fd: int, data: bytes | memoryview) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


class LazyPool:
    """A process-wide thread pool, made on first use (a process that never needs it starts no thread)."""

    def __init__(self, workers: int, prefix: str) -> None:
        self.workers = workers
        self.prefix = prefix
        self._pool: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()

    def __call__(self) -> ThreadPoolExecutor:
        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix=self.prefix)
            return self._pool


#: Threads that flush directories while the caller flushes the file it renamed into them.
_flushers = LazyPool(4, "archipel-dirsync")


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def drafts(store: BlobStore) -> Callable[[], BlobDraft] | None:
    """What writes a blob into ``store`` as its bytes arrive (:class:`BlobDraft`), or ``None`` when the store
    takes whole blobs only (an object store, whose upload waits for the whole object anyway)."""
    maker = getattr(store, "draft", None)
    return cast(Callable[[], BlobDraft], maker) if callable(maker) else None


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
