"""A converted slide into the archive: its DICOM WSI instances become one series of the case's study.

The instances go through :meth:`archipel.radiology.archive.Archive.store`, like any received object: durable blob,
index row, and the patient fed to the master patient index. They name the patient as the archive (or the MPI)
already knows them, so that the slide's series joins the case's study and links to the same master patient.

All or nothing: :meth:`Archive.store` commits each instance on its own, so if one is refused the instances
already stored for the slide's series are removed again (:func:`unindex_series`), and the slide is marked ready
only in the transaction that records its series. A crash half-way leaves a series that the redelivered job
completes (the same instances, stored again as ``already-stored``).
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable, Sequence
from pathlib import Path

from sqlalchemy import delete, func, select

from archipel.platform.db import Database
from archipel.platform.identity.models import LocalIdentity
from archipel.platform.storage import BlobStore
from archipel.radiology.archive import Archive
from archipel.radiology.models import Instance, Patient, Series, Study
from archipel.wsi import dicom
from archipel.wsi.models import Slide
from archipel.wsi.sources import SlideSource

log = logging.getLogger("archipel.wsi")


def _dicom_date(value: str) -> dt.date | None:
    try:
        return dt.datetime.strptime(value, "%Y%m%d").date() if len(value) == 8 else None
    except ValueError:
        return None


def known_patient(db: Database, issuer: str, patient_id: str) -> dicom.Patient:
    """The patient as the archive knows them (name, birth date, sex), else as the MPI's local identity does,
    else only by identifier."""
    with db.sessions() as s:
        row = s.execute(
            select(Patient).where(Patient.issuer == issuer, Patient.patient_id == patient_id)
        ).scalar()
        if row is not None:
            return dicom.Patient(patient_id, issuer, row.patient_name, _dicom_date(row.birth_date), row.sex)
        ident = s.execute(
            select(LocalIdentity).where(LocalIdentity.issuer == issuer, LocalIdentity.local_id == patient_id)
        ).scalar()
        if ident is not None:
            family = ident.birth_name or ident.used_name
            name = f"{family}^{ident.given_names}" if ident.given_names else family
            return dicom.Patient(patient_id, issuer, name, _dicom_date(ident.birth_date), ident.sex)
    return dicom.Patient(patient_id, issuer)


def _study_number(db: Database, study_uid: str) -> int:
    """The next series number in the study (1 for a new one)."""
    with db.sessions() as s:
        highest = s.execute(
            select(func.max(Series.series_number))
            .join(Study, Study.id == Series.study_pk)
            .where(Study.study_uid == study_uid)
        ).scalar()
    return int(highest or 0) + 1


def slide_metadata(db: Database, slide: Slide, source: SlideSource) -> dicom.SlideMetadata:
    """The DICOM metadata of ``slide``: patient and case from the index, specimen from the upload, optics and
    equipment from the source."""
    with db.sessions() as s:
        study = s.execute(select(Study).where(Study.study_uid == slide.study_uid)).scalar()
        study_id = study.study_id if study is not None else ""
        description = study.description if study is not None else ""
    series_number = _series_number(db, slide)
    return dicom.SlideMetadata(
        patient=known_patient(db, slide.issuer, slide.patient_id),
        study=dicom.Study(
            slide.study_uid,
            accession=slide.accession,
            study_id=study_id,
            date=slide.created_at,
            description=description,
        ),
        series=dicom.Series(
            slide.series_uid, number=series_number, description=f"Slide {slide.container_id}".strip()
        ),
        specimen=dicom.Specimen(
            container_id=slide.container_id or slide.id,
            stains=(slide.stain,) if slide.stain else (),
        ),
        slide=dicom.Slide(barcode=slide.container_id),
        optical_path=dicom.OpticalPath(objective_power=source.objective_power),
        equipment=dicom.Equipment(manufacturer=source.vendor or "Unknown"),
        acquired=slide.created_at,
    )


def _series_number(db: Database, slide: Slide) -> int:
    with db.sessions() as s:
        mine = s.execute(select(Series.series_number).where(Series.series_uid == slide.series_uid)).scalar()
    # A re-run keeps the number its series already has, so that its instances do not change.
    return int(mine) if mine is not None else _study_number(db, slide.study_uid)


def index_instances(
    archive: Archive,
    files: Sequence[Path],
    series_uid: str,
    issuer: str,
    on_file: Callable[[Path], None] | None = None,
) -> list[str]:
    """Store every file as an instance of ``series_uid``; on any refusal remove the series again and re-raise.

    Returns the SOP Instance UIDs. Each file is read whole (``wsi_max_instance_mb`` bounds that).
    """
    stored: list[str] = []
    try:
        for path in files:
            result = archive.store(path.read_bytes(), source_ae="", default_issuer=issuer)
            if result.series_uid != series_uid:
                raise ValueError(f"{path.name} belongs to series {result.series_uid}, not {series_uid}")
            stored.append(result.sop_uid)
            if on_file is not None:
                on_file(path)
    except BaseException:
        removed = unindex_series(archive.db, archive.blobs, series_uid)
        log.warning("event=slide_index_rolled_back series=%s removed=%d", series_uid, removed)
        raise
    return stored


def unindex_series(db: Database, blobs: BlobStore, series_uid: str) -> int:
    """Remove a series and its instances (rows, then blobs no row names any more), and its study if the series
    was its only one. Returns how many instances were removed."""
    i, se, st = Instance.__table__.c, Series.__table__.c, Study.__table__.c
    with db.write() as s:
        series = s.execute(select(se.id, se.study_pk).where(se.series_uid == series_uid)).first()
        if series is None:
            return 0
        keys = list(s.execute(select(i.blob_key).where(i.series_pk == series.id)).scalars())
        s.execute(delete(Instance).where(i.series_pk == series.id))
        s.execute(delete(Series).where(se.id == series.id))
        others = s.execute(
            select(func.count()).select_from(Series.__table__).where(se.study_pk == series.study_pk)
        ).scalar()
        if not others:
            s.execute(delete(Study).where(st.id == series.study_pk))
    with db.sessions() as s:
        named = set(s.execute(select(i.blob_key).where(i.blob_key.in_(keys))).scalars()) if keys else set()
    for key in set(keys) - named:
        blobs.delete(key)
    return len(keys)
