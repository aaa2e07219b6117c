"""Synthetic DICOM studies for the demo, the tests and the benchmarks.

Everything is generated: no real patient, no download. Names are invented ``FAMILY^Given`` pairs.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, timedelta

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.uid import (
    PYDICOM_IMPLEMENTATION_UID,
    UID,
    ExplicitVRLittleEndian,
    JPEGBaseline8Bit,
    generate_uid,
)

CT_IMAGE = "1.2.840.10008.5.1.4.1.1.2"
MR_IMAGE = "1.2.840.10008.5.1.4.1.1.4"
DX_MAMMO_PRESENTATION = "1.2.840.10008.5.1.4.1.1.1.2"
SECONDARY_CAPTURE_MULTIFRAME_TRUE_COLOR = "1.2.840.10008.5.1.4.1.1.7.4"
ROOT = "1.2.826.0.1.3680043.10.1379."  # pydicom-style UID root for Archipel test data


@dataclass(frozen=True)
class SyntheticPatient:
    """An invented patient as one site knows them."""

    patient_id: str
    name: str
    birth_date: str
    sex: str
    issuer: str = ""


def uid(key: str | None = None) -> str:
    """A UID under Archipel's synthetic-data root: fresh, or derived from ``key`` (same key, same UID)."""
    if key is None:
        return str(generate_uid(prefix=ROOT))
    return str(generate_uid(prefix=ROOT, entropy_srcs=[key]))


def _file_meta(sop_class: str, sop_uid: str, ts: str) -> FileMetaDataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UID(sop_class)
    meta.MediaStorageSOPInstanceUID = UID(sop_uid)
    meta.TransferSyntaxUID = UID(ts)
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    return meta


def _base(
    patient: SyntheticPatient,
    study_uid: str,
    series_uid: str,
    sop_class: str,
    modality: str,
    study_date: str,
    accession: str,
    description: str,
    series_number: int,
    instance_number: int,
    key: str | None = None,
) -> Dataset:
    ds = Dataset()
    sop_uid = uid(f"{key}/{series_uid}/{instance_number}" if key else None)
    ds.file_meta = _file_meta(sop_class, sop_uid, ExplicitVRLittleEndian)
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = sop_uid
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.PatientName = patient.name
    ds.PatientID = patient.patient_id
    if patient.issuer:
        ds.IssuerOfPatientID = patient.issuer
    ds.PatientBirthDate = patient.birth_date
    ds.PatientSex = patient.sex
    ds.StudyDate = study_date
    ds.StudyTime = "101500"
    ds.SeriesDate = study_date
    ds.ContentDate = study_date
    ds.ContentTime = "101500"
    ds.AccessionNumber = accession
    ds.StudyID = accession[-8:]
    ds.ReferringPhysicianName = "REFERRER^Demo"
    ds.StudyDescription = description
    ds.SeriesDescription = f"{description} series {series_number}"
    ds.Modality = modality
    ds.Manufacturer = "Archipel synthetic"
    ds.SeriesNumber = series_number
    ds.InstanceNumber = instance_number
    return ds


def _grey_pixels(ds: Dataset, rows: int, cols: int, seed: int, bits: int = 16) -> None:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:rows, 0:cols]
    cy, cx = rows / 2, cols / 2
    disc = ((yy - cy) ** 2 + (xx - cx) ** 2) < (min(rows, cols) * 0.4) ** 2
    img = np.where(disc, 1000 + (seed % 50) * 4, 0) + rng.integers(0, 40, size=(rows, cols))
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = rows, cols
    ds.BitsAllocated = 16
    ds.BitsStored = 12 if bits == 16 else bits
    ds.HighBit = ds.BitsStored - 1
    ds.PixelRepresentation = 0
    ds.PixelData = img.astype(np.uint16).tobytes()


def ct_series(
    patient: SyntheticPatient,
    count: int,
    *,
    study_uid: str | None = None,
    study_date: str = "20260110",
    accession: str = "ACC0001",
    rows: int = 256,
    cols: int = 256,
    description: str = "CT THORAX",
    key: str | None = None,
) -> list[Dataset]:
    """One CT series of ``count`` single-frame slices; a ``key`` makes every UID reproducible."""
    study_uid = study_uid or uid(f"{key}/study" if key else None)
    series_uid = uid(f"{key}/ct" if key else None)
    out = []
    for i in range(count):
        ds = _base(
            patient, study_uid, series_uid, CT_IMAGE, "CT", study_date, accession, description, 1, i + 1, key
        )
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.SliceThickness = "1.0"
        ds.ImagePositionPatient = [0, 0, float(i)]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.PixelSpacing = [0.7, 0.7]
        ds.RescaleIntercept = "-1024"
        ds.RescaleSlope = "1"
        ds.WindowCenter = "40"
        ds.WindowWidth = "400"
        ds.FrameOfReferenceUID = uid(f"{study_uid}/for")
        _grey_pixels(ds, rows, cols, seed=i)
        out.append(ds)
    return out


def mr_series(
    patient: SyntheticPatient,
    count: int,
    *,
    study_uid: str | None = None,
    study_date: str = "20260212",
    accession: str = "ACC0002",
    key: str | None = None,
) -> list[Dataset]:
    """One MR series of ``count`` slices; a ``key`` makes every UID reproducible."""
    study_uid = study_uid or uid(f"{key}/study" if key else None)
    series_uid = uid(f"{key}/mr" if key else None)
    out = []
    for i in range(count):
        ds = _base(
            patient, study_uid, series_uid, MR_IMAGE, "MR", study_date, accession, "MR BRAIN", 1, i + 1, key
        )
        ds.ImageType = ["ORIGINAL", "PRIMARY", "M"]
        ds.ScanningSequence = "SE"
        ds.SequenceVariant = "NONE"
        ds.ScanOptions = ""
        ds.MRAcquisitionType = "2D"
        ds.EchoTime = "20"
        ds.RepetitionTime = "500"
        ds.MagneticFieldStrength = "1.5"
        _grey_pixels(ds, 192, 192, seed=100 + i)
        out.append(ds)
    return out


def mammo_study(
    patient: SyntheticPatient,
    *,
    study_date: str = "20260305",
    accession: str = "ACC0003",
    key: str | None = None,
) -> list[Dataset]:
    """A four-view screening mammogram (R/L CC and MLO), Digital Mammography For Presentation."""
    study_uid = uid(f"{key}/mg-study" if key else None)
    series_uid = uid(f"{key}/mg" if key else None)
    out = []
    for n, (lat, view) in enumerate([("R", "CC"), ("L", "CC"), ("R", "MLO"), ("L", "MLO")]):
        ds = _base(
            patient,
            study_uid,
            series_uid,
            DX_MAMMO_PRESENTATION,
            "MG",
            study_date,
            accession,
            "MAMMOGRAPHIE DE DEPISTAGE",
            1,
            n + 1,
            key,
        )
        ds.ImageType = ["ORIGINAL", "PRIMARY", ""]
        ds.ImageLaterality = lat
        ds.Laterality = lat
        ds.ViewPosition = view
        ds.PresentationIntentType = "FOR PRESENTATION"
        ds.BodyPartExamined = "BREAST"
        ds.ImagerPixelSpacing = [0.1, 0.1]
        ds.WindowCenter = "600"
        ds.WindowWidth = "1200"
        _grey_pixels(ds, 320, 256, seed=200 + n)
        out.append(ds)
    return out


def jpeg_multiframe(patient: SyntheticPatient, frames: int = 3, size: int = 64) -> Dataset:
    """A multi-frame true-colour secondary capture with JPEG Baseline frames (one fragment per frame)."""
    from PIL import Image

    ds = _base(
        patient,
        uid(),
        uid(),
        SECONDARY_CAPTURE_MULTIFRAME_TRUE_COLOR,
        "OT",
        "20260301",
        "ACC0004",
        "SC MULTIFRAME",
        1,
        1,
    )
    ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
    encoded = []
    for f in range(frames):
        arr = np.zeros((size, size, 3), dtype=np.uint8)
        arr[..., f % 3] = 200
        arr[: size // 2, : size // 2] = 255
        buf = io.BytesIO()
        Image.fromarray(arr).save(buf, format="JPEG", quality=90)
        encoded.append(buf.getvalue())
    ds.SamplesPerPixel = 3
    ds.PhotometricInterpretation = "YBR_FULL_422"
    ds.PlanarConfiguration = 0
    ds.Rows = ds.Columns = size
    ds.BitsAllocated = ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0
    ds.NumberOfFrames = frames
    ds.FrameIncrementPointer = 0x00181063
    ds.FrameTime = "100"
    ds.ConversionType = "WSD"
    ds.PixelData = encapsulate(encoded)
    ds["PixelData"].VR = "OB"
    ds["PixelData"].is_undefined_length = True
    return ds


#: IOCM rejection reasons (DCM) as document titles of a rejection note.
REJECTION_TITLES = {
    "113001": "Rejected for Quality Reasons",
    "113037": "Rejected for Patient Safety Reasons",
    "113038": "Incorrect Modality Worklist Entry",
    "113039": "Data Retention Policy Expired",
}


def rejection_note(rejected: list[Dataset], code: str = "113001", key: str | None = None) -> Dataset:
    """An IOCM rejection note: a Key Object Selection Document titled with ``code`` that names ``rejected`` (all of
    one study) in its Current Requested Procedure Evidence Sequence, in a series of its own in that study."""
    import highdicom as hd

    title = hd.sr.CodedConcept(code, "DCM", REJECTION_TITLES[code])
    note = hd.ko.KeyObjectSelectionDocument(
        evidence=rejected,
        content=hd.ko.KeyObjectSelection(document_title=title, referenced_objects=rejected),
        series_instance_uid=uid(f"{key}/ko-series" if key else None),
        series_number=99,
        sop_instance_uid=uid(f"{key}/ko" if key else None),
        instance_number=1,
        manufacturer="Archipel",
    )
    if "IssuerOfPatientID" in rejected[0]:
        note.IssuerOfPatientID = rejected[0].IssuerOfPatientID
    return note


def to_bytes(ds: Dataset) -> bytes:
    """Part-10 bytes of ``ds`` (with preamble and file meta)."""
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def demo_patients(site: str, count: int, start: int = 1) -> Iterator[SyntheticPatient]:
    """``count`` invented patients of ``site``."""
    families = [
        "MARTIN",
        "BERNARD",
        "DUBOIS",
        "THOMAS",
        "ROBERT",
        "RICHARD",
        "PETIT",
        "DURAND",
        "LEROY",
        "MOREAU",
    ]
    givens = ["Claire", "Louis", "Anne", "Paul", "Marie", "Jean", "Sophie", "Luc", "Julie", "Marc"]
    base = date(1950, 1, 1)
    for i in range(start, start + count):
        yield SyntheticPatient(
            patient_id=f"{site[:3].upper()}{i:06d}",
            name=f"{families[i % len(families)]}^{givens[(i * 7) % len(givens)]}",
            birth_date=(base + timedelta(days=i * 397)).strftime("%Y%m%d"),
            sex="F" if i % 2 else "M",
            issuer=site,
        )
