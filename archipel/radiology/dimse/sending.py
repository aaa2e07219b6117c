"""Sending stored instances on C-STORE sub-operations with their original bytes.

pynetdicom encodes every data set it sends with pydicom, which is faithful for most objects but not
byte-for-byte (deflated streams are recompressed, odd-length values padded, ambiguous VRs resolved). The
archive promises to hand out what it received, so a :class:`StoredInstance` carries the encoded data set
exactly as stored, and :func:`install_unchanged_sending` makes pynetdicom send those bytes whenever the
accepted presentation context uses the stored transfer syntax's encoding. When the peer only accepted
another uncompressed syntax, pynetdicom's own conversion applies, as for any other data set.
"""

from __future__ import annotations

import struct
from io import BytesIO
from typing import Any

import pydicom
from pydicom.dataset import Dataset
from pydicom.uid import UID
from pynetdicom import association, dsutils
from pynetdicom.presentation import PresentationContext, build_context

from archipel.platform.storage import BlobStore

#: Explicit VR Little Endian and Implicit VR Little Endian: what every storage SCP accepts.
FALLBACK_SYNTAXES = ("1.2.840.10008.1.2.1", "1.2.840.10008.1.2")
#: A requestor may propose at most 128 presentation contexts (PS3.8 9.3.2.2: odd IDs 1-255).
MAX_CONTEXTS = 128
#: Bytes read to find the end of the file meta information (which is a few hundred bytes in practice).
HEAD_BYTES = 1 << 16
_LONG_VRS = {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"}


class StoredInstance(Dataset):
    """A stored instance for pynetdicom: its header decoded, and its data set bytes exactly as stored.

    The header (everything before Pixel Data) is what pynetdicom looks at to choose a presentation context.
    ``encoded`` is the whole data set after the Part-10 file meta information, in ``transfer_syntax``;
    :meth:`decoded` reads all of it, for the rare send that has to convert to another encoding.
    """

    def __init__(self, header: Dataset, meta: bytes, encoded: bytes, transfer_syntax: str) -> None:
        super().__init__(header)
        self.file_meta = header.file_meta
        implicit, little = header.original_encoding
        self.set_original_encoding(implicit, little, header.original_character_set)
        self.meta = meta
        self.encoded = encoded
        self.transfer_syntax = UID(transfer_syntax)

    def encoded_as(self, is_implicit_vr: bool, is_little_endian: bool, deflated: bool) -> bytes | None:
        """The stored bytes if they are already in the requested encoding, else ``None``."""
        ts = self.transfer_syntax
        if (ts.is_implicit_VR, ts.is_little_endian, ts.is_deflated) != (
            is_implicit_vr,
            is_little_endian,
            deflated,
        ):
            return None
        return self.encoded

    def decoded(self) -> Dataset:
        """The whole instance, decoded (pixel data included)."""
        return pydicom.dcmread(BytesIO(self.meta + self.encoded))


def dataset_offset(data: bytes) -> int:
    """Offset of the data set in Part-10 ``data``: the end of the group 0002 file meta elements.

    File meta information is always Explicit VR Little Endian (PS3.10 7.1), so walking its element headers
    is enough, whether or not the group length element is present.
    """
    if data[128:132] != b"DICM":
        raise ValueError("not a DICOM Part-10 object (no DICM prefix)")
    pos = 132
    while pos + 8 <= len(data):
        group = struct.unpack_from("<H", data, pos)[0]
        if group != 0x0002:
            return pos
        vr = data[pos + 4 : pos + 6]
        if vr in _LONG_VRS:
            length = struct.unpack_from("<I", data, pos + 8)[0]
            pos += 12 + length
        else:
            length = struct.unpack_from("<H", data, pos + 6)[0]
            pos += 8 + length
    return min(pos, len(data))


def load_stored(blobs: BlobStore, blob_key: str, transfer_syntax: str, unchanged: bool = True) -> Dataset:
    """Read one stored Part-10 blob for sending; raises ``BlobNotFound`` or ``ValueError``.

    With ``unchanged`` (the default) the result is a :class:`StoredInstance`, which holds the data set bytes
    once and decodes only the header: a slide level of a gigabyte costs a gigabyte, not four. Otherwise it is
    a plain decoded data set that the sender may modify (pynetdicom strips bulk data for Composite Instance
    Retrieve Without Bulk Data).
    """
    if not unchanged:
        return pydicom.dcmread(BytesIO(blobs.get(blob_key)))
    with blobs.open(blob_key) as f:
        header = pydicom.dcmread(f, stop_before_pixels=True)
    head = blobs.read_range(blob_key, 0, HEAD_BYTES)
    offset = dataset_offset(head)
    if len(head) == HEAD_BYTES and offset >= HEAD_BYTES:
        raise ValueError(f"file meta information of blob {blob_key} is longer than {HEAD_BYTES} bytes")
    encoded = blobs.read_range(blob_key, offset, blobs.size(blob_key) - offset)
    return StoredInstance(header, head[:offset], encoded, transfer_syntax)


def retrieve_contexts(pairs: set[tuple[str, str]]) -> list[PresentationContext]:
    """Presentation contexts to propose to a C-MOVE destination for (SOP class, transfer syntax) pairs.

    Each pair gets a context of its own stored syntax first, so that an accepting peer receives the bytes
    unchanged; uncompressed objects also get a fallback context in the syntaxes every SCP accepts.
    """
    exact: list[PresentationContext] = []
    fallback: list[PresentationContext] = []
    for sop_class, ts in sorted(pairs):
        exact.append(build_context(sop_class, [ts]))
        if not UID(ts).is_compressed:
            fallback.append(build_context(sop_class, list(FALLBACK_SYNTAXES)))
    seen: set[tuple[str, tuple[str, ...]]] = set()
    contexts: list[PresentationContext] = []
    for cx in exact + fallback:
        key = (str(cx.abstract_syntax), tuple(str(t) for t in cx.transfer_syntax))
        if key not in seen and len(contexts) < MAX_CONTEXTS:
            seen.add(key)
            contexts.append(cx)
    return contexts


_library_encode = dsutils.encode


def _encode(ds: Dataset, is_implicit_vr: bool, is_little_endian: bool, deflated: bool = False) -> Any:
    if isinstance(ds, StoredInstance):
        raw = ds.encoded_as(is_implicit_vr, is_little_endian, deflated)
        if raw is not None:
            return raw
        ds = ds.decoded()
    return _library_encode(ds, is_implicit_vr, is_little_endian, deflated)


def install_unchanged_sending() -> None:
    """Make pynetdicom send a :class:`StoredInstance` as stored; other data sets are encoded as before.

    pynetdicom has no hook for pre-encoded data sets in C-GET / C-MOVE sub-operations (only for file paths
    in ``send_c_store``), so the encoder its association module uses is wrapped. Idempotent.
    """
    association.encode = _encode  # type: ignore[attr-defined]
