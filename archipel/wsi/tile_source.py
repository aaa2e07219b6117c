"""What the tile service serves for a slide: its source file until the conversion ends, then its DICOM WSI.

This fills in :class:`archipel.tiles.views.SlideResolver` (``tiles`` does not import ``wsi``). A slide is viewable
as soon as its upload is stored (status ``received``): its source is read through :func:`open_slide` (tifffile,
OpenSlide, wsidicom). Once ``ready``, it is read from the DICOM WSI instances the archive holds, whose level-0
tiles are the source's (passed through) and whose other levels are the factor-2 ones conversion wrote, so the
Deep Zoom geometry stays the same and every level has stored tiles.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
from pathlib import Path

from sqlalchemy import select

from archipel.platform.runtime import Runtime
from archipel.platform.storage import BlobStore, BlobStoreError
from archipel.radiology.models import Instance, Series
from archipel.tiles.pyramid import Pyramid
from archipel.tiles.views import SlideRef, SlideUnavailable, register_resolver
from archipel.wsi.models import READY, Slide
from archipel.wsi.slide_access import resource_of
from archipel.wsi.slides import source_store
from archipel.wsi.sources import SlideError, open_slide

log = logging.getLogger("archipel.tiles")

SOURCE, DICOM = "source", "dicom"


def _views_dir(rt: Runtime) -> Path:
    return rt.settings.data_dir / "tile-views"


def _materialise(store: BlobStore, key: str, target: Path) -> None:
    """``target`` names the blob ``key``: a symbolic link for a file store, else a local copy."""
    if target.exists():
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".partial")
    path_of = getattr(store, "path", None)
    if path_of is not None:
        partial.unlink(missing_ok=True)
        partial.symlink_to(path_of(key))
    else:
        with store.open(key) as src, partial.open("wb") as dst:
            shutil.copyfileobj(src, dst, 1 << 20)
    os.replace(partial, target)  # atomic, so that two requests opening the slide at once both see it whole


class SlideTileSource:
    """The :class:`~archipel.tiles.views.SlideResolver` of uploaded slides."""

    def describe(self, rt: Runtime, slide_id: str) -> SlideRef | None:
        """The slide's owner and serving pyramid: the DICOM WSI once ready (final), else the source."""
        with rt.db.sessions() as s:
            slide = s.get(Slide, slide_id)
        if slide is None:
            return None
        resource = resource_of(slide)
        if slide.status == READY and slide.series_uid:
            version = "d" + hashlib.sha256(slide.series_uid.encode()).hexdigest()[:12]
            return SlideRef(slide.id, resource, version, True, (DICOM, slide.series_uid))
        suffix = Path(slide.filename).suffix.lower() or ".bin"
        return SlideRef(
            slide.id, resource, "s" + slide.source_key[:12], False, (SOURCE, slide.source_key, suffix)
        )

    def open(self, rt: Runtime, ref: SlideRef) -> Pyramid:
        """Open the source file, or the series' instances as one DICOM WSI folder."""
        kind = ref.locator[0]
        try:
            if kind == DICOM:
                return self._series(rt, ref.locator[1])
            _, key, suffix = ref.locator
            # Some readers (OpenSlide) look at the extension: the view keeps the uploaded file's.
            target = _views_dir(rt) / "sources" / f"{key}{suffix}"
            _materialise(source_store(rt.settings), key, target)
            return open_slide(target)
        except SlideError as exc:
            log.warning("event=slide_view_failed slide=%s kind=%s reason=%s", ref.slide_id, kind, exc.reason)
            raise SlideUnavailable(exc.reason) from exc
        except (KeyError, FileNotFoundError) as exc:
            raise SlideUnavailable("the slide's pixels are missing from the store") from exc
        except BlobStoreError as exc:  # the object store does not answer: say so, without its trace
            log.warning("event=slide_view_failed slide=%s kind=%s reason=%s", ref.slide_id, kind, exc)
            raise SlideUnavailable("the slide's store cannot be read right now") from exc

    def _series(self, rt: Runtime, series_uid: str) -> Pyramid:
        """The series' instances as one DICOM WSI: read in place by ranged GETs from an object store that gives
        URLs (S3), else from a folder of their files (links to the filesystem store's)."""
        url_of = getattr(rt.blobs, "url_of", None)
        options_of = getattr(rt.blobs, "storage_options", None)
        if url_of is not None and options_of is not None:
            # wsidicom is imported when first needed, as open_slide does.
            from archipel.wsi.sources.dicom import DicomSlide

            return DicomSlide([url_of(key) for key in self._blob_keys(rt, series_uid)], options_of())
        return open_slide(self._series_folder(rt, series_uid))

    def _blob_keys(self, rt: Runtime, series_uid: str) -> list[str]:
        with rt.db.sessions() as s:
            keys = s.execute(
                select(Instance.blob_key)
                .join(Series, Series.id == Instance.series_pk)
                .where(Series.series_uid == series_uid)
                .order_by(Instance.instance_number, Instance.id)
            ).scalars()
            blob_keys = list(keys)
        if not blob_keys:
            raise SlideUnavailable("the slide's DICOM WSI series has no instances")
        return blob_keys

    def _series_folder(self, rt: Runtime, series_uid: str) -> Path:
        blob_keys = self._blob_keys(rt, series_uid)
        folder = _views_dir(rt) / "series" / hashlib.sha256(series_uid.encode()).hexdigest()[:24]
        for i, key in enumerate(blob_keys):
            _materialise(rt.blobs, key, folder / f"{i:04d}.dcm")
        return folder


def install() -> None:
    """Register the slide resolver with the tile service."""
    register_resolver(SlideTileSource())
