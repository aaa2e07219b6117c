"""The slide's associated images as DICOM WSI instances: LABEL, OVERVIEW (macro) and THUMBNAIL.

Each is one instance of a single frame. A stored JPEG or JPEG 2000 image passes through unchanged when it is a
complete baseline codestream; anything else is encoded. The label is confidential content: with
``include_label`` false it is not written, nor an overview that shows it, so that exports can leave it out.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass
from pathlib import Path

import imagecodecs
import numpy as np

from archipel.tiles.codestream import CodestreamError, bare_codestream, inspect_codestream
from archipel.tiles.pyramid import Codec, RawTile, Size
from archipel.wsi.dicom.encapsulated import EncapsulatedFile, OffsetTable
from archipel.wsi.dicom.frames import EncodeSettings, FrameFormat, encode_frame, format_for
from archipel.wsi.dicom.image import ImageFlavor, ImageSpec, image_dataset
from archipel.wsi.dicom.metadata import SlideMetadata

log = logging.getLogger(__name__)

#: Nominal width of a microscope slide (ISO 8037-1: 25-26 mm), the scale assumed for an overview or label.
SLIDE_WIDTH_MM = 25.0
_INSTANCE_NUMBERS = {ImageFlavor.LABEL: 1001, ImageFlavor.OVERVIEW: 1002, ImageFlavor.THUMBNAIL: 1003}


@dataclass(frozen=True)
class AssociatedImage:
    """A label, overview or thumbnail image, as pixels (RGB ``uint8``), as a stored codestream, or both.

    ``shows_label`` says whether the slide's label is visible in it; by default true for the label and the
    overview (a macro photograph usually shows the whole slide), false for the thumbnail. ``pixel_spacing`` (mm)
    of a label or overview, when the source knows it.
    """

    flavor: ImageFlavor
    pixels: np.ndarray | None = None
    raw: RawTile | None = None
    shows_label: bool | None = None
    pixel_spacing: float | None = None

    def __post_init__(self) -> None:
        if self.flavor == ImageFlavor.VOLUME:
            raise ValueError("an associated image is a LABEL, OVERVIEW or THUMBNAIL, not a VOLUME")
        if self.pixels is None and self.raw is None:
            raise ValueError(f"{self.flavor.value.lower()} image has neither pixels nor a stored codestream")

    @property
    def label_visible(self) -> bool:
        """Whether the label shows in this image."""
        if self.shows_label is not None:
            return self.shows_label
        return self.flavor in (ImageFlavor.LABEL, ImageFlavor.OVERVIEW)


def _passthrough(raw: RawTile | None) -> tuple[bytes, FrameFormat, Size] | None:
    """The stored codestream and its format when it can be the frame as is."""
    if raw is None or raw.codec not in (Codec.JPEG, Codec.JPEG2000) or not raw.data:
        return None
    try:
        info = inspect_codestream(raw.data, raw.codec)
        fmt = format_for(raw.codec, info.photometric)
    except (CodestreamError, ValueError):
        return None
    if not (info.complete and info.baseline and info.components == 3 and info.bits == 8):
        return None
    data = bare_codestream(raw.data, raw.codec)
    return data, fmt, Size(info.width, info.height)


def _pixels(image: AssociatedImage) -> np.ndarray:
    if image.pixels is not None:
        pixels = image.pixels
    else:
        assert image.raw is not None
        pixels = np.asarray(imagecodecs.imread(image.raw.data))
    if pixels.ndim == 2:
        pixels = np.repeat(pixels[..., None], 3, axis=2)
    return np.ascontiguousarray(pixels[..., :3].astype(np.uint8, copy=False))


def write_associated(
    image: AssociatedImage,
    meta: SlideMetadata,
    out_dir: Path,
    pyramid_uid: str,
    now: dt.datetime,
    include_label: bool,
    base_size: Size,
    mpp: tuple[float, float],
    settings: EncodeSettings,
) -> Path | None:
    """Write one associated image as ``label.dcm``, ``overview.dcm`` or ``thumbnail.dcm``; ``None`` if left out."""
    if image.label_visible and not include_label:
        log.info("dicom_wsi.associated_omitted image=%s reason=label-excluded", image.flavor.value.lower())
        return None
    stored = _passthrough(image.raw)
    if stored is not None:
        frame, fmt, size = stored
    else:
        pixels = _pixels(image)
        fmt = format_for(settings.codec, settings.photometric)
        size = Size(pixels.shape[1], pixels.shape[0])
        frame = encode_frame(pixels, fmt, settings.quality)
    if image.flavor == ImageFlavor.THUMBNAIL:
        # A thumbnail covers the whole slide, so its pixels are level 0's scaled by the size ratio.
        spacing = (
            mpp[0] * base_size.width / size.width / 1000,
            mpp[1] * base_size.height / size.height / 1000,
        )
    else:
        # Pixel Measures is Type 1 even for a label or overview, whose scale sources rarely give: nominally,
        # the image's height spans the slide's width.
        side = image.pixel_spacing or SLIDE_WIDTH_MM / size.height
        spacing = (side, side)
    spec = ImageSpec(
        sop_instance_uid=meta.derived_uid("associated", image.flavor.value),
        instance_number=_INSTANCE_NUMBERS[image.flavor],
        flavor=image.flavor,
        size=size,
        tile=size,
        frames=1,
        fmt=fmt,
        original=image.flavor != ImageFlavor.THUMBNAIL,
        pixel_spacing=spacing,
        specimen_label_in_image=image.label_visible,
        compression_ratio=size.width * size.height * 3 / len(frame),
    )
    dataset = image_dataset(meta, spec, pyramid_uid, now)
    path = out_dir / f"{image.flavor.value.lower()}.dcm"
    with EncapsulatedFile(path, dataset, fmt.transfer_syntax, 1, OffsetTable.BASIC) as out:
        out.write_frame(frame)
        return out.close()
