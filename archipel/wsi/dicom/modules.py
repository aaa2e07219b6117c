"""The slide's metadata as DICOM modules (PS3.3 A.32.8, VL Whole Slide Microscopy Image IOD).

One function per group of modules, each returning the attributes it owns, so that the mapping from
:mod:`archipel.wsi.dicom.metadata` to DICOM lives here and nowhere else.
"""

from __future__ import annotations

import datetime as dt
from functools import cache

from PIL import ImageCms
from pydicom import Dataset
from pydicom.sequence import Sequence

from archipel.wsi.dicom.metadata import KNOWN_STAINS, Code, SlideMetadata

#: VL Whole Slide Microscopy Image Storage.
WSI_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.77.1.6"


@cache
def srgb_profile() -> bytes:
    """An sRGB ICC profile, written when the source carries none (the Optical Path module requires one)."""
    return bytes(ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes())


def code_item(code: Code) -> Dataset:
    """A code sequence item (Basic Code Sequence Macro)."""
    item = Dataset()
    item.CodeValue = code.value
    item.CodingSchemeDesignator = code.scheme
    item.CodeMeaning = code.meaning
    return item


def _da(value: dt.date | None) -> str:
    return value.strftime("%Y%m%d") if value else ""


def _tm(value: dt.datetime | None) -> str:
    return value.strftime("%H%M%S") if value else ""


def common_modules(meta: SlideMetadata) -> Dataset:
    """Patient, General Study, General Series, Frame of Reference, General and Enhanced General Equipment,
    Specimen and Optical Path: what every instance of the slide shares."""
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.SOPClassUID = WSI_SOP_CLASS
    ds.Modality = "SM"
    _patient(ds, meta)
    _study(ds, meta)
    ds.SeriesInstanceUID = meta.series.series_uid
    ds.SeriesNumber = meta.series.number
    if meta.series.description:
        ds.SeriesDescription = meta.series.description
    ds.FrameOfReferenceUID = meta.derived_uid("frame-of-reference")
    # The slide's corner is the origin of the slide coordinate system (C.7.4.1.1.2).
    ds.PositionReferenceIndicator = "SLIDE_CORNER"
    _equipment(ds, meta)
    _specimen(ds, meta)
    _optical_path(ds, meta)
    return ds


def _patient(ds: Dataset, meta: SlideMetadata) -> None:
    patient = meta.patient
    ds.PatientName = patient.name
    ds.PatientID = patient.patient_id
    if patient.issuer:
        ds.IssuerOfPatientID = patient.issuer
    ds.PatientBirthDate = _da(patient.birth_date)
    ds.PatientSex = patient.sex


def _study(ds: Dataset, meta: SlideMetadata) -> None:
    study = meta.study
    ds.StudyInstanceUID = study.study_uid
    ds.StudyDate = _da(study.date)
    ds.StudyTime = _tm(study.date)
    ds.ReferringPhysicianName = ""
    ds.StudyID = study.study_id
    ds.AccessionNumber = study.accession
    if study.description:
        ds.StudyDescription = study.description


def _equipment(ds: Dataset, meta: SlideMetadata) -> None:
    equipment = meta.equipment
    ds.Manufacturer = equipment.manufacturer
    ds.ManufacturerModelName = equipment.model_name
    ds.DeviceSerialNumber = equipment.serial_number
    ds.SoftwareVersions = list(equipment.software_versions)
    if equipment.institution:
        ds.InstitutionName = equipment.institution


def _content_item(name: Code, value: Code | str) -> Dataset:
    """One content item of a specimen preparation step (TID 8001), coded or text."""
    item = Dataset()
    item.ConceptNameCodeSequence = Sequence([code_item(name)])
    if isinstance(value, Code):
        item.ValueType = "CODE"
        item.ConceptCodeSequence = Sequence([code_item(value)])
    else:
        item.ValueType = "TEXT"
        item.TextValue = value
    return item


_SPECIMEN_IDENTIFIER = Code("121041", "DCM", "Specimen Identifier")
_PROCESSING_TYPE = Code("111701", "DCM", "Processing type")
_STAINING = Code("127790008", "SCT", "Staining")
_USING_SUBSTANCE = Code("424361007", "SCT", "Using substance")
_SLIDE_CONTAINER = Code("433466003", "SCT", "Microscope slide")


def _specimen(ds: Dataset, meta: SlideMetadata) -> None:
    specimen = meta.specimen
    ds.ContainerIdentifier = specimen.container_id
    ds.IssuerOfTheContainerIdentifierSequence = Sequence()
    ds.ContainerTypeCodeSequence = Sequence([code_item(_SLIDE_CONTAINER)])
    description = Dataset()
    description.SpecimenIdentifier = specimen.identifier
    description.SpecimenUID = meta.derived_uid("specimen")
    description.IssuerOfTheSpecimenIdentifierSequence = Sequence()
    if specimen.description:
        description.SpecimenShortDescription = specimen.description[:64]
    steps = []
    if specimen.stains:
        items = [
            _content_item(_SPECIMEN_IDENTIFIER, specimen.identifier),
            _content_item(_PROCESSING_TYPE, _STAINING),
        ]
        for stain in specimen.stains:
            codes = KNOWN_STAINS.get(stain.strip().lower())
            values: tuple[Code | str, ...] = codes if codes else (stain,)
            items.extend(_content_item(_USING_SUBSTANCE, value) for value in values)
        step = Dataset()
        step.SpecimenPreparationStepContentItemSequence = Sequence(items)
        steps.append(step)
    description.SpecimenPreparationSequence = Sequence(steps)
    ds.SpecimenDescriptionSequence = Sequence([description])


def _optical_path(ds: Dataset, meta: SlideMetadata) -> None:
    path = meta.optical_path
    item = Dataset()
    item.OpticalPathIdentifier = path.identifier
    if path.description:
        item.OpticalPathDescription = path.description
    item.IlluminationTypeCodeSequence = Sequence([code_item(path.illumination)])
    item.IlluminationColorCodeSequence = Sequence([code_item(path.illumination_color)])
    item.ICCProfile = path.icc_profile or srgb_profile()
    if path.objective_power is not None:
        item.ObjectiveLensPower = f"{path.objective_power:g}"
    if path.numerical_aperture is not None:
        item.ObjectiveLensNumericalAperture = f"{path.numerical_aperture:g}"
    ds.NumberOfOpticalPaths = 1
    ds.OpticalPathSequence = Sequence([item])
