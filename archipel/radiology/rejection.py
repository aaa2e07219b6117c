"""IOCM rejection notes: a Key Object Selection Document titled with a rejection code hides the instances it lists.

IHE Imaging Object Change Management (IOCM) sends a KOS (SOP class 1.2.840.10008.5.1.4.1.1.88.59) whose Concept
Name is one of DCM 113001 "Rejected for Quality Reasons", 113037 "Rejected for Patient Safety Reasons", 113038
"Incorrect Modality Worklist Entry" or 113039 "Data Retention Policy Expired", and whose Current Requested
Procedure Evidence Sequence names the rejected instances. As in dcm4chee-arc:

- the note is stored and stays visible like any instance;
- the instances it names disappear from every read path at once: their rows move from ``instances`` to
  ``rejected_instances`` in the transaction that stores the note (series left empty go too, and the study's
  ModalitiesInStudy is recomputed);
- a later store of a rejected instance is refused with status 0xA771 "Subsequent occurrence of rejected object"
  (HTTP 409 for STOW-RS), unless the archive is built to accept it;
- a note that names an instance under another SOP class than the stored one is refused (0xA773).

The bytes of a rejected instance stay in the blob store until the retention run deletes them: at once for 113039,
after ``retention_rejected_days`` for the others (:mod:`archipel.radiology.retention`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from io import BytesIO

from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from sqlalchemy import Connection, Table, bindparam, delete, insert, select, update

from archipel.platform.db import utcnow
from archipel.radiology.dicomfile import InvalidInstance
from archipel.radiology.models import Instance, Series, Study
from archipel.radiology.retention_models import RejectedInstance

log = logging.getLogger("archipel.rejection")

KOS_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.88.59"
#: The IOCM rejection reasons (scheme DCM) and their meanings.
REJECTION_CODES = {
    "113001": "Rejected for Quality Reasons",
    "113037": "Rejected for Patient Safety Reasons",
    "113038": "Incorrect Modality Worklist Entry",
    "113039": "Data Retention Policy Expired",
}
RETENTION_EXPIRED = "113039"
#: dcm4chee-arc's failure statuses for a rejected object stored again and a note that does not fit the index.
SUBSEQUENT_OCCURRENCE_OF_REJECTED_OBJECT = 0xA771
REJECTION_FAILED_CLASS_INSTANCE_CONFLICT = 0xA773

_INSTANCES: Table = Instance.__table__  # type: ignore[assignment]
_SERIES: Table = Series.__table__  # type: ignore[assignment]
_STUDIES: Table = Study.__table__  # type: ignore[assignment]
_REJECTED: Table = RejectedInstance.__table__  # type: ignore[assignment]


@dataclass(frozen=True)
class RejectedReference:
    """One instance a note rejects, as the note names it."""

    study_uid: str
    series_uid: str
    sop_class_uid: str
    sop_uid: str


@dataclass(frozen=True)
class RejectionNote:
    """A rejection note's reason code and the instances it rejects."""

    note_uid: str
    code: str
    references: tuple[RejectedReference, ...]


def _code(ds: Dataset) -> tuple[str, str]:
    seq = ds.get("ConceptNameCodeSequence")
    if not seq:
        return "", ""
    item = seq[0]
    return str(item.get("CodeValue", "")), str(item.get("CodingSchemeDesignator", ""))


def read_rejection_note(data: bytes) -> RejectionNote | None:
    """The rejection note in the Part-10 ``data`` of a KOS; ``None`` for a KOS that is not a rejection note.

    Raises :class:`InvalidInstance` for a rejection note that names no instance.
    """
    try:
        ds = dcmread(BytesIO(data), stop_before_pixels=True)
    except (InvalidDicomError, ValueError, EOFError) as exc:
        raise InvalidInstance(f"the Key Object Selection Document cannot be read: {exc}") from exc
    value, scheme = _code(ds)
    if scheme != "DCM" or value not in REJECTION_CODES:
        return None
    note_uid = str(ds.get("SOPInstanceUID", ""))
    refs: list[RejectedReference] = []
    for study in ds.get("CurrentRequestedProcedureEvidenceSequence", []):
        study_uid = str(study.get("StudyInstanceUID", ""))
        for series in study.get("ReferencedSeriesSequence", []):
            series_uid = str(series.get("SeriesInstanceUID", ""))
            for sop in series.get("ReferencedSOPSequence", []):
                sop_uid = str(sop.get("ReferencedSOPInstanceUID", ""))
                if sop_uid and sop_uid != note_uid:
                    refs.append(
                        RejectedReference(
                            study_uid, series_uid, str(sop.get("ReferencedSOPClassUID", "")), sop_uid
                        )
                    )
    if not refs:
        raise InvalidInstance(
            f"rejection note {note_uid} ({value} {REJECTION_CODES[value]}) names no instance in its Current "
            "Requested Procedure Evidence Sequence (0040,A375)"
        )
    return RejectionNote(note_uid, value, tuple(refs))


# Built once: every store asks.
_REJECTED_ROW = select(_REJECTED.c.code, _REJECTED.c.note_uid).where(
    _REJECTED.c.sop_uid == bindparam("sop_uid")
)


def refuse_if_rejected(c: Connection, sop_uid: str) -> None:
    """Raise :class:`InvalidInstance` (0xA771, HTTP 409) when ``sop_uid`` was rejected by a note."""
    row = c.execute(_REJECTED_ROW, {"sop_uid": sop_uid}).first()
    if row is not None:
        raise InvalidInstance(
            # The reason first: a C-STORE Error Comment keeps only 64 characters.
            f"rejected instance ({row.code} {REJECTION_CODES.get(row.code, '')}), not stored again: "
            f"SOP Instance {sop_uid}, rejection note {row.note_uid}",
            code=SUBSEQUENT_OCCURRENCE_OF_REJECTED_OBJECT,
            http_status=409,
        )


def apply_rejection(c: Connection, note: RejectionNote) -> int:
    """Reject the note's instances inside the caller's index transaction; return how many stored ones it hid.

    Idempotent: an instance rejected already is left as it is. An instance not stored yet is recorded, so that
    it is refused when it comes. Raises :class:`InvalidInstance` (0xA773) when a stored instance has another SOP
    class than the note says; nothing is changed then (the caller's transaction rolls back).
    """
    i, se, st, r = _INSTANCES.c, _SERIES.c, _STUDIES.c, _REJECTED.c
    uids = [ref.sop_uid for ref in note.references]
    done = set(c.execute(select(r.sop_uid).where(r.sop_uid.in_(uids))).scalars())
    stored = {
        row.sop_uid: row
        for row in c.execute(
            select(
                i.id,
                i.sop_uid,
                i.sop_class_uid,
                i.blob_key,
                i.sha256,
                i.size,
                i.series_pk,
                se.series_uid,
                se.study_pk,
                st.study_uid,
            )
            .join(_SERIES, se.id == i.series_pk)
            .join(_STUDIES, st.id == se.study_pk)
            .where(i.sop_uid.in_(uids))
        )
    }
    now = utcnow()
    rows: list[dict[str, object]] = []
    hidden: list[int] = []
    series_pks: set[int] = set()
    study_pks: set[int] = set()
    for ref in note.references:
        if ref.sop_uid in done:
            continue
        done.add(ref.sop_uid)
        row = stored.get(ref.sop_uid)
        if row is not None and ref.sop_class_uid and row.sop_class_uid != ref.sop_class_uid:
            raise InvalidInstance(
                f"rejection note {note.note_uid} names {ref.sop_uid} as {ref.sop_class_uid}, "
                f"stored as {row.sop_class_uid}",
                code=REJECTION_FAILED_CLASS_INSTANCE_CONFLICT,
                http_status=409,
            )
        rows.append(
            {
                "sop_uid": ref.sop_uid,
                "sop_class_uid": row.sop_class_uid if row is not None else ref.sop_class_uid,
                "study_uid": row.study_uid if row is not None else ref.study_uid,
                "series_uid": row.series_uid if row is not None else ref.series_uid,
                "code": note.code,
                "note_uid": note.note_uid,
                "rejected_at": now,
                "blob_key": row.blob_key if row is not None else None,
                "sha256": row.sha256 if row is not None else "",
                "size": row.size if row is not None else 0,
                "purged_at": None,
            }
        )
        if row is not None:
            hidden.append(int(row.id))
            series_pks.add(int(row.series_pk))
            study_pks.add(int(row.study_pk))
    if rows:
        c.execute(insert(_REJECTED), rows)
    if hidden:
        c.execute(delete(_INSTANCES).where(i.id.in_(hidden)))
        drop_empty_series(c, series_pks, study_pks)
    log.info(
        "event=rejection_note_applied note_uid=%s code=%s named=%d hidden=%d",
        note.note_uid,
        note.code,
        len(note.references),
        len(hidden),
    )
    return len(hidden)


def drop_empty_series(c: Connection, series_pks: set[int], study_pks: set[int]) -> None:
    """Delete the series among ``series_pks`` left without instances, and recompute ModalitiesInStudy of
    ``study_pks`` from the series that remain."""
    i, se, st = _INSTANCES.c, _SERIES.c, _STUDIES.c
    if series_pks:
        filled = select(i.series_pk).where(i.series_pk.in_(sorted(series_pks))).distinct()
        c.execute(delete(_SERIES).where(se.id.in_(sorted(series_pks)), se.id.not_in(filled)))
    for study_pk in sorted(study_pks):
        present = c.execute(
            select(se.modality).where(se.study_pk == study_pk, se.modality != "").distinct()
        ).scalars()
        c.execute(
            update(_STUDIES)
            .where(st.id == study_pk)
            .values(modalities="\\".join(sorted(set(present))), updated_at=utcnow())
        )
