"""Importing a BagIt bag made by ``archipel export --format bagit`` (or any bag of Part-10 files).

The bag is checked first, every checksum (``export_bagit.checked_bag``): a bag that fails is refused with the
file that failed, and nothing of it is imported. Its Part-10 files then go through :meth:`Archive.store`, each
with the issuer its study had where it was exported (``archipel-export.json``), so that a file without
IssuerOfPatientID is linked to the same site's patient; the documents come back with their metadata.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from archipel.platform.authn import Principal
from archipel.radiology.archive import Archive
from archipel.radiology.export_bagit import checked_bag, payload
from archipel.radiology.export_documents import FOLDER as DOCUMENTS
from archipel.radiology.export_documents import DocumentsRefused, restore

METADATA = "archipel-export.json"
DICOM = "dicom"


@dataclass(frozen=True)
class BagFile:
    """One Part-10 file of a bag and the issuer of its patient (empty: the importer's default)."""

    path: Path
    issuer: str


def _files(root: Path) -> list[BagFile]:
    meta_path = root / "data" / METADATA
    if not meta_path.is_file():
        return [BagFile(p, "") for p in payload(root, DICOM)]
    meta = json.loads(meta_path.read_text(encoding="utf-8"))
    return [
        BagFile(root / "data" / item["path"], study.get("issuer", ""))
        for study in meta.get("studies", [])
        for series in study.get("series", [])
        for item in series.get("instances", [])
    ]


def import_bag(
    archive: Archive,
    path: Path,
    store: Callable[[str, Callable[[], bytes], str], None],
    *,
    actor: Principal,
    source: str,
    default_issuer: str = "",
) -> int:
    """Check the bag at ``path`` (folder or ZIP), then ``store(name, read, issuer)`` each of its Part-10 files
    and restore its documents; return how many documents were restored. Raises ``BagRefused`` (nothing
    imported) or ``DocumentsRefused`` (the images are in, the documents are not)."""
    with checked_bag(path) as root:
        for f in _files(root):
            store(
                f"{path}!{f.path.relative_to(root).as_posix()}", f.path.read_bytes, f.issuer or default_issuer
            )
        if not (root / "data" / DOCUMENTS).is_dir():
            return 0
        return restore(archive.db, archive.blobs, root, actor, source)


__all__ = ["DocumentsRefused", "import_bag"]
