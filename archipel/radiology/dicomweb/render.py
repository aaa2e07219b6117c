"""Rendered images of stored frames (PS3.18 §8.3.5 and §9.5): decode one frame, apply the modality and VOI
transforms, fit it to a viewport and encode it as JPEG or PNG.

Only the requested frame is decoded: pydicom reads that frame's bytes from the open blob.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
import pydicom
from PIL import Image
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.pixels import pixel_array

from archipel.platform.storage import BlobStore
from archipel.radiology.dicomweb.header import read_header
from archipel.radiology.dicomweb.mediatypes import DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN, MediaRange
from archipel.radiology.dicomweb.resources import StoredInstance

RENDERED_TYPES = ("image/jpeg", "image/png")
THUMBNAIL_SIZE = 128
_VOI_FUNCTIONS = ("linear", "linear-exact", "sigmoid")


class RenderRequestError(ValueError):
    """A query parameter of a rendered request that cannot be honoured; ``reason`` names it."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class Window:
    """A VOI window: centre and width in modality units, and the VOI LUT function."""

    center: float
    width: float
    function: str = "linear"


@dataclass(frozen=True)
class Viewport:
    """The size, in pixels, the rendered image must fit into."""

    width: int
    height: int


def parse_window(text: str | None) -> Window | None:
    """The ``window=center,width,function`` query parameter (function ``linear`` when left out)."""
    if not text:
        return None
    pieces = [p.strip() for p in text.split(",")]
    if len(pieces) not in (2, 3):
        raise RenderRequestError(f"window {text!r} must be center,width[,function]")
    try:
        center, width = float(pieces[0]), float(pieces[1])
    except ValueError as exc:
        raise RenderRequestError(f"window {text!r}: center and width must be numbers") from exc
    function = pieces[2].lower() if len(pieces) == 3 else "linear"
    if function not in _VOI_FUNCTIONS:
        raise RenderRequestError(f"window function {function!r} is not one of {', '.join(_VOI_FUNCTIONS)}")
    if width <= 0 or (function == "linear" and width < 1):
        raise RenderRequestError(f"window width {width} is too small")
    return Window(center, width, function)


def parse_viewport(text: str | None) -> Viewport | None:
    """The ``viewport=width,height`` query parameter (source-region values after them are ignored)."""
    if not text:
        return None
    pieces = [p.strip() for p in text.split(",")]
    if len(pieces) < 2 or not pieces[0].isdigit() or not pieces[1].isdigit():
        raise RenderRequestError(f"viewport {text!r} must be width,height in pixels")
    width, height = int(pieces[0]), int(pieces[1])
    if not (0 < width <= 8192 and 0 < height <= 8192):
        raise RenderRequestError(f"viewport {text!r} must be between 1 and 8192 pixels on each side")
    return Viewport(width, height)


def choose_rendered_type(ranges: list[MediaRange]) -> str | None:
    """``image/jpeg`` or ``image/png`` as the caller prefers (JPEG when it does not say); ``None``: neither."""
    if not ranges:
        return "image/jpeg"
    for r in ranges:
        wanted = r.part_type
        if wanted in RENDERED_TYPES:
            return wanted
        if wanted in ("", "*/*", "image/*"):
            return "image/jpeg"
    return None


def render_frame(
    blobs: BlobStore,
    instance: StoredInstance,
    number: int,
    *,
    media_type: str,
    window: Window | None = None,
    viewport: Viewport | None = None,
    quality: int = 90,
) -> bytes:
    """Frame ``number`` (1-based) rendered for display, encoded as ``media_type``."""
    header = read_header(blobs, instance)
    if instance.transfer_syntax == DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN:
        # pydicom cannot find Pixel Data inside a deflated stream read from a file: inflate the whole object.
        pixels = pixel_array(pydicom.dcmread(io.BytesIO(blobs.get(instance.blob_key))), index=number - 1)
    else:
        with blobs.open(instance.blob_key) as handle:
            pixels = pixel_array(handle, index=number - 1)
    image = Image.fromarray(_to_display(pixels, header, window))
    if viewport is not None:
        scale = min(viewport.width / image.width, viewport.height / image.height)
        size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
        image = image.resize(size, Image.Resampling.LANCZOS)
    out = io.BytesIO()
    if media_type == "image/png":
        image.save(out, format="PNG")
    else:
        image.save(out, format="JPEG", quality=quality)
    return out.getvalue()


def _to_display(pixels: np.ndarray, ds: Dataset, window: Window | None) -> np.ndarray:
    """8-bit greyscale or RGB pixels for display."""
    samples = int(ds.get("SamplesPerPixel", 1) or 1)
    if samples != 1:
        if pixels.dtype == np.uint8:
            return pixels
        stored = int(ds.get("BitsStored", 8) or 8)
        return np.clip(pixels.astype(np.float64) * (255.0 / ((1 << stored) - 1)), 0, 255).astype(np.uint8)
    values = pixels.astype(np.float64)
    slope = float(ds.get("RescaleSlope", 1) or 1)
    intercept = float(ds.get("RescaleIntercept", 0) or 0)
    values = values * slope + intercept
    window = window or _dataset_window(ds) or _full_range(values)
    out = _apply_voi(values, window)
    if str(ds.get("PhotometricInterpretation", "")).strip() == "MONOCHROME1":
        out = 255.0 - out
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def _first(value: object) -> float | None:
    """The first value of a possibly multi-valued numeric attribute."""
    if isinstance(value, MultiValue | list | tuple):
        value = value[0] if len(value) else None
    if value is None or value == "":
        return None
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None


def _dataset_window(ds: Dataset) -> Window | None:
    center, width = _first(ds.get("WindowCenter")), _first(ds.get("WindowWidth"))
    if center is None or width is None or width <= 0:
        return None
    function = str(ds.get("VOILUTFunction", "LINEAR") or "LINEAR").lower().replace("_", "-")
    return Window(center, max(width, 1.0), function if function in _VOI_FUNCTIONS else "linear")


def _full_range(values: np.ndarray) -> Window:
    low, high = float(values.min()), float(values.max())
    return Window((low + high) / 2, max(high - low, 1.0), "linear-exact")


def _apply_voi(values: np.ndarray, window: Window) -> np.ndarray:
    """The VOI LUT functions of PS3.3 §C.11.2.1.2, mapped onto 0..255."""
    c, w = window.center, window.width
    if window.function == "sigmoid":
        return 255.0 / (1.0 + np.exp(-4.0 * (values - c) / w))
    if window.function == "linear-exact":
        return np.clip((values - c) / w + 0.5, 0.0, 1.0) * 255.0
    return np.clip((values - (c - 0.5)) / (w - 1) + 0.5, 0.0, 1.0) * 255.0
