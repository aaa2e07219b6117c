"""A frozen-section verdict as a signed document of the patient's record.

The verdict becomes a DICOM Basic Text SR in the case's study, stored through the archive like any received
object (durable blob, index row, MPI link), completed and verified by the pathologist (Verifying Observer). The
canonical verdict (JSON with sorted keys: who, what, when, which document and its SHA-256) is signed with the
platform's Ed25519 key (:mod:`archipel.platform.audit_signing`), and the signature is kept on the request.

Basic Text SR rather than highdicom's Enhanced or Comprehensive 3D SR: highdicom takes the patient and study of
an SR from its evidence (instances of the study), and a frozen section is answered while its slides may still be
converting, before any DICOM instance of them exists. The codes of the answer are local (scheme ``99ARCHIPEL``).
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Sequence as Sequence_
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, ExplicitVRLittleEndian, generate_uid
from sqlalchemy import select

from archipel import __version__
from archipel.platform.audit_signing import TrustedKeys, key_id, load_signing_key, trusted_keys
from archipel.platform.db import Database
from archipel.platform.settings import Settings
from archipel.radiology.models import Instance
from archipel.wsi.frozen import FrozenSectionAmendment, FrozenSectionRequest
from archipel.wsi.indexing import known_patient

BASIC_TEXT_SR = "1.2.840.10008.5.1.4.1.1.88.11"
LOCAL = "99ARCHIPEL"
DIAGNOSES = {
    "benign": ("FS-BENIGN", "Benign"),
    "malignant": ("FS-MALIGNANT", "Malignant"),
    "uncertain": ("FS-UNCERTAIN", "Uncertain"),
    "deferred": ("FS-DEFERRED", "Deferred to permanent sections"),
}
MARGINS = {
    "clear": ("FS-CLEAR", "Margins clear"),
    "involved": ("FS-INVOLVED", "Margins involved"),
    "close": ("FS-CLOSE", "Margins close"),
    "not-assessed": ("FS-NOT-ASSESSED", "Margins not assessed"),
}


@dataclass(frozen=True)
class Verdict:
    """What the pathologist answers."""

    diagnosis: str
    margins: str
    text: str


@dataclass(frozen=True)
class Amended:
    """The SR an amendment replaces, its place in the series, and why."""

    series_uid: str
    sop_uid: str
    instance_number: int
    reason: str

    def reference(self, study_uid: str) -> Dataset:
        """The Predecessor Documents Sequence item naming the amended SR."""
        sop = Dataset()
        sop.ReferencedSOPClassUID, sop.ReferencedSOPInstanceUID = BASIC_TEXT_SR, self.sop_uid
        series = Dataset()
        series.SeriesInstanceUID, series.ReferencedSOPSequence = self.series_uid, Sequence([sop])
        item = Dataset()
        item.StudyInstanceUID, item.ReferencedSeriesSequence = study_uid, Sequence([series])
        return item


def _code(value: str, scheme: str, meaning: str) -> Dataset:
    item = Dataset()
    item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = value, scheme, meaning
    return item


def _item(value_type: str, name: Dataset, **values: Any) -> Dataset:
    item = Dataset()
    item.RelationshipType = "CONTAINS"
    item.ValueType = value_type
    item.ConceptNameCodeSequence = Sequence([name])
    for keyword, value in values.items():
        setattr(item, keyword, value)
    return item


def _dt(when: datetime) -> tuple[str, str, str]:
    return when.strftime("%Y%m%d"), when.strftime("%H%M%S"), when.strftime("%Y%m%d%H%M%S%z")


def build_sr(
    db: Database,
    req: FrozenSectionRequest,
    verdict: Verdict,
    *,
    study_uid: str,
    pathologist: str,
    organisation: str,
    when: datetime,
    amends: Amended | None = None,
) -> Dataset:
    """The verdict as a verified Basic Text SR of ``study_uid`` (a new series), ready to write as Part 10; an
    amendment is the next instance of the amended SR's series, names it as its predecessor and says why."""
    patient = known_patient(db, req.issuer, req.patient_id)
    date, time, stamp = _dt(when)
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.SOPClassUID, ds.SOPInstanceUID = BASIC_TEXT_SR, generate_uid()
    ds.PatientName, ds.PatientID = patient.name, patient.patient_id
    ds.IssuerOfPatientID = req.issuer
    ds.PatientBirthDate = patient.birth_date.strftime("%Y%m%d") if patient.birth_date else ""
    ds.PatientSex = patient.sex
    ds.StudyInstanceUID, ds.StudyID, ds.AccessionNumber = study_uid, "", req.accession
    ds.StudyDate, ds.StudyTime = req.requested_at.strftime("%Y%m%d"), req.requested_at.strftime("%H%M%S")
    ds.ReferringPhysicianName = ""
    ds.Modality, ds.SeriesInstanceUID, ds.SeriesNumber = (
        "SR",
        amends.series_uid if amends else generate_uid(),
        900,
    )
    ds.SeriesDescription = "Frozen section verdict"
    ds.ReferencedPerformedProcedureStepSequence = Sequence()
    ds.Manufacturer, ds.SoftwareVersions = "Archipel", __version__
    ds.InstanceNumber, ds.ContentDate, ds.ContentTime = amends.instance_number if amends else 1, date, time
    ds.InstanceCreationDate, ds.InstanceCreationTime = date, time
    ds.CompletionFlag, ds.VerificationFlag = "COMPLETE", "VERIFIED"
    observer = Dataset()
    observer.VerifyingObserverName = (
        f"{pathologist}^"  # the account name as family name: no real name is kept
    )
    observer.VerifyingObserverIdentificationCodeSequence = Sequence()
    observer.VerifyingOrganization = organisation or "Archipel"
    observer.VerificationDateTime = stamp
    ds.VerifyingObserverSequence = Sequence([observer])
    ds.PerformedProcedureCodeSequence = Sequence()
    if amends is not None:
        ds.PredecessorDocumentsSequence = Sequence([amends.reference(study_uid)])
    ds.ValueType, ds.ContinuityOfContent = "CONTAINER", "SEPARATE"
    ds.ConceptNameCodeSequence = Sequence([_code("11526-1", "LN", "Pathology study")])
    diagnosis, margins = DIAGNOSES[verdict.diagnosis], MARGINS[verdict.margins]
    content = [
        _item("TEXT", _code("121027", "DCM", "Specimen"), TextValue=f"{req.specimen} ({req.specimen_site})"),
        _item("TEXT", _code("FS-QUESTION", LOCAL, "Clinical question"), TextValue=req.clinical_question),
        _item(
            "CODE",
            _code("121077", "DCM", "Conclusion"),
            ConceptCodeSequence=Sequence([_code(*diagnosis[:1], LOCAL, diagnosis[1])]),
        ),
        _item(
            "CODE",
            _code("FS-MARGINS", LOCAL, "Surgical margins"),
            ConceptCodeSequence=Sequence([_code(margins[0], LOCAL, margins[1])]),
        ),
    ]
    if verdict.text:
        content.append(_item("TEXT", _code("121106", "DCM", "Comment"), TextValue=verdict.text))
    if amends is not None:
        content.append(
            _item("TEXT", _code("FS-AMENDMENT", LOCAL, "Reason for amendment"), TextValue=amends.reason)
        )
    ds.ContentSequence = Sequence(content)
    return ds


def to_part10(ds: Dataset) -> bytes:
    """``ds`` as a DICOM Part-10 file (explicit VR little endian)."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = ds.SOPClassUID, ds.SOPInstanceUID
    meta.TransferSyntaxUID, meta.ImplementationClassUID = ExplicitVRLittleEndian, PYDICOM_IMPLEMENTATION_UID
    ds.file_meta = meta
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


def canonical(req: FrozenSectionRequest, document_sha256: str) -> bytes:
    """The bytes that are signed: the verdict and the document that carries it, as JSON with sorted keys."""
    assert req.verdict_at is not None
    body = {
        "request_id": req.id,
        "patient": req.patient,
        "accession": req.accession,
        "diagnosis": req.diagnosis,
        "margins": req.margins,
        "text": req.verdict_text,
        "pathologist": req.verdict_by,
        "signed_at": req.verdict_at.isoformat(),
        "study_uid": req.study_uid,
        "sr_sop_instance_uid": req.sr_sop_uid,
        "document_sha256": document_sha256,
    }
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def canonical_amendment(req: FrozenSectionRequest, am: FrozenSectionAmendment, document_sha256: str) -> bytes:
    """The bytes an amendment's signature covers: the amendment, what it amends, and its document."""
    body = {
        "request_id": req.id,
        "patient": req.patient,
        "amends_sop_instance_uid": req.sr_sop_uid,
        "diagnosis": am.diagnosis,
        "margins": am.margins,
        "text": am.text,
        "reason": am.reason,
        "pathologist": am.by,
        "signed_at": am.at.isoformat(),
        "sr_sop_instance_uid": am.sr_sop_uid,
        "document_sha256": document_sha256,
    }
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def sign(settings: Settings, payload: bytes) -> tuple[str, str]:
    """Sign ``payload`` with the platform key: (signature hex, key id)."""
    key = load_signing_key(settings)
    assert key is not None
    return key.sign(payload).hex(), key_id(key.public_key())


def verify(
    settings: Settings,
    db: Database,
    req: FrozenSectionRequest,
    amendments: Sequence_[FrozenSectionAmendment] = (),
) -> dict[str, Any]:
    """Whether the stored verdict (and each amendment) is the one signed, by a trusted key, and its document is in
    the archive unchanged: ``{"valid": bool, "reason": str, "key_id": str, "amendments": [...]}``."""
    if req.verdict_at is None or not req.signature:
        return {"valid": False, "reason": "no verdict is signed yet", "key_id": "", "amendments": []}
    with db.sessions() as s:
        blob = s.execute(select(Instance.sha256).where(Instance.sop_uid == req.sr_sop_uid)).scalar()
    problem: str | None = None
    if blob is None:
        problem = "the verdict's SR is missing from the archive"
    elif canonical(req, blob).decode() != req.signed_payload:
        problem = "the verdict differs from what was signed"
    if problem is not None:
        return {"valid": False, "reason": problem, "key_id": req.signing_key_id, "amendments": []}
    keys = trusted_keys(settings)
    problem = keys.verify(req.signing_key_id, req.signature, req.signed_payload.encode())
    result: dict[str, Any] = {
        "valid": problem is None,
        "reason": problem or "signature holds",
        "key_id": req.signing_key_id,
    }
    checked = [_verify_amendment(db, keys, req, am) for am in amendments]
    result["amendments"] = checked
    result["valid"] = result["valid"] and all(c["valid"] for c in checked)
    return result


def _verify_amendment(
    db: Database, keys: TrustedKeys, req: FrozenSectionRequest, am: FrozenSectionAmendment
) -> dict[str, Any]:
    with db.sessions() as s:
        sha = s.execute(select(Instance.sha256).where(Instance.sop_uid == am.sr_sop_uid)).scalar()
    if sha is None:
        problem: str | None = "the amendment's SR is missing from the archive"
    elif canonical_amendment(req, am, sha).decode() != am.signed_payload:
        problem = "the amendment differs from what was signed"
    else:
        problem = keys.verify(am.signing_key_id, am.signature, am.signed_payload.encode())
    return {"amendment_id": am.id, "valid": problem is None, "reason": problem or "signature holds"}


def document_sha256(data: bytes) -> str:
    """The SHA-256 of the SR's bytes (the archive's blob key for it)."""
    return hashlib.sha256(data).hexdigest()
