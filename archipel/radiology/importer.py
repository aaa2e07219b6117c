"""Importing files: single files, folders, ZIP archives, DICOMDIR media and BagIt bags (``import_bag``), with a
summary of what was refused.

Each file goes through :meth:`Archive.store`, the same path as C-STORE and STOW, so the same validation and
durability apply.
"""

from __future__ import annotations

import zipfile
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from pydicom import dcmread

from archipel.platform.authn import Principal
from archipel.radiology.archive import Archive
from archipel.radiology.dicomfile import InvalidInstance
from archipel.radiology.export_bagit import BagRefused, is_bag
from archipel.radiology.import_bag import DocumentsRefused, import_bag

MEDIA_STORAGE_DIRECTORY = "1.2.840.10008.1.3.10"


@dataclass
class ImportSummary:
    """Counts per outcome, and each refused item with its reason."""

    counts: Counter[str] = field(default_factory=Counter)
    refused: list[tuple[str, str]] = field(default_factory=list)

    def as_dict(self) -> dict[str, object]:
        """The summary as JSON-ready data."""
        return {
            "stored": self.counts["stored"],
            "already_stored": self.counts["already-stored"],
            "replaced": self.counts["replaced"],
            "skipped": self.counts["skipped"],
            "documents": self.counts["documents"],
            "refused": [{"item": item, "reason": reason} for item, reason in self.refused],
        }


@dataclass(frozen=True)
class ImportItem:
    """One file to import: a name to report, and how to read it."""

    name: str
    read: Callable[[], bytes]


def _is_dicomdir(path: Path) -> bool:
    if path.name.upper() != "DICOMDIR":
        return False
    try:
        ds = dcmread(path, stop_before_pixels=True, specific_tags=["MediaStorageSOPClassUID"])
    except Exception:
        return False
    return str(ds.file_meta.get("MediaStorageSOPClassUID", "")) == MEDIA_STORAGE_DIRECTORY


def _dicomdir_items(path: Path) -> Iterator[ImportItem]:
    ds = dcmread(path)
    root = path.parent
    for record in ds.get("DirectoryRecordSequence", []):
        ref = record.get("ReferencedFileID")
        if not ref:
            continue
        parts = [ref] if isinstance(ref, str) else list(ref)
        target = root.joinpath(*parts)
        if not target.exists():  # media written with lower-case names
            target = root.joinpath(*[p.lower() for p in parts])
        yield ImportItem(str(target), target.read_bytes)


def _zip_items(path: Path) -> Iterator[ImportItem]:
    with zipfile.ZipFile(path) as zf:
        for info in zf.infolist():
            if info.is_dir():
                continue
            name = f"{path}!{info.filename}"
            yield ImportItem(name, partial(zf.read, info))


def iter_items(paths: list[Path]) -> Iterator[ImportItem]:
    """Every file named by ``paths``, descending into folders, ZIP archives and DICOMDIRs."""
    for path in paths:
        if path.is_dir():
            dicomdir = next((p for p in path.iterdir() if p.name.upper() == "DICOMDIR"), None)
            if dicomdir is not None and _is_dicomdir(dicomdir):
                yield from _dicomdir_items(dicomdir)
                continue
            for child in sorted(path.rglob("*")):
                if child.is_file():
                    yield from iter_items([child])
        elif zipfile.is_zipfile(path) and path.suffix.lower() == ".zip":
            yield from _zip_items(path)
        elif _is_dicomdir(path):
            yield from _dicomdir_items(path)
        else:
            yield ImportItem(str(path), path.read_bytes)


def count_items(paths: list[Path]) -> int:
    """How many files :func:`iter_items` will yield (for a progress bar's total)."""
    total = 0
    for path in paths:
        if is_bag(path):
            total += _bag_count(path)
        elif path.is_dir():
            total += sum(1 for p in path.rglob("*") if p.is_file() and p.name.upper() != "DICOMDIR")
        elif zipfile.is_zipfile(path) and path.suffix.lower() == ".zip":
            with zipfile.ZipFile(path) as zf:
                total += sum(1 for i in zf.infolist() if not i.is_dir())
        else:
            total += 1
    return total


def _bag_count(path: Path) -> int:
    # The Part-10 files only: the progress bar ticks once per stored file (documents are restored after).
    if path.is_dir():
        return sum(1 for p in (path / "data" / "dicom").rglob("*") if p.is_file())
    with zipfile.ZipFile(path) as zf:
        return sum(1 for name in zf.namelist() if "/data/dicom/" in f"/{name}" and not name.endswith("/"))


#: Who restores a bag's documents when the caller names no one (the audit trail's actor).
IMPORTER = Principal(subject="import", role="system", kind="system")


def import_paths(
    archive: Archive,
    paths: list[Path],
    *,
    default_issuer: str = "",
    source: str = "import",
    on_item: Callable[[str, str], None] | None = None,
    actor: Principal = IMPORTER,
) -> ImportSummary:
    """Store every file under ``paths``; ``on_item(name, outcome)`` is called after each one. A BagIt bag is
    checked whole first: a bag that fails its checksums is refused, naming the file, and nothing of it is
    stored; its documents are restored too (as ``actor``)."""
    summary = ImportSummary()
    missing = [p for p in paths if not p.exists()]
    for p in missing:
        summary.refused.append((str(p), "no such file or folder"))

    def store(name: str, read: Callable[[], bytes], issuer: str) -> None:
        outcome = _store_one(archive, summary, ImportItem(name, read), issuer, source)
        if on_item is not None:
            on_item(name, outcome)

    for path in (p for p in paths if p.exists()):
        if is_bag(path):
            try:
                restored = import_bag(
                    archive, path, store, actor=actor, source=source, default_issuer=default_issuer
                )
                summary.counts["documents"] += restored
            except (BagRefused, DocumentsRefused) as exc:
                summary.refused.append((str(path), exc.reason))
            continue
        for item in iter_items([path]):
            store(item.name, item.read, default_issuer)
    return summary


def _store_one(archive: Archive, summary: ImportSummary, item: ImportItem, issuer: str, source: str) -> str:
    try:
        data = item.read()
        if data[128:132] == b"DICM" and _is_directory_object(data):
            summary.counts["skipped"] += 1
            return "skipped"
        result = archive.store(data, source_ae=source, default_issuer=issuer)
        summary.counts[result.status] += 1
        return result.status
    except InvalidInstance as exc:
        summary.refused.append((item.name, exc.reason))
    except OSError as exc:
        summary.refused.append((item.name, f"cannot read: {exc.strerror or exc}"))
    return "refused"


def _is_directory_object(data: bytes) -> bool:
    return MEDIA_STORAGE_DIRECTORY.encode() in data[132:512]
