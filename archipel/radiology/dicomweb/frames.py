"""Frames of stored pixel data, read as byte ranges of the original blob: no decoding, no transcoding.

Encapsulated frames are the concatenation of their fragments, whose spans the index holds. A native frame ``n``
(1-based) starts ``(n - 1) * frame_size`` bytes into the Pixel Data value; the frame size comes from the header.
"""

from __future__ import annotations

from io import BytesIO

import numpy as np
import pydicom

from archipel.platform.storage import BlobStore
from archipel.radiology.dicomweb.header import pixel_facts, read_header
from archipel.radiology.dicomweb.mediatypes import (
    DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN,
    EXPLICIT_VR_BIG_ENDIAN,
)
from archipel.radiology.dicomweb.resources import StoredInstance


class FrameRequestError(ValueError):
    """A frame list that names no frame of the instance; ``reason`` says which number and why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class FrameLayoutError(ValueError):
    """The stored object's attributes do not locate its frames (missing Image Pixel attributes, short value)."""


def parse_frame_list(text: str, count: int) -> list[int]:
    """The 1-based frame numbers of a ``frames/{list}`` path segment (``1,3,5``), checked against ``count``."""
    numbers: list[int] = []
    for piece in text.split(","):
        piece = piece.strip()
        if not piece.isdigit():
            raise FrameRequestError(f"frame number {piece!r} is not a positive integer")
        number = int(piece)
        if number < 1 or number > count:
            raise FrameRequestError(f"frame {number} is out of range: the instance has {count} frame(s)")
        numbers.append(number)
    return numbers


def frame_count(instance: StoredInstance) -> int:
    """How many frames the instance holds (0 when it has no pixel data)."""
    if instance.pixel_data_offset is None:
        return 0
    return max(instance.number_of_frames, 1)


def check_layout(blobs: BlobStore, instance: StoredInstance) -> None:
    """Raise :class:`FrameLayoutError` when the frames cannot be located from what is stored.

    Called before a response starts streaming, so that a broken object gets an error status rather than a
    truncated body. Native frames must fit in the Pixel Data value; encapsulated ones need one span list each.
    """
    if instance.is_encapsulated:
        if len(instance.fragments()) < frame_count(instance):
            raise FrameLayoutError(f"instance {instance.sop_uid} has fewer fragment groups than frames")
        return
    if instance.transfer_syntax in (DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN, EXPLICIT_VR_BIG_ENDIAN):
        return
    try:
        facts = pixel_facts(read_header(blobs, instance))
    except ValueError as exc:
        raise FrameLayoutError(str(exc)) from exc
    needed = (frame_count(instance) * facts.frame_bits + 7) // 8
    if instance.pixel_data_length is None or needed > instance.pixel_data_length:
        raise FrameLayoutError(
            f"Pixel Data of instance {instance.sop_uid} holds {instance.pixel_data_length} bytes,"
            f" {needed} are needed for {frame_count(instance)} frame(s)"
        )


def read_frame(blobs: BlobStore, instance: StoredInstance, number: int) -> bytes:
    """The bytes of frame ``number`` (1-based) as stored: the fragments of an encapsulated frame, or the native
    pixel bytes in little-endian order."""
    if instance.pixel_data_offset is None:
        raise FrameRequestError(f"instance {instance.sop_uid} has no pixel data")
    if instance.is_encapsulated:
        spans = instance.fragments()[number - 1]
        return b"".join(blobs.read_range(instance.blob_key, offset, length) for offset, length in spans)
    if instance.transfer_syntax in (DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN, EXPLICIT_VR_BIG_ENDIAN):
        return _frame_from_whole_file(blobs, instance, number)
    facts = pixel_facts(read_header(blobs, instance))
    bits = facts.frame_bits
    start_bit = (number - 1) * bits
    if bits % 8 == 0:
        return blobs.read_range(instance.blob_key, instance.pixel_data_offset + start_bit // 8, bits // 8)
    # Packed 1-bit frames need not start on a byte boundary.
    first = start_bit // 8
    last = (start_bit + bits + 7) // 8
    raw = blobs.read_range(instance.blob_key, instance.pixel_data_offset + first, last - first)
    unpacked = np.unpackbits(np.frombuffer(raw, dtype=np.uint8), bitorder="little")
    skip = start_bit - first * 8
    return np.packbits(unpacked[skip : skip + bits], bitorder="little").tobytes()


def _frame_from_whole_file(blobs: BlobStore, instance: StoredInstance, number: int) -> bytes:
    # Deflated data sets hide Pixel Data inside the compressed stream, and big-endian words must be swapped
    # to give the little-endian bytes a frame response carries: both need the whole object.
    ds = pydicom.dcmread(BytesIO(blobs.get(instance.blob_key)))
    facts = pixel_facts(ds)
    data = bytes(ds.PixelData)
    if instance.transfer_syntax == EXPLICIT_VR_BIG_ENDIAN and facts.bits_allocated in (16, 32):
        dtype = np.dtype(f">u{facts.bits_allocated // 8}")
        data = np.frombuffer(data, dtype=dtype).astype(dtype.newbyteorder("<")).tobytes()
    size = facts.frame_bits // 8
    return data[(number - 1) * size : number * size]


def pixel_data_frames(blobs: BlobStore, instance: StoredInstance) -> list[bytes]:
    """Every frame of the instance, in order (for bulk data of encapsulated Pixel Data)."""
    return [read_frame(blobs, instance, n) for n in range(1, frame_count(instance) + 1)]
