"""Export of a study's or a patient's archive as a package: a DICOM File-set with its DICOMDIR, or a BagIt bag.

Both carry the stored Part-10 files exactly as the archive keeps them (each copy is checked against the
instance's SHA-256 as it is written, so a damaged blob fails the export instead of spreading). The DICOMDIR is
pydicom's :class:`~pydicom.fileset.FileSet`'s (``dicom_media.dicomdir``): files named ``PT000000/ST000000/...``
as PS3.10 asks. The bag (``export_bagit``) holds the files under ``data/dicom/<study>/<series>/<sop>.dcm``,
the patient's documents with their metadata (``export_documents``), and ``data/archipel-export.json``: the
study/series/instance structure and each study's patient as its site knows them, never a name.

The export is a read of patient data: every study (and document) passes the access policy's ``export`` action,
decided for all before anything is written, and each is audited as an *Export* with the format.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import IO

from sqlalchemy import select, tuple_

from archipel.platform import access, access_facts, audit
from archipel.platform.authn import Principal
from archipel.platform.confidentiality import decode
from archipel.platform.identity.service import locals_of, master_of
from archipel.platform.runtime import Runtime
from archipel.platform.storage import BlobNotFound, BlobStore
from archipel.radiology import export_documents
from archipel.radiology.dicom_media import MediaFile, dicomdir
from archipel.radiology.export_bagit import BagWriter
from archipel.radiology.models import Instance, Patient, Series, Study

log = logging.getLogger("archipel.export")

METADATA = "archipel-export.json"
CHUNK = 1 << 20


class ExportFormat(StrEnum):
    """The package formats."""

    DICOMDIR = "dicomdir"
    BAGIT = "bagit"


class ExportRefused(ValueError):
    """The export cannot be made; ``reason`` says why. Nothing was written."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class ExportRequest:
    """What to export: one study, a master patient (every local identity linked to it), or one local patient."""

    study_uid: str = ""
    master_id: int | None = None
    issuer: str = ""
    patient_id: str = ""

    def describe(self) -> str:
        """The request in words (no patient name)."""
        if self.study_uid:
            return f"study {self.study_uid}"
        if self.master_id is not None:
            return f"master patient {self.master_id}"
        return f"patient {self.issuer}/{self.patient_id}"


@dataclass(frozen=True)
class ExportedInstance:
    """One stored instance to export."""

    sop_uid: str
    series_uid: str
    blob_key: str
    sha256: str
    size: int


@dataclass
class ExportedStudy:
    """One study to export, with what the policy weighs about it and its instances in series order."""

    study_uid: str
    site: str
    issuer: str
    patient_id: str
    codes: list[str]
    instances: list[ExportedInstance] = field(default_factory=list)

    @property
    def patient(self) -> str:
        """The patient as ``issuer/PatientID``."""
        return f"{self.issuer}/{self.patient_id}"


@dataclass
class ExportSummary:
    """What an export wrote."""

    format: str
    what: str
    master_id: int | None
    studies: int = 0
    series: int = 0
    instances: int = 0
    documents: int = 0
    bytes: int = 0
    out: str = ""

    def as_dict(self) -> dict[str, object]:
        """The summary as JSON-ready data."""
        return asdict(self)


def _patients(rt: Runtime, request: ExportRequest) -> tuple[int | None, list[tuple[str, str]]]:
    if request.master_id is not None:
        pairs = locals_of(rt.db, request.master_id)
        if not pairs:
            raise ExportRefused(f"no master patient {request.master_id} (or no identity linked to it)")
        return request.master_id, pairs
    if not (request.issuer and request.patient_id):
        raise ExportRefused("name a study, a master patient, or a patient ID with its issuer")
    return master_of(rt.db, request.issuer, request.patient_id), [(request.issuer, request.patient_id)]


def select_studies(
    rt: Runtime, request: ExportRequest
) -> tuple[int | None, list[tuple[str, str]], list[ExportedStudy]]:
    """The master patient (when known), the local identities and the studies ``request`` names, with their
    instances; refused (:class:`ExportRefused`) when it names nothing stored."""
    stmt = select(Study, Patient.issuer, Patient.patient_id).join(Patient, Study.patient_pk == Patient.id)
    if request.study_uid:
        stmt = stmt.where(Study.study_uid == request.study_uid)
        master, pairs = None, list[tuple[str, str]]()
    else:
        master, pairs = _patients(rt, request)
        stmt = stmt.where(tuple_(Patient.issuer, Patient.patient_id).in_(pairs))
    with rt.db.sessions() as s:
        rows = s.execute(stmt.order_by(Study.study_date, Study.id)).all()
        studies = {
            st.id: ExportedStudy(st.study_uid, st.site, issuer, pid, sorted(decode(st.confidentiality)))
            for st, issuer, pid in rows
        }
        if studies:
            found = s.execute(
                select(Series.study_pk, Series.series_uid, Instance)
                .join(Instance, Instance.series_pk == Series.id)
                .where(Series.study_pk.in_(list(studies)))
                .order_by(
                    Series.study_pk, Series.series_number, Series.id, Instance.instance_number, Instance.id
                )
            ).all()
            for study_pk, series_uid, i in found:
                studies[study_pk].instances.append(
                    ExportedInstance(i.sop_uid, series_uid, i.blob_key, i.sha256, i.size)
                )
    chosen = [st for st in studies.values() if st.instances]
    if not chosen:
        raise ExportRefused(f"{request.describe()} holds no stored instance")
    if request.study_uid:
        master = master_of(rt.db, chosen[0].issuer, chosen[0].patient_id)
    return master, pairs, chosen


def _resource(study: ExportedStudy) -> access.Resource:
    return access.Resource(
        kind="study",
        site=study.site,
        patient=study.patient,
        ident=study.study_uid,
        confidentiality=frozenset(study.codes),
    )


def authorise(
    rt: Runtime,
    principal: Principal,
    resources: list[access.Resource],
    fmt: ExportFormat,
    source: str,
) -> None:
    """Decide the export of every resource before anything is written; audit each (an *Export* with the
    format). One refusal refuses the whole export (audited, :class:`ExportRefused` naming it): a package that
    silently lacks part of a record would not restore it."""
    decided = []
    for res in resources:
        loaded, facts = access_facts.load(rt.db, principal, res, rt.clock())
        decided.append((loaded, facts, access.allow(principal, access.EXPORT, loaded, facts)))
    note = f"format={fmt.value}"
    for loaded, facts, decision in decided:
        if decision.allowed:
            continue
        try:
            access.check(
                rt.db, principal, access.EXPORT, loaded, event_type=audit.EXPORT, source=source,
                facts=facts, note=note,
            )  # fmt: skip
        except access.AccessDenied as exc:
            raise ExportRefused(f"{loaded.kind} {loaded.ident}: {exc.reason}; nothing was exported") from exc
    for loaded, facts, _ in decided:
        access.check(
            rt.db, principal, access.EXPORT, loaded, event_type=audit.EXPORT, source=source,
            facts=facts, note=note,
        )  # fmt: skip


@contextmanager
def _stored(blobs: BlobStore, item: ExportedInstance) -> Iterator[IO[bytes]]:
    try:
        with blobs.open(item.blob_key) as src:
            yield src
    except (BlobNotFound, FileNotFoundError) as exc:
        raise ExportRefused(f"instance {item.sop_uid}: its stored file is missing") from exc


def _check(item: ExportedInstance, digest: str) -> None:
    # Checked as it is copied: a damaged blob fails the export rather than travel as if it were sound.
    if digest != item.sha256:
        log.error("event=export_blob_mismatch sop_uid=%s", item.sop_uid)
        raise ExportRefused(f"instance {item.sop_uid}: its stored file does not match its SHA-256")


def _copy_checked(blobs: BlobStore, item: ExportedInstance, out: IO[bytes]) -> None:
    """Copy a stored instance to ``out``, refusing one whose bytes no longer match their SHA-256."""
    digest = hashlib.sha256()
    with _stored(blobs, item) as src:
        while chunk := src.read(CHUNK):
            digest.update(chunk)
            out.write(chunk)
    _check(item, digest.hexdigest())


def _write_dicomdir(rt: Runtime, studies: list[ExportedStudy], root: Path, tick: Callable[[], None]) -> None:
    files = [MediaFile(i.sop_uid, i.blob_key, i.size) for st in studies for i in st.instances]
    try:
        directory, ids = dicomdir(rt.blobs, files)
    except BlobNotFound as exc:
        raise ExportRefused("a stored file of the export is missing; nothing was exported") from exc
    root.mkdir(parents=True)
    (root / "DICOMDIR").write_bytes(directory)
    for st in studies:
        for item in st.instances:
            target = root.joinpath(*ids[item.sop_uid].split("/"))
            target.parent.mkdir(parents=True, exist_ok=True)
            with target.open("wb") as out:
                _copy_checked(rt.blobs, item, out)
            tick()


def _structure(master: int | None, studies: list[ExportedStudy]) -> dict[str, object]:
    out = []
    for st in studies:
        series: dict[str, list[dict[str, object]]] = {}
        for i in st.instances:
            series.setdefault(i.series_uid, []).append(
                {"sop_uid": i.sop_uid, "sha256": i.sha256, "size": i.size, "path": _bag_path(st, i)}
            )
        out.append(
            {
                "study_uid": st.study_uid,
                "site": st.site,
                "issuer": st.issuer,
                "patient_id": st.patient_id,
                "confidentiality": st.codes,
                "series": [{"series_uid": uid, "instances": items} for uid, items in series.items()],
            }
        )
    return {"version": 1, "master_id": master, "studies": out}


def _bag_path(study: ExportedStudy, item: ExportedInstance) -> str:
    return f"dicom/{study.study_uid}/{item.series_uid}/{item.sop_uid}.dcm"


def _write_bag(
    rt: Runtime,
    summary: ExportSummary,
    studies: list[ExportedStudy],
    docs: list[export_documents.ExportedDocument],
    root: Path,
    tick: Callable[[], None],
) -> None:
    bag = BagWriter(root)
    for st in studies:
        for item in st.instances:
            with _stored(rt.blobs, item) as src:
                digest, _ = bag.add(_bag_path(st, item), src)
            _check(item, digest)
            tick()
    for doc in docs:
        content, meta = export_documents.package(rt.blobs, doc)
        bag.add_bytes(doc.content_path, content)
        bag.add_bytes(doc.metadata_path, meta)
        tick()
    bag.add_bytes(METADATA, json.dumps(_structure(summary.master_id, studies), indent=1).encode())
    bag.close(
        {
            "Source-Organization": f"Archipel ({rt.settings.ae_title})",
            "Bagging-Date": datetime.now(UTC).date().isoformat(),
            "Bag-Software-Agent": "archipel export",
            "External-Description": f"Archive export of {summary.what}",
            "Archipel-Master-Patient": "" if summary.master_id is None else str(summary.master_id),
            "Archipel-Studies": str(summary.studies),
            "Archipel-Series": str(summary.series),
            "Archipel-Instances": str(summary.instances),
            "Archipel-Documents": str(summary.documents),
            "Archipel-DICOM-Bytes": str(summary.bytes),
        }
    )


def _zip_folder(folder: Path, target: Path) -> None:
    partial = target.with_name(target.name + ".part")
    with partial.open("wb") as raw:
        with zipfile.ZipFile(raw, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
            for path in sorted(folder.rglob("*")):
                if path.is_file():
                    zf.write(path, path.relative_to(folder).as_posix())
        raw.flush()
        os.fsync(raw.fileno())
    partial.replace(target)


@dataclass(frozen=True)
class Package:
    """What one export holds: the master patient (when known), the studies and the documents."""

    master_id: int | None
    studies: list[ExportedStudy]
    documents: list[export_documents.ExportedDocument]

    @property
    def resources(self) -> list[access.Resource]:
        """What the policy decides on: every study and document."""
        return [_resource(st) for st in self.studies] + [d.resource for d in self.documents]

    @property
    def files(self) -> int:
        """How many files the export copies (for a progress bar's total)."""
        return sum(len(st.instances) for st in self.studies) + len(self.documents)


def select_package(rt: Runtime, request: ExportRequest, fmt: ExportFormat) -> Package:
    """The studies (and, in a bag of a patient, the documents) ``request`` names; :class:`ExportRefused` when
    it names nothing stored. Nothing is decided or audited yet (:func:`authorise`)."""
    master, pairs, studies = select_studies(rt, request)
    # DICOM media carry Part-10 files only: a patient's documents travel in a bag.
    docs = export_documents.of_patients(rt.db, pairs) if fmt is ExportFormat.BAGIT else []
    return Package(master, studies, docs)


def export(
    rt: Runtime,
    principal: Principal,
    request: ExportRequest,
    fmt: ExportFormat,
    out: Path,
    *,
    source: str = "",
    on_start: Callable[[int], None] | None = None,
    on_file: Callable[[], None] | None = None,
) -> ExportSummary:
    """Write the package ``request`` names to ``out`` (a new folder, or a ``.zip`` file) and return its summary.

    Refused (:class:`ExportRefused`) when ``out`` exists, when the request names nothing stored, when the
    policy refuses one study or document, or when a stored file is missing or altered; nothing is left at
    ``out`` then. ``on_start(total)`` is called once the files are known, ``on_file()`` after each one.
    """
    if out.exists():
        raise ExportRefused(f"{out.name} exists already; choose a new destination")
    package = select_package(rt, request, fmt)
    master, studies, docs = package.master_id, package.studies, package.documents
    authorise(rt, principal, package.resources, fmt, source)
    summary = ExportSummary(
        format=fmt.value,
        what=request.describe(),
        master_id=master,
        studies=len(studies),
        series=len({i.series_uid for st in studies for i in st.instances}),
        instances=sum(len(st.instances) for st in studies),
        documents=len(docs),
        bytes=sum(i.size for st in studies for i in st.instances),
        out=out.name,
    )
    if on_start is not None:
        on_start(package.files)
    tick = on_file or (lambda: None)
    zipped = out.suffix.lower() == ".zip"
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".archipel-export-", dir=out.parent) as tmp:
        root = Path(tmp) / "package"
        if fmt is ExportFormat.DICOMDIR:
            _write_dicomdir(rt, studies, root, tick)
        else:
            _write_bag(rt, summary, studies, docs, root, tick)
        # The package is made durable once, whole, before it takes its name: a crash leaves no half package.
        if zipped:
            _zip_folder(root, out)
        else:
            os.sync()
            shutil.move(str(root), out)
    log.info(
        "event=export format=%s studies=%d instances=%d documents=%d bytes=%d",
        fmt.value, summary.studies, summary.instances, summary.documents, summary.bytes,
    )  # fmt: skip
    return summary
