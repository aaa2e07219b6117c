"""Where a ready slide's OME-Zarr store lives, and how it is opened: beside the blobs, on disk or in the bucket.

The converter builds the store as a folder in the slide's work dir (:mod:`archipel.wsi.zarr_writer`). With the
filesystem blob store it is moved to ``DATA/zarr/<slide>.zarr``, as always. With an S3 blob store it is copied to
the same bucket, ``s3://BUCKET/PREFIX/zarr/<slide>.zarr`` (decision 0038), so that every API and worker process
reads the same pyramid; ``Slide.zarr_path`` records the path or the URL. Readers open it through
:func:`open_zarr`, which gives zarr an fsspec store: a chunk read is one ranged GET, never a download of the store.
"""

from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path
from typing import Any

from archipel.platform.runtime import Runtime
from archipel.platform.storage import BlobStore, BlobStoreError

log = logging.getLogger("archipel.wsi")


def zarr_home(rt: Runtime, slide_id: str) -> Path:
    """Where a ready slide's OME-Zarr store lives on the filesystem blob store."""
    return rt.settings.data_dir / "zarr" / f"{slide_id}.zarr"


def _bucket_of(store: BlobStore) -> Any:
    """The S3 store (anything with ``sibling_url`` and ``storage_options``) that zarr stores go beside, or None.

    With storage tiers, pyramids go beside the hot tier's blobs: they are read while the slide is viewed."""
    for candidate in (store, getattr(store, "hot", None)):
        if hasattr(candidate, "sibling_url") and hasattr(candidate, "storage_options"):
            return candidate
    return None


def publish_zarr(rt: Runtime, slide_id: str, built: Path) -> str:
    """Put the finished store ``built`` where the slide's pyramid lives; return what ``Slide.zarr_path`` records.

    Safe to run again: an earlier copy (from a conversion that died after publishing) is replaced whole. The
    local folder is consumed.
    """
    bucket = _bucket_of(rt.blobs)
    if bucket is None:
        home = zarr_home(rt, slide_id)
        home.parent.mkdir(parents=True, exist_ok=True)
        if home.exists():
            shutil.rmtree(home)
        built.rename(home)
        return str(home)
    import fsspec

    url = bucket.sibling_url(f"zarr/{slide_id}.zarr")
    fs = fsspec.filesystem("s3", **bucket.storage_options())
    started = time.monotonic()
    files = [p for p in built.rglob("*") if p.is_file()]
    try:
        if fs.exists(url):
            fs.rm(url, recursive=True)  # chunks of an earlier copy that this one may not have (blank tiles)
        # One PUT per chunk file, a few at a time (s3fs batches them); nothing is read whole into memory.
        fs.put([str(p) for p in files], [f"{url}/{p.relative_to(built).as_posix()}" for p in files])
    except Exception as exc:
        raise BlobStoreError(
            f"could not publish the OME-Zarr store of slide {slide_id} to {url}: {exc}"
        ) from exc
    shutil.rmtree(built, ignore_errors=True)
    log.info(
        "event=zarr_published slide=%s files=%d seconds=%.1f",
        slide_id,
        len(files),
        time.monotonic() - started,
    )
    return url


def open_zarr(rt: Runtime, zarr_path: str) -> Any:
    """The OME-Zarr root group at ``zarr_path`` (a folder, or an ``s3://`` URL read through fsspec), read-only.

    Raises :class:`FileNotFoundError` when nothing is stored there.
    """
    import zarr

    if not zarr_path.startswith("s3://"):
        return zarr.open_group(store=zarr_path, mode="r", zarr_format=2)
    bucket = _bucket_of(rt.blobs)
    options = bucket.storage_options() if bucket is not None else {}
    from zarr.storage import FsspecStore

    store = FsspecStore.from_url(zarr_path, storage_options=options, read_only=True)
    return zarr.open_group(store=store, mode="r", zarr_format=2)
