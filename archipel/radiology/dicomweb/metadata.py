"""DICOM JSON metadata of stored instances (PS3.18 §F.2), with bulk data replaced by ``BulkDataURI``.

Pixel Data is never read for metadata: its BulkDataURI is added from the index. Other binary values larger
than :data:`BULK_DATA_THRESHOLD` get a URI naming their path in the data set: tags in hex, sequence items by
their 0-based index (``00540016/0/00181072``), which :func:`bulk_value` resolves.
"""

from __future__ import annotations

from typing import Any

from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.tag import Tag

from archipel.platform.storage import BlobStore
from archipel.radiology.dicomweb.header import read_header
from archipel.radiology.dicomweb.resources import StoredInstance

BULK_DATA_THRESHOLD = 1024
PIXEL_DATA_PATH = "7FE00010"
#: pydicom compares the raw length with the threshold less a third, the base64 growth of an inline value.
_INLINE_LIMIT = (BULK_DATA_THRESHOLD // 4) * 3
_BINARY_VRS = frozenset({"OB", "OD", "OF", "OL", "OV", "OW", "UN", "OB or OW", "US or OW"})


class BulkDataNotFound(KeyError):
    """The bulk data path names no binary value of the instance; ``reason`` says which step failed."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _bulk_paths(ds: Dataset, prefix: tuple[str, ...] = ()) -> dict[int, tuple[str, ...]]:
    """Map ``id(element)`` to its path for every binary element above the threshold, nested ones included."""
    found: dict[int, tuple[str, ...]] = {}
    for elem in ds:
        tag = f"{elem.tag:08X}"
        if elem.VR == "SQ":
            for index, item in enumerate(elem.value):
                found.update(_bulk_paths(item, (*prefix, tag, str(index))))
        elif elem.VR in _BINARY_VRS and not elem.is_empty and len(elem.value) > _INLINE_LIMIT:
            found[id(elem)] = (*prefix, tag)
    return found


def instance_metadata(blobs: BlobStore, instance: StoredInstance, base_url: str) -> dict[str, Any]:
    """The DICOM JSON object of one instance; bulk data URIs are absolute, under ``base_url`` (``/dicom-web``)."""
    ds = read_header(blobs, instance)
    bulk_base = f"{base_url}{instance.path()}/bulkdata/"
    paths = _bulk_paths(ds)

    def bulk_uri(elem: DataElement) -> str:
        path = paths.get(id(elem))
        if path is None:  # an element the walk did not see: name it at top level
            path = (f"{elem.tag:08X}",)
        return bulk_base + "/".join(path)

    out: dict[str, Any] = ds.to_json_dict(
        bulk_data_threshold=BULK_DATA_THRESHOLD,
        bulk_data_element_handler=bulk_uri,
        # One malformed value must not break a streamed series response: it is left out, with a log line.
        suppress_invalid_tags=True,
    )
    if instance.pixel_data_offset is not None:
        bits = int(ds.get("BitsAllocated", 8) or 8)
        vr = "OB" if instance.is_encapsulated or bits <= 8 else "OW"
        out[PIXEL_DATA_PATH] = {"vr": vr, "BulkDataURI": bulk_base + PIXEL_DATA_PATH}
    return out


def bulk_value(blobs: BlobStore, instance: StoredInstance, path: str) -> bytes:
    """The raw value of the binary element at ``path`` (other than Pixel Data) in the instance's header."""
    steps = [step for step in path.strip("/").split("/") if step]
    if not steps or len(steps) % 2 == 0:
        raise BulkDataNotFound(f"bulk data path {path!r} must end with a tag")
    current: Dataset = read_header(blobs, instance)
    for position in range(0, len(steps) - 1, 2):
        sequence = _element(current, steps[position])
        if sequence.VR != "SQ":
            raise BulkDataNotFound(f"{steps[position]} is not a sequence")
        index = steps[position + 1]
        if not index.isdigit() or int(index) >= len(sequence.value):
            raise BulkDataNotFound(f"{steps[position]} has no item {index}")
        current = sequence.value[int(index)]
    elem = _element(current, steps[-1])
    if elem.VR not in _BINARY_VRS or elem.value is None:
        raise BulkDataNotFound(f"{steps[-1]} is not a binary value")
    return bytes(elem.value)


def _element(ds: Dataset, step: str) -> DataElement:
    try:
        tag = Tag(int(step, 16))
    except ValueError as exc:
        raise BulkDataNotFound(f"{step!r} is not a tag in hex") from exc
    if tag not in ds:
        raise BulkDataNotFound(f"no element {step} in the data set")
    return ds[tag]
