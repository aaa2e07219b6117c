"""Slide sources as blob references of the storage lifecycle (``platform.blob_refs``), in a store of their own.

Importing this module registers them. Slide sources live in ``wsi_source_url``, not in the runtime's blob store:
fixity checks them and the replica holds a copy of each; they have one tier (the DICOM WSI instances converted
from them are the archive's, and are tiered with their study).
"""

from __future__ import annotations

from sqlalchemy import select

from archipel.platform import blob_refs
from archipel.wsi.models import Slide
from archipel.wsi.slides import source_store

SLIDE_SOURCES = "slide-sources"


def slide_sources() -> blob_refs.ReferenceSelect:
    """Every slide's source file, keyed by its SHA-256, dated by the slide's last change."""
    return select(
        Slide.source_key.label("key"),
        Slide.source_key.label("sha256"),
        Slide.source_size.label("size"),
        Slide.updated_at.label("last_active"),
    )


blob_refs.register_store(SLIDE_SOURCES, source_store)
blob_refs.register_source("wsi.slide_sources", SLIDE_SOURCES, slide_sources)
