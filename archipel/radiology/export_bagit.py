"""BagIt 1.0 packages (RFC 8493): writing one as the payload is copied, and checking one before it is imported.

The writer hashes each payload file while it copies it (one pass over the stored bytes) and writes
``bagit.txt``, ``manifest-sha256.txt``, ``bag-info.txt`` and ``tagmanifest-sha256.txt`` itself: the ``bagit``
library's ``make_bag`` writes version 0.97 and changes the process's working directory, which a server must not
do. Reading is the library's: :func:`checked_bag` runs its full validation (structure, Payload-Oxum, every
payload and tag checksum) and turns a failure into :class:`BagRefused` naming the file that failed.
"""

from __future__ import annotations

import hashlib
import io
import shutil
import tempfile
import zipfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import IO

import bagit

CHUNK = 1 << 20
TAG_FILES = ("bagit.txt", "bag-info.txt", "manifest-sha256.txt")


class BagRefused(ValueError):
    """The bag cannot be imported; ``reason`` names the file that failed and why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass
class BagWriter:
    """A bag being written under ``root``: add payload files with :meth:`add`, then :meth:`close`.

    Files are not fsynced one by one: the caller makes the finished package durable once (an fsync per file
    was two thirds of an export's time)."""

    root: Path
    _manifest: dict[str, str] = field(default_factory=dict)
    _bytes: int = 0

    def __post_init__(self) -> None:
        (self.root / "data").mkdir(parents=True, exist_ok=False)

    def add(self, relative: str, source: IO[bytes]) -> tuple[str, int]:
        """Copy ``source`` to ``data/relative`` and return its SHA-256 and size."""
        target = self.root / "data" / PurePosixPath(relative)
        target.parent.mkdir(parents=True, exist_ok=True)
        digest, size = hashlib.sha256(), 0
        with target.open("wb") as out:
            while chunk := source.read(CHUNK):
                digest.update(chunk)
                out.write(chunk)
                size += len(chunk)
        self._manifest[f"data/{relative}"] = digest.hexdigest()
        self._bytes += size
        return digest.hexdigest(), size

    def add_bytes(self, relative: str, data: bytes) -> tuple[str, int]:
        """:meth:`add` for content already in memory."""
        return self.add(relative, io.BytesIO(data))

    def close(self, info: Mapping[str, str]) -> None:
        """Write the tag files: ``bag-info.txt`` holds ``info`` plus the Payload-Oxum."""
        self._tag("bagit.txt", "BagIt-Version: 1.0\nTag-File-Character-Encoding: UTF-8\n")
        lines = [f"{digest}  {path}\n" for path, digest in sorted(self._manifest.items())]
        self._tag("manifest-sha256.txt", "".join(lines))
        fields = {**info, "Payload-Oxum": f"{self._bytes}.{len(self._manifest)}"}
        self._tag("bag-info.txt", "".join(f"{k}: {_one_line(v)}\n" for k, v in fields.items()))
        tags = [f"{_sha256(self.root / name)}  {name}\n" for name in TAG_FILES]
        self._tag("tagmanifest-sha256.txt", "".join(tags))

    def _tag(self, name: str, text: str) -> None:
        (self.root / name).write_text(text, encoding="utf-8")


def _one_line(value: str) -> str:
    return " ".join(str(value).split())


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def is_bag(path: Path) -> bool:
    """Whether ``path`` is a bag: a folder with ``bagit.txt``, or a ZIP holding one (at its root or in one
    top folder)."""
    if path.is_dir():
        return (path / "bagit.txt").is_file()
    if path.suffix.lower() == ".zip" and zipfile.is_zipfile(path):
        return _zip_bag_root(path) is not None
    return False


def _zip_bag_root(path: Path) -> str | None:
    with zipfile.ZipFile(path) as zf:
        names = zf.namelist()
    for name in names:
        parts = PurePosixPath(name).parts
        if parts and parts[-1] == "bagit.txt" and len(parts) <= 2:
            return "/".join(parts[:-1])
    return None


def _failure(exc: bagit.BagError) -> str:
    details = getattr(exc, "details", None) or []
    for detail in details:
        if isinstance(detail, bagit.ChecksumMismatch):
            return f"{detail.path}: its SHA-256 does not match the manifest (altered)"
        if isinstance(detail, bagit.FileMissing):
            return f"{detail.path}: listed in the manifest but missing"
        if isinstance(detail, bagit.UnexpectedFile):
            return f"{detail.path}: present but not in the manifest"
    return str(exc)


def _validated(root: Path, name: str) -> Path:
    try:
        bag = bagit.Bag(str(root))
        bag.validate(completeness_only=False)
    except bagit.BagError as exc:
        raise BagRefused(f"bag {name}: {_failure(exc)}; nothing was imported") from exc
    if not any(a == "sha256" for a in bag.algorithms):
        raise BagRefused(f"bag {name}: no SHA-256 manifest; nothing was imported")
    return root


def _extract(path: Path, into: Path) -> Path:
    """Extract a zipped bag, refusing members that would land outside ``into``."""
    top = _zip_bag_root(path)
    with zipfile.ZipFile(path) as zf:
        for info in zf.infolist():
            target = (into / info.filename).resolve()
            if not target.is_relative_to(into.resolve()):
                raise BagRefused(f"bag {path}: member {info.filename} points outside the bag")
            if info.is_dir():
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            with zf.open(info) as src, target.open("wb") as out:
                shutil.copyfileobj(src, out, CHUNK)
    return into / top if top else into


@contextmanager
def checked_bag(path: Path) -> Iterator[Path]:
    """The root of the bag at ``path`` (a folder, or a ZIP extracted to a temporary folder for the block),
    once every checksum has been verified; :class:`BagRefused` otherwise."""
    if path.is_dir():
        yield _validated(path, str(path))
        return
    with tempfile.TemporaryDirectory(prefix="archipel-bag-") as tmp:
        yield _validated(_extract(path, Path(tmp)), str(path))


def bag_info(root: Path) -> dict[str, str]:
    """The fields of a bag's ``bag-info.txt``."""
    info = bagit.Bag(str(root)).info
    return {str(k): str(v) for k, v in info.items()}


def payload(root: Path, folder: str) -> list[Path]:
    """The payload files under ``data/folder`` of a checked bag, in name order."""
    base = root / "data" / folder
    return sorted(p for p in base.rglob("*") if p.is_file()) if base.is_dir() else []
