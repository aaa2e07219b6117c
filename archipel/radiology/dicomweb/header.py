"""The data set of a stored instance without its pixel data, read from the blob with a limited read.

Everything before the Pixel Data value is the header: the index records where that value starts, so the header
is the blob's first ``pixel_data_offset`` bytes. Blobs are named by their SHA-256 and never change, so a parsed
header can be cached by blob key.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from io import BytesIO

import pydicom
from pydicom.dataset import Dataset

from archipel.platform.storage import BlobStore
from archipel.radiology.dicomweb.mediatypes import DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN
from archipel.radiology.dicomweb.resources import StoredInstance

_CACHE_SIZE = 512
_CACHE_MAX_BYTES = 1 << 20
_cache: OrderedDict[str, Dataset] = OrderedDict()
_lock = threading.Lock()


def read_header(blobs: BlobStore, instance: StoredInstance) -> Dataset:
    """The instance's data set up to (not including) Pixel Data, with its file meta.

    Deflated data sets cannot be cut at a byte offset, so they are read whole (they are rare and small).
    Callers must not modify the returned data set: it is shared through the cache.
    """
    with _lock:
        cached = _cache.get(instance.blob_key)
        if cached is not None:
            _cache.move_to_end(instance.blob_key)
            return cached
    if instance.pixel_data_offset is None or instance.transfer_syntax == DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN:
        data = blobs.get(instance.blob_key)
    else:
        data = blobs.read_range(instance.blob_key, 0, instance.pixel_data_offset)
    ds = pydicom.dcmread(BytesIO(data), stop_before_pixels=True)
    # Convert every raw element now, while the data set is private: readers sharing it later then see the
    # same element objects (metadata maps bulk data elements by identity).
    for _ in ds.iterall():
        pass
    if len(data) <= _CACHE_MAX_BYTES:  # an encapsulated document or a huge header is not worth keeping
        with _lock:
            _cache[instance.blob_key] = ds
            while len(_cache) > _CACHE_SIZE:
                _cache.popitem(last=False)
    return ds


@dataclass(frozen=True)
class ImagePixelFacts:
    """The Image Pixel module attributes that fix the size of a native frame."""

    rows: int
    columns: int
    samples_per_pixel: int
    bits_allocated: int

    @property
    def frame_bits(self) -> int:
        """Bits in one native frame."""
        return self.rows * self.columns * self.samples_per_pixel * self.bits_allocated


def pixel_facts(ds: Dataset) -> ImagePixelFacts:
    """Rows, Columns, SamplesPerPixel and BitsAllocated of ``ds``; ``ValueError`` naming a missing one."""
    values: dict[str, int] = {}
    for keyword in ("Rows", "Columns", "SamplesPerPixel", "BitsAllocated"):
        value = ds.get(keyword)
        if value in (None, ""):
            raise ValueError(f"the data set has no {keyword}, so its frames cannot be located")
        values[keyword] = int(value)
    return ImagePixelFacts(
        rows=values["Rows"],
        columns=values["Columns"],
        samples_per_pixel=values["SamplesPerPixel"],
        bits_allocated=values["BitsAllocated"],
    )
