"""Registering a slide: its source bytes into the slide-source blob store, its case, its row and its job.

Every way in (multipart upload, tus, drop folder) spools the source to a file under ``DATA/uploads`` while
hashing it (:class:`SourceSpool`), then calls :func:`register_slide`. The source is stored unchanged under its
SHA-256; the slide row, its study and series UIDs and the ``wsi.convert`` job are committed together, and only
then is the task sent, so a job never runs for a slide that does not exist.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import uuid
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

from pydicom.uid import generate_uid
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from archipel.platform import jobs
from archipel.platform.db import Database, utcnow
from archipel.platform.runtime import Runtime
from archipel.platform.settings import Settings
from archipel.platform.storage import BlobStore, open_blob_store
from archipel.radiology.models import Patient, Study
from archipel.wsi import frozen
from archipel.wsi.intake import SlideMetadata
from archipel.wsi.models import RECEIVED, Slide, SlideCase, SlideUpload

log = logging.getLogger("archipel.wsi")

CONVERT_TASK = "wsi.convert"
#: Urgent (frozen-section) slides go to their own queue, which ``archipel serve`` gives a worker of its own, and
#: carry the highest priority for brokers that honour it (Redis, RabbitMQ).
QUEUE, URGENT_QUEUE = "wsi", "wsi-urgent"
URGENT_PRIORITY, ROUTINE_PRIORITY = 9, 3


class SourceTooLarge(ValueError):
    """The upload passes ``wsi_max_upload_gb``."""


def source_store(settings: Settings) -> BlobStore:
    """The blob store of slide sources (``wsi_source_url``, else ``file://DATA/slide-sources``)."""
    url = settings.wsi_source_url or f"file://{(settings.data_dir / 'slide-sources').resolve()}"
    return open_blob_store(url, settings)


def uploads_dir(settings: Settings) -> Path:
    """Where sources are spooled while they arrive (inside the data dir, so that storing them is a rename)."""
    folder = settings.data_dir / "uploads"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


class SourceSpool:
    """A slide source being written to disk piece by piece, hashed as it goes; never whole in memory."""

    def __init__(self, settings: Settings, path: Path | None = None) -> None:
        self.path = path or uploads_dir(settings) / f"{uuid.uuid4().hex}.part"
        self.limit = settings.wsi_max_upload_gb << 30
        self._hash = hashlib.sha256()
        self.size = 0
        self._file = self.path.open("wb")

    def write(self, data: bytes) -> None:
        """Append ``data``; raises :class:`SourceTooLarge` past the configured cap."""
        self.size += len(data)
        if self.size > self.limit:
            raise SourceTooLarge(f"the slide is larger than the {self.limit >> 30} GiB upload limit")
        self._file.write(data)
        self._hash.update(data)

    @property
    def sha256(self) -> str:
        """Hex SHA-256 of what was written."""
        return self._hash.hexdigest()

    def finish(self) -> None:
        """Flush and fsync the spooled file."""
        if not self._file.closed:
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()

    def discard(self) -> None:
        """Drop the spooled file."""
        if not self._file.closed:
            self._file.close()
        self.path.unlink(missing_ok=True)

    def __enter__(self) -> SourceSpool:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc_type is not None:
            self.discard()


def hash_file(path: Path) -> tuple[str, int]:
    """SHA-256 and size of a file, read in 1 MiB pieces."""
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


def _archive_study(db: Database, meta: SlideMetadata) -> str | None:
    """The archive's study of this accession and patient, when there is one."""
    st, pa = Study.__table__.c, Patient.__table__.c
    with db.engine.connect() as c:
        return c.execute(
            select(st.study_uid)
            .join(Patient.__table__, pa.id == st.patient_pk)
            .where(
                st.accession_number == meta.accession,
                pa.issuer == meta.issuer,
                pa.patient_id == meta.patient_id,
            )
            .order_by(st.id)
            .limit(1)
        ).scalar_one_or_none()


def resolve_case(db: Database, meta: SlideMetadata) -> tuple[int | None, str]:
    """The case (row id) and StudyInstanceUID the slide joins.

    With an accession: the case of that accession and patient, created on first use with the archive's study
    of that accession when there is one, else a new UID. Without one, the slide is a study of its own.
    """
    if not meta.accession:
        return None, generate_uid()
    key = (SlideCase.issuer == meta.issuer, SlideCase.patient_id == meta.patient_id)
    for _ in range(2):
        with db.sessions() as s:
            case = s.execute(select(SlideCase).where(*key, SlideCase.accession == meta.accession)).scalar()
            if case is not None:
                return case.id, case.study_uid
        study_uid = _archive_study(db, meta) or generate_uid()
        try:
            with db.write() as s:
                case = SlideCase(
                    issuer=meta.issuer,
                    patient_id=meta.patient_id,
                    accession=meta.accession,
                    study_uid=study_uid,
                    created_at=utcnow(),
                )
                s.add(case)
                s.flush()
                return case.id, study_uid
        except IntegrityError:
            continue  # another slide of the accession created the case meanwhile: use it
    raise RuntimeError(f"could not create the case of accession {meta.accession}")


@dataclass(frozen=True)
class Registered:
    """A registered slide and the job converting it."""

    slide_id: str
    job_id: str

    def as_dict(self) -> dict[str, Any]:
        """What the upload routes answer."""
        return {
            "slide_id": self.slide_id,
            "job_id": self.job_id,
            "status_url": f"/api/slides/{self.slide_id}",
        }


def register_slide(
    rt: Runtime,
    source: Path,
    sha256: str,
    size: int,
    meta: SlideMetadata,
    *,
    filename: str,
    origin: str,
    created_by: str,
    role: str = "",
    upload_id: str = "",
) -> Registered:
    """Store ``source`` (consumed) as the slide's source, commit the slide and its job, and queue the job.

    ``upload_id`` names the resumable upload that brought it, marked complete in the same transaction.
    """
    source_store(rt.settings).put_file(sha256, source)
    case_id, study_uid = resolve_case(rt.db, meta)
    slide_id, job_id = uuid.uuid4().hex, uuid.uuid4().hex
    now = utcnow()
    params = {"slide_id": slide_id, "role": role, "urgent": meta.urgent}
    with rt.db.write() as s:
        slide = Slide(
            id=slide_id,
            case_id=case_id,
            status=RECEIVED,
            job_id=job_id,
            issuer=meta.issuer,
            patient_id=meta.patient_id,
            accession=meta.accession,
            container_id=meta.container_id,
            stain=meta.stain,
            urgent=meta.urgent,
            filename=Path(filename).name[:255],
            source_key=sha256,
            source_size=size,
            origin=origin,
            study_uid=study_uid,
            # Fixed now, so that a re-run writes the same instances (their UIDs derive from it).
            series_uid=generate_uid(),
            created_by=created_by,
            created_at=now,
            updated_at=now,
        )
        s.add(slide)
        s.flush()
        # In the registration's transaction: a frozen section's slide is on its request as soon as it is stored.
        frozen.attach_registered(s, slide, meta.frozen_request, rt.clock())
        s.add(jobs.Job(id=job_id, kind=CONVERT_TASK, params=json.dumps(params), created_by=created_by))
        if upload_id:
            upload = s.get(SlideUpload, upload_id)
            if upload is not None:
                upload.slide_id = slide_id
    enqueue(job_id, meta.urgent)
    log.info(
        "event=slide_registered slide=%s job=%s origin=%s size=%d urgent=%s",
        slide_id,
        job_id,
        origin,
        size,
        meta.urgent,
    )
    return Registered(slide_id, job_id)


def enqueue(job_id: str, urgent: bool) -> None:
    """Send the conversion task: urgent slides to their own queue, at the highest priority."""
    jobs.celery_app().send_task(
        CONVERT_TASK,
        args=[job_id],
        queue=URGENT_QUEUE if urgent else QUEUE,
        priority=URGENT_PRIORITY if urgent else ROUTINE_PRIORITY,
    )
