"""DICOM VL Whole Slide Microscopy Image output: a pyramid and its associated images as DICOM WSI instances.

Tiles pass through byte for byte where DICOM can carry them; frames stream to disk with a Basic or Extended
Offset Table, or split into a concatenation; metadata (patient, study, specimen, optical path, equipment) is
mapped to DICOM in :mod:`archipel.wsi.dicom.modules`.
"""

from archipel.wsi.dicom.associated import AssociatedImage
from archipel.wsi.dicom.frames import EncodeSettings, FrameStats
from archipel.wsi.dicom.image import ImageFlavor
from archipel.wsi.dicom.metadata import (
    Code,
    Equipment,
    OpticalPath,
    Patient,
    Series,
    Slide,
    SlideMetadata,
    Specimen,
    Study,
)
from archipel.wsi.dicom.writer import TablePolicy, WriteOptions, WriteReport, write_dicom_wsi

__all__ = [
    "AssociatedImage",
    "Code",
    "EncodeSettings",
    "Equipment",
    "FrameStats",
    "ImageFlavor",
    "OpticalPath",
    "Patient",
    "Series",
    "Slide",
    "SlideMetadata",
    "Specimen",
    "Study",
    "TablePolicy",
    "WriteOptions",
    "WriteReport",
    "write_dicom_wsi",
]
