"""Storing instances: validate, write the blob durably, then commit the index row.

The order is the durability contract: a sender is acknowledged only after :meth:`Archive.store` returns, by
which time the blob is fsynced and the row committed. A crash between the two leaves an orphan blob that
:meth:`Archive.sweep_orphans` removes at start-up, never a row without its bytes.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from typing import Literal

from sqlalchemy import select
from sqlalchemy.orm import Session

from archipel.platform.db import Database, utcnow
from archipel.platform.settings import DuplicatePolicy
from archipel.platform.storage import BlobStore
from archipel.radiology.dicomfile import InvalidInstance, ParsedInstance, parse_part10
from archipel.radiology.models import Instance, InstanceVersion, Patient, Series, Study

log = logging.getLogger("archipel.archive")

StoreStatus = Literal["stored", "already-stored", "replaced"]


class DuplicateConflict(InvalidInstance):
    """The SOP Instance UID is stored already with other bytes, and the policy keeps the first."""

    def __init__(self, sop_uid: str) -> None:
        super().__init__(
            f"SOP Instance {sop_uid} is already stored with different content; the first copy is kept",
            code=0x0111,
            http_status=409,
        )
        self.sop_uid = sop_uid


@dataclass(frozen=True)
class StoreResult:
    """What happened to one stored object."""

    sop_uid: str
    sop_class_uid: str
    study_uid: str
    series_uid: str
    status: StoreStatus
    sha256: str
    #: The patient as ``issuer/PatientID``, the form the access policy and the audit trail use.
    patient: str = ""


class Archive:
    """The archive's write side over an index database and a blob store."""

    def __init__(self, db: Database, blobs: BlobStore, duplicate_policy: DuplicatePolicy = "keep-first"):
        self.db = db
        self.blobs = blobs
        self.duplicate_policy = duplicate_policy

    def store(self, data: bytes, *, source_ae: str = "", default_issuer: str = "") -> StoreResult:
        """Store one Part-10 object and return once it is durable.

        Raises :class:`InvalidInstance` (or :class:`DuplicateConflict`) with a reason; nothing stored before
        is changed in that case.
        """
        parsed = parse_part10(data, default_issuer=default_issuer)
        digest = hashlib.sha256(data).hexdigest()
        with self.db.sessions() as s:
            existing = s.execute(
                select(Instance.sha256).where(Instance.sop_uid == parsed.sop_uid)
            ).scalar_one_or_none()
        if existing == digest:
            return self._result(parsed, "already-stored", digest)
        if existing is not None and self.duplicate_policy == "keep-first":
            log.warning("event=duplicate_refused sop_uid=%s source_ae=%s", parsed.sop_uid, source_ae)
            raise DuplicateConflict(parsed.sop_uid)
        self.blobs.put(digest, data)
        with self.db.write() as s:
            status = self._index(s, parsed, digest, len(data), source_ae)
        log.info(
            "event=instance_stored sop_uid=%s status=%s size=%d source_ae=%s",
            parsed.sop_uid,
            status,
            len(data),
            source_ae,
        )
        return self._result(parsed, status, digest)

    @staticmethod
    def _result(parsed: ParsedInstance, status: StoreStatus, digest: str) -> StoreResult:
        return StoreResult(
            sop_uid=parsed.sop_uid,
            sop_class_uid=parsed.sop_class_uid,
            study_uid=parsed.study_uid,
            series_uid=parsed.series_uid,
            status=status,
            sha256=digest,
            patient=f"{parsed.issuer}/{parsed.patient_id}",
        )

    def _index(self, s: Session, p: ParsedInstance, digest: str, size: int, source_ae: str) -> StoreStatus:
        instance = s.execute(select(Instance).where(Instance.sop_uid == p.sop_uid)).scalar_one_or_none()
        if instance is not None:
            if instance.sha256 == digest:
                return "already-stored"
            if self.duplicate_policy == "keep-first":
                raise DuplicateConflict(p.sop_uid)
            s.add(
                InstanceVersion(
                    sop_uid=instance.sop_uid,
                    sha256=instance.sha256,
                    blob_key=instance.blob_key,
                    size=instance.size,
                    received_at=instance.received_at,
                )
            )
        series = self._series(s, p)
        if instance is None:
            instance = Instance(sop_uid=p.sop_uid)
            s.add(instance)
            status: StoreStatus = "stored"
        else:
            status = "replaced"
        instance.series_pk = series.id
        instance.sop_class_uid = p.sop_class_uid
        instance.instance_number = p.instance_number
        instance.transfer_syntax = p.transfer_syntax
        instance.size = size
        instance.sha256 = digest
        instance.blob_key = digest
        instance.rows = p.rows
        instance.columns = p.columns
        instance.number_of_frames = p.number_of_frames
        instance.pixel_data_offset = p.pixel_data_offset
        instance.pixel_data_length = p.pixel_data_length
        instance.frame_index = p.frame_index_json()
        instance.source_ae = source_ae
        instance.received_at = utcnow()
        return status

    def _series(self, s: Session, p: ParsedInstance) -> Series:
        series = s.execute(select(Series).where(Series.series_uid == p.series_uid)).scalar_one_or_none()
        if series is not None:
            if series.study.study_uid != p.study_uid:
                raise InvalidInstance(
                    f"SeriesInstanceUID {p.series_uid} belongs to another study than {p.study_uid}",
                    code=0xA900,
                )
            return series
        study = self._study(s, p)
        series = Series(
            series_uid=p.series_uid,
            study_pk=study.id,
            modality=p.modality,
            series_number=p.series_number,
            description=p.series_description,
            body_part=p.body_part,
            performed_start_date=p.performed_start_date,
            performed_start_time=p.performed_start_time,
        )
        s.add(series)
        modalities = [m for m in study.modalities.split("\\") if m]
        if p.modality and p.modality not in modalities:
            study.modalities = "\\".join(sorted([*modalities, p.modality]))
        study.updated_at = utcnow()
        s.flush()
        return series

    def _study(self, s: Session, p: ParsedInstance) -> Study:
        study = s.execute(select(Study).where(Study.study_uid == p.study_uid)).scalar_one_or_none()
        if study is not None:
            if study.patient.patient_id != p.patient_id or study.patient.issuer != p.issuer:
                raise InvalidInstance(
                    f"StudyInstanceUID {p.study_uid} is stored for another patient", code=0xA900
                )
            return study
        patient = s.execute(
            select(Patient).where(Patient.issuer == p.issuer, Patient.patient_id == p.patient_id)
        ).scalar_one_or_none()
        if patient is None:
            patient = Patient(
                issuer=p.issuer,
                patient_id=p.patient_id,
                patient_name=p.patient_name,
                birth_date=p.birth_date,
                sex=p.sex,
            )
            s.add(patient)
            s.flush()
        study = Study(
            study_uid=p.study_uid,
            patient_pk=patient.id,
            study_date=p.study_date,
            study_time=p.study_time,
            accession_number=p.accession_number,
            study_id=p.study_id,
            referring_physician=p.referring_physician,
            description=p.study_description,
            modalities=p.modality,
            site=p.issuer,
        )
        s.add(study)
        s.flush()
        return study

    def sweep_orphans(self, grace_seconds: float = 0) -> int:
        """Remove blobs that no index row names (left by a crash before commit); return how many."""
        import time

        removed = self.blobs.sweep_temporary()
        cutoff = time.time() - grace_seconds
        with self.db.sessions() as s:
            known = set(s.execute(select(Instance.blob_key)).scalars())
            known.update(s.execute(select(InstanceVersion.blob_key)).scalars())
        for key in self.blobs.keys(older_than=cutoff):
            if key not in known:
                self.blobs.delete(key)
                removed += 1
        if removed:
            log.info("event=orphans_swept count=%d", removed)
        return removed
