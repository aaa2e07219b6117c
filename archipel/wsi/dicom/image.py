"""The header of one VL Whole Slide Microscopy Image instance: image type, geometry, frames and functional groups.

:class:`ImageSpec` is what differs between the instances of a slide (a pyramid level, a part of a
concatenation, the label, the overview, the thumbnail); :func:`image_dataset` adds it to the modules the slide's
instances share (:func:`archipel.wsi.dicom.modules.common_modules`).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from enum import StrEnum

from pydicom import Dataset
from pydicom.sequence import Sequence
from pydicom.valuerep import DSfloat

from archipel.tiles.pyramid import Size
from archipel.wsi.dicom.frames import FrameFormat
from archipel.wsi.dicom.metadata import SlideMetadata
from archipel.wsi.dicom.modules import common_modules


class ImageFlavor(StrEnum):
    """Value 3 of Image Type for a whole slide image (C.8.12.4.1.1)."""

    VOLUME = "VOLUME"
    LABEL = "LABEL"
    OVERVIEW = "OVERVIEW"
    THUMBNAIL = "THUMBNAIL"


@dataclass(frozen=True)
class Concatenation:
    """Where one part sits in a concatenation (C.7.6.16.2.2.4): its number and the frames before it."""

    uid: str
    source_uid: str
    number: int
    frame_offset: int


@dataclass(frozen=True)
class ImageSpec:
    """What one instance is.

    ``pixel_spacing`` is (column, row) spacing in mm, ``None`` when unknown (label, overview).
    ``original`` marks the scanner's own pixels (ORIGINAL\\PRIMARY\\...\\NONE); resampled levels are DERIVED.
    """

    sop_instance_uid: str
    instance_number: int
    flavor: ImageFlavor
    size: Size
    tile: Size
    frames: int
    fmt: FrameFormat
    original: bool
    pixel_spacing: tuple[float, float] | None
    specimen_label_in_image: bool = False
    concatenation: Concatenation | None = None
    compression_ratio: float | None = None


def image_type(spec: ImageSpec) -> list[str]:
    """Image Type / Frame Type: ORIGINAL\\PRIMARY\\VOLUME\\NONE for the scanned level, DERIVED...RESAMPLED below."""
    if spec.original:
        return ["ORIGINAL", "PRIMARY", spec.flavor.value, "NONE"]
    return ["DERIVED", "PRIMARY", spec.flavor.value, "RESAMPLED"]


def image_dataset(meta: SlideMetadata, spec: ImageSpec, pyramid_uid: str, now: dt.datetime) -> Dataset:
    """The complete header (all but Pixel Data) of the instance ``spec`` describes."""
    ds = common_modules(meta)
    ds.SOPInstanceUID = spec.sop_instance_uid
    ds.InstanceNumber = spec.instance_number
    ds.InstanceCreationDate = now.strftime("%Y%m%d")
    ds.InstanceCreationTime = now.strftime("%H%M%S")
    acquired = meta.acquired or now
    ds.ContentDate = acquired.strftime("%Y%m%d")
    ds.ContentTime = acquired.strftime("%H%M%S")
    ds.AcquisitionDateTime = acquired.strftime("%Y%m%d%H%M%S")
    ds.AcquisitionDuration = 0.0
    ds.PyramidUID = pyramid_uid
    if meta.pyramid_label:
        ds.PyramidLabel = meta.pyramid_label
    _whole_slide_image(ds, spec)
    _pixels(ds, spec)
    _functional_groups(ds, meta, spec)
    if spec.flavor == ImageFlavor.LABEL:
        _slide_label(ds, meta)
    elif meta.slide.barcode:
        # The Slide Label module may be present on any image (A.32.8-1, C); the barcode identifies the slide in
        # the lab, unlike the label's free text, which stays with the label image.
        ds.BarcodeValue = meta.slide.barcode
        ds.LabelText = ""
    ds.AcquisitionContextSequence = Sequence()
    if spec.concatenation is not None:
        part = spec.concatenation
        ds.ConcatenationUID = part.uid
        ds.SOPInstanceUIDOfConcatenationSource = part.source_uid
        ds.InConcatenationNumber = part.number
        ds.ConcatenationFrameOffsetNumber = part.frame_offset
    return ds


def _whole_slide_image(ds: Dataset, spec: ImageSpec) -> None:
    ds.ImageType = image_type(spec)
    ds.TotalPixelMatrixColumns = spec.size.width
    ds.TotalPixelMatrixRows = spec.size.height
    ds.TotalPixelMatrixFocalPlanes = 1
    origin = Dataset()
    origin.XOffsetInSlideCoordinateSystem = 0.0
    origin.YOffsetInSlideCoordinateSystem = 0.0
    ds.TotalPixelMatrixOriginSequence = Sequence([origin])
    # Rows run along the slide's -Y axis and columns along its -X axis, the usual scanner layout (C.8.12.4.1.4).
    ds.ImageOrientationSlide = [0.0, -1.0, 0.0, -1.0, 0.0, 0.0]
    if spec.pixel_spacing is not None:
        ds.ImagedVolumeWidth = spec.size.width * spec.pixel_spacing[0]
        ds.ImagedVolumeHeight = spec.size.height * spec.pixel_spacing[1]
        ds.ImagedVolumeDepth = 1.0  # micrometres; one focal plane of nominal depth
    ds.VolumetricProperties = "VOLUME"
    ds.SpecimenLabelInImage = "YES" if spec.specimen_label_in_image else "NO"
    ds.BurnedInAnnotation = "YES" if spec.specimen_label_in_image else "NO"
    ds.FocusMethod = "AUTO"
    ds.ExtendedDepthOfField = "NO"
    ds.DimensionOrganizationType = "TILED_FULL"
    ds.NumberOfFrames = spec.frames


def _pixels(ds: Dataset, spec: ImageSpec) -> None:
    ds.SamplesPerPixel = 3
    ds.PhotometricInterpretation = spec.fmt.photometric
    ds.PlanarConfiguration = 0
    ds.Rows = spec.tile.height
    ds.Columns = spec.tile.width
    ds.BitsAllocated = 8
    ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0
    ds.LossyImageCompression = "01" if spec.fmt.lossy else "00"
    if spec.fmt.lossy:
        # The ratio is "approximate" (C.7.6.1.1.5): estimated from a sample of tiles, as frames are streamed.
        ds.LossyImageCompressionRatio = DSfloat(max(1.0, spec.compression_ratio or 1.0), auto_format=True)
        ds.LossyImageCompressionMethod = spec.fmt.compression_method


def _functional_groups(ds: Dataset, meta: SlideMetadata, spec: ImageSpec) -> None:
    dimension = Dataset()
    dimension.DimensionOrganizationUID = meta.derived_uid("dimension-organization")
    ds.DimensionOrganizationSequence = Sequence([dimension])
    shared = Dataset()
    if spec.pixel_spacing is not None:
        measures = Dataset()
        # Pixel Spacing is row spacing (between rows, i.e. vertical) first, then column spacing.
        measures.PixelSpacing = [DSfloat(v, auto_format=True) for v in reversed(spec.pixel_spacing)]
        measures.SliceThickness = 0.001
        shared.PixelMeasuresSequence = Sequence([measures])
    frame_type = Dataset()
    frame_type.FrameType = image_type(spec)
    shared.WholeSlideMicroscopyImageFrameTypeSequence = Sequence([frame_type])
    optical = Dataset()
    optical.OpticalPathIdentifier = meta.optical_path.identifier
    shared.OpticalPathIdentificationSequence = Sequence([optical])
    ds.SharedFunctionalGroupsSequence = Sequence([shared])


def _slide_label(ds: Dataset, meta: SlideMetadata) -> None:
    ds.BarcodeValue = meta.slide.barcode
    ds.LabelText = meta.slide.label_text
