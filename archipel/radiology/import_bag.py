"""Importing a BagIt bag made by ``archipel export --format bagit`` (or any bag of Part-10 files).

The bag is checked first, every checksum (``export_bagit.checked_bag``): a bag that fails is refused with the
file that failed, and nothing of it is imported. Its Part-10 files then go through :meth:`Archive.store`, each
with the issuer its study had where it was exported (``archipel-export.json``), so that a file without
IssuerOfPatientID is linked to the same site's patient; each study's confidentiality codes are set again (added
to any it has: an import never lifts a protection); the documents come back with their metadata.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import select

from archipel.platform import audit, confidentiality
from archipel.platform.authn import Principal
from archipel.platform.db import Database
from archipel.radiology.archive import Archive
from archipel.radiology.export_bagit import checked_bag, payload
from archipel.radiology.export_documents import FOLDER as DOCUMENTS
from archipel.radiology.export_documents import DocumentsRefused, restore
from archipel.radiology.models import Study

METADATA = "archipel-export.json"
DICOM = "dicom"


@dataclass(frozen=True)
class BagFile:
    """One Part-10 file of a bag and the issuer of its patient (empty: the importer's default)."""

    path: Path
    issuer: str


def _files(root: Path) -> list[BagFile]:
    if not (root / "data" / METADATA).is_file():
        return [BagFile(p, "") for p in payload(root, DICOM)]
    return [
        BagFile(root / "data" / str(item["path"]), str(study.get("issuer", "")))
        for study in _studies(root)
        for series in study.get("series", [])
        for item in series.get("instances", [])
    ]


def _studies(root: Path) -> list[dict[str, Any]]:
    meta_path = root / "data" / METADATA
    if not meta_path.is_file():
        return []
    return list(json.loads(meta_path.read_text(encoding="utf-8")).get("studies", []))


def restore_codes(db: Database, root: Path, actor: Principal, source: str) -> int:
    """Add to each stored study of the checked bag the confidentiality codes it had where it was exported;
    return how many studies changed (each change audited). A study whose codes this platform does not know is
    left as it is."""
    changed = 0
    for study in _studies(root):
        raw = study.get("confidentiality") or []
        try:
            codes = confidentiality.validate(raw if isinstance(raw, list) else [])
        except confidentiality.ConfidentialityError:
            continue
        if not codes:
            continue
        uid = str(study.get("study_uid", ""))
        with db.write() as s:
            row = s.execute(select(Study).where(Study.study_uid == uid)).scalar_one_or_none()
            if row is None or codes <= confidentiality.decode(row.confidentiality):
                continue
            row.confidentiality = confidentiality.encode(confidentiality.decode(row.confidentiality) | codes)
        audit.record(
            db, actor, audit.PATIENT_RECORD, "update:confidentiality",
            patient=f"{study.get('issuer', '')}/{study.get('patient_id', '')}",
            obj=f"study {uid} set={','.join(sorted(codes))}", source=source, detail="restored from an export bag",
        )  # fmt: skip
        changed += 1
    return changed


def import_bag(
    archive: Archive,
    path: Path,
    store: Callable[[str, Callable[[], bytes], str], None],
    *,
    actor: Principal,
    source: str,
    default_issuer: str = "",
) -> int:
    """Check the bag at ``path`` (folder or ZIP), then ``store(name, read, issuer)`` each of its Part-10 files,
    set its studies' confidentiality codes again and restore its documents; return how many documents were
    restored. Raises ``BagRefused`` (nothing imported) or ``DocumentsRefused`` (the images are in, the
    documents are not)."""
    with checked_bag(path) as root:
        for f in _files(root):
            store(
                f"{path}!{f.path.relative_to(root).as_posix()}", f.path.read_bytes, f.issuer or default_issuer
            )
        restore_codes(archive.db, root, actor, source)
        if not (root / "data" / DOCUMENTS).is_dir():
            return 0
        return restore(archive.db, archive.blobs, root, actor, source)


__all__ = ["DocumentsRefused", "import_bag"]
