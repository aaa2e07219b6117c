"""Recognise a slide file and open it with the reader that does the most with it."""

from __future__ import annotations

import logging
from pathlib import Path

import openslide
import tifffile

from archipel.wsi.sources.base import SlideError, SlideSource

log = logging.getLogger(__name__)

_TIFF_MAGIC = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")
# TIFF-based vendor formats whose structure only OpenSlide understands (or which store extra tile maps).
_OPENSLIDE_TIFF_FLAGS = ("is_ndpi", "is_philips", "is_scn", "is_bif")


def _is_dicom(path: Path) -> bool:
    if path.is_dir():
        return any(_is_dicom(p) for p in sorted(path.iterdir())[:20] if p.is_file())
    with path.open("rb") as f:
        head = f.read(132)
    return len(head) == 132 and head[128:132] == b"DICM"


def _tiff_kind(tif: tifffile.TiffFile) -> str | None:
    """``svs``, ``ome`` or ``generic`` for TIFFs we read ourselves; ``None`` for vendor TIFFs left to OpenSlide."""
    if any(getattr(tif, flag, False) for flag in _OPENSLIDE_TIFF_FLAGS):
        return None
    first = tif.pages.first
    if tif.is_svs or (first.description or "").startswith("Aperio"):
        return "svs"
    if tif.is_ome:
        return "ome"
    return "generic"


def open_slide(path: Path | str) -> SlideSource:
    """Open the slide at ``path`` (a file, or a folder of DICOM instances).

    Raises :class:`SlideError` with a reason for a missing, empty, truncated or corrupt file, a format no reader
    supports, or a slide without tissue levels.
    """
    path = Path(path)
    if not path.exists():
        raise SlideError("no such file", path.name)
    if path.is_file() and path.stat().st_size == 0:
        raise SlideError("empty file", path.name)
    if _is_dicom(path):
        from archipel.wsi.sources.dicom import DicomSlide

        try:
            return DicomSlide(path)
        except SlideError:
            # OpenSlide 4 reads some DICOM WSI that wsidicom refuses (e.g. missing Image Type); decoded only.
            if openslide.OpenSlide.detect_format(str(path)) != "dicom":
                raise
            from archipel.wsi.sources.openslide_source import OpenSlideSource

            log.info("event=slide_open reader=openslide vendor=dicom")
            return OpenSlideSource(path)
    if path.is_dir():
        raise SlideError("a folder without DICOM instances is not a slide", path.name)
    with path.open("rb") as f:
        magic = f.read(4)
    if magic in _TIFF_MAGIC:
        try:
            tif = tifffile.TiffFile(path)
        except Exception as exc:  # tifffile raises TiffFileError, ValueError, struct.error... on broken files
            raise SlideError(f"truncated or corrupt TIFF: {exc}", path.name) from exc
        try:
            kind = _tiff_kind(tif)
        except Exception as exc:
            tif.close()
            raise SlideError(f"truncated or corrupt TIFF: {exc}", path.name) from exc
        if kind is not None:
            from archipel.wsi.sources.tiff import TiffSlide

            return TiffSlide(path, tif, kind)
        tif.close()
    vendor = openslide.OpenSlide.detect_format(str(path))
    if vendor is None:
        if magic in _TIFF_MAGIC:
            raise SlideError("no tissue levels: a TIFF that no reader recognises as a slide", path.name)
        raise SlideError("unsupported format: not a TIFF, DICOM or vendor slide file", path.name)
    from archipel.wsi.sources.openslide_source import OpenSlideSource

    log.info("event=slide_open reader=openslide vendor=%s", vendor)
    return OpenSlideSource(path)
