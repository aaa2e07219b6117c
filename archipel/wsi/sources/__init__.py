"""Slide sources: everything that reads a whole-slide image file into a tile pyramid.

:func:`open_slide` picks the reader: tifffile for Aperio SVS, OME-TIFF and generic pyramidal TIFF (raw tiles pass
through), wsidicom for DICOM WSI (raw frames pass through), OpenSlide for every other vendor format (decoded).
"""

from archipel.wsi.sources.base import AssociatedImage, AssociatedKind, SlideError, SlideSource
from archipel.wsi.sources.detect import open_slide

__all__ = ["AssociatedImage", "AssociatedKind", "SlideError", "SlideSource", "open_slide"]
