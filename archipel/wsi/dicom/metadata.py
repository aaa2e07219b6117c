"""What a DICOM WSI slide says about itself: patient, study, specimen, slide, optical path, equipment.

These are plain values, filled from the source (optical path, equipment, objective power) and from the case
(patient, accession, container, stain, barcode). :mod:`archipel.wsi.dicom.modules` maps them to DICOM
attributes in one place, so that the instance writer never spells a tag.
"""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass, field

from pydicom.uid import UID


@dataclass(frozen=True)
class Code:
    """A coded concept (Code Value, Coding Scheme Designator, Code Meaning)."""

    value: str
    scheme: str
    meaning: str


#: Illumination and colour codes for brightfield slides (CID 8123, CID 8122 / SNOMED CT).
BRIGHTFIELD = Code("111744", "DCM", "Brightfield illumination")
FULL_SPECTRUM = Code("414298005", "SCT", "Full Spectrum")

#: Stains that have a SNOMED CT substance code (CID 8112); any other stain is written as text.
KNOWN_STAINS: dict[str, tuple[Code, ...]] = {
    "hematoxylin": (Code("12710003", "SCT", "hematoxylin stain"),),
    "eosin": (Code("36879007", "SCT", "water soluble eosin stain"),),
    "he": (
        Code("12710003", "SCT", "hematoxylin stain"),
        Code("36879007", "SCT", "water soluble eosin stain"),
    ),
    "h&e": (
        Code("12710003", "SCT", "hematoxylin stain"),
        Code("36879007", "SCT", "water soluble eosin stain"),
    ),
}


@dataclass(frozen=True)
class Patient:
    """The patient as the issuing site knows them. ``name`` is a DICOM person name (``FAMILY^GIVEN``)."""

    patient_id: str
    issuer: str | None = None
    name: str = ""
    birth_date: dt.date | None = None
    sex: str = ""


@dataclass(frozen=True)
class Study:
    """The case's study, which the slide joins as one more series."""

    study_uid: str
    accession: str = ""
    study_id: str = ""
    date: dt.datetime | None = None
    description: str = ""


@dataclass(frozen=True)
class Series:
    """The slide's series. Its UID also seeds every derived UID, so a re-run writes the same instances."""

    series_uid: str
    number: int = 1
    description: str = ""


@dataclass(frozen=True)
class Specimen:
    """The specimen on the slide: the container (the slide's identifier) and how it was stained.

    ``stains`` are names; known ones (``KNOWN_STAINS``) are coded, others written as text.
    """

    container_id: str
    specimen_id: str = ""
    description: str = ""
    stains: tuple[str, ...] = ()

    @property
    def identifier(self) -> str:
        """The specimen identifier: given, else the container's."""
        return self.specimen_id or self.container_id


@dataclass(frozen=True)
class Slide:
    """What is printed on the slide. ``label_text`` is confidential and leaves with the label image."""

    barcode: str = ""
    label_text: str = ""


@dataclass(frozen=True)
class OpticalPath:
    """How the slide was lit and seen. Without ``icc_profile`` an sRGB profile is written."""

    identifier: str = "1"
    description: str = ""
    illumination: Code = BRIGHTFIELD
    illumination_color: Code = FULL_SPECTRUM
    icc_profile: bytes | None = None
    objective_power: float | None = None
    numerical_aperture: float | None = None


@dataclass(frozen=True)
class Equipment:
    """The scanner that acquired the slide and the software that wrote the DICOM."""

    manufacturer: str = "Unknown"
    model_name: str = "Unknown"
    serial_number: str = "Unknown"
    software_versions: tuple[str, ...] = ("archipel",)
    institution: str = ""


@dataclass(frozen=True)
class SlideMetadata:
    """Everything the instances of one slide share.

    UIDs that the caller does not give (pyramid, frame of reference, specimen, instances) are derived from the
    series UID, so converting the same slide into the same series twice yields the same instances.
    """

    patient: Patient
    study: Study
    series: Series
    specimen: Specimen
    slide: Slide = field(default_factory=Slide)
    optical_path: OpticalPath = field(default_factory=OpticalPath)
    equipment: Equipment = field(default_factory=Equipment)
    acquired: dt.datetime | None = None
    pyramid_label: str = ""

    def derived_uid(self, *role: object) -> UID:
        """A UID that depends only on the series UID and ``role`` (e.g. ``("level", 2)``)."""
        # A name-based (version 5) UUID under 2.25 (PS3.5 B.2): deterministic, and unique as long as the
        # series UID is.
        name = "/".join([self.series.series_uid, *map(str, role)])
        return UID(f"2.25.{uuid.uuid5(uuid.NAMESPACE_OID, name).int}")
