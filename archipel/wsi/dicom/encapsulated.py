"""One Part-10 file with encapsulated multi-frame pixel data, written as a stream (PS3.5 A.4).

The header (everything but Pixel Data) is written with pydicom; the frames follow one fragment each, straight to
disk, so that no level is ever held in memory. The offset table is reserved before the first frame and filled
once the last one is written: a Basic Offset Table (32-bit offsets) for up to 4 GiB of frames, else an Extended
Offset Table (64-bit offsets and lengths, with the Basic one left empty as A.4 requires). The file is written
under a temporary name, fsynced and renamed, so a crash never leaves a half-written instance under its final name.
"""

from __future__ import annotations

import os
import shutil
import struct
from enum import StrEnum
from pathlib import Path
from typing import BinaryIO, Self

from pydicom import Dataset
from pydicom.dataset import FileMetaDataset
from pydicom.filebase import DicomFileLike
from pydicom.filewriter import write_dataset, write_file_meta_info
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, UID

#: The largest offset a Basic Offset Table entry can hold.
BOT_LIMIT = 2**32 - 1
_ITEM = struct.pack("<HH", 0xFFFE, 0xE000)
_SEQUENCE_END = struct.pack("<HHI", 0xFFFE, 0xE0DD, 0)
_PIXEL_DATA = struct.pack("<HH2s2xI", 0x7FE0, 0x0010, b"OB", 0xFFFFFFFF)
_ITEM_HEADER = 8


class OffsetTable(StrEnum):
    """Which offset table locates the frames."""

    BASIC = "basic"
    EXTENDED = "extended"


class OffsetOverflow(Exception):
    """A frame starts beyond what a Basic Offset Table can point to (4 GiB)."""


def file_meta(dataset: Dataset, transfer_syntax: UID) -> FileMetaDataset:
    """The File Meta Information of an instance."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = dataset.SOPClassUID
    meta.MediaStorageSOPInstanceUID = dataset.SOPInstanceUID
    meta.TransferSyntaxUID = transfer_syntax
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    meta.ImplementationVersionName = "ARCHIPEL"
    return meta


def fragment(frame: bytes) -> bytes:
    """A frame as one fragment item; odd lengths get the trailing NUL byte PS3.5 A.4 requires."""
    if len(frame) % 2:
        frame += b"\x00"
    return _ITEM + struct.pack("<I", len(frame)) + frame


class EncapsulatedFile:
    """Write one instance of ``frames`` frames: open, :meth:`write_frame` each frame in order, :meth:`close`.

    ``dataset`` is the whole header without Pixel Data. With ``OffsetTable.BASIC`` a frame that would start
    beyond 4 GiB raises :class:`OffsetOverflow` (the caller then writes the level again with the extended table).
    """

    def __init__(self, path: Path, dataset: Dataset, transfer_syntax: UID, frames: int, table: OffsetTable):
        self.path = path
        self.frames = frames
        self.table = table
        self._partial = path.with_name(path.name + ".partial")
        self._offsets: list[int] = []
        self._lengths: list[int] = []
        self._position = 0
        self._file: BinaryIO = self._partial.open("wb")
        try:
            self._write_header(dataset, transfer_syntax)
        except BaseException:
            self.abort()
            raise

    def _write_header(self, dataset: Dataset, transfer_syntax: UID) -> None:
        f = self._file
        f.write(b"\x00" * 128 + b"DICM")
        fp = DicomFileLike(f)
        fp.is_little_endian = True
        fp.is_implicit_VR = False
        write_file_meta_info(fp, file_meta(dataset, transfer_syntax), enforce_standard=True)
        write_dataset(fp, dataset)
        if self.table == OffsetTable.EXTENDED:
            self._eot_start = f.tell()
            for element in (0x0001, 0x0002):  # Extended Offset Table, Extended Offset Table Lengths
                f.write(struct.pack("<HH2s2xI", 0x7FE0, element, b"OV", 8 * self.frames))
                f.write(bytes(8 * self.frames))
        f.write(_PIXEL_DATA)
        self._bot_start = f.tell()
        bot_length = 4 * self.frames if self.table == OffsetTable.BASIC else 0
        f.write(_ITEM + struct.pack("<I", bot_length) + bytes(bot_length))

    def write_frame(self, frame: bytes) -> None:
        """Append the next frame (TILED_FULL order: row by row, left to right)."""
        self.write_fragment(fragment(frame))

    def write_fragment(self, item: bytes) -> None:
        """Append the next frame already wrapped as a fragment item (see :func:`fragment`)."""
        if len(self._offsets) >= self.frames:
            raise ValueError(f"instance {self.path.name} holds {self.frames} frames; one more was written")
        if self.table == OffsetTable.BASIC and self._position > BOT_LIMIT:
            raise OffsetOverflow(f"frame {len(self._offsets)} starts beyond 4 GiB")
        self._offsets.append(self._position)
        self._lengths.append(len(item) - _ITEM_HEADER)
        self._file.write(item)
        self._position += len(item)

    def copy_fragments(self, source: BinaryIO, offsets: list[int], lengths: list[int]) -> None:
        """Append frames already written as fragment items to ``source`` (from its start), with their offsets."""
        if len(self._offsets) + len(offsets) > self.frames:
            raise ValueError(f"instance {self.path.name} holds {self.frames} frames; more were copied")
        if self.table == OffsetTable.BASIC and offsets and self._position + offsets[-1] > BOT_LIMIT:
            raise OffsetOverflow("a frame starts beyond 4 GiB")
        self._offsets.extend(self._position + o for o in offsets)
        self._lengths.extend(lengths)
        source.seek(0)
        shutil.copyfileobj(source, self._file, 1 << 20)
        self._position = self._file.tell() - self._bot_start - _ITEM_HEADER - self._bot_length

    @property
    def _bot_length(self) -> int:
        return 4 * self.frames if self.table == OffsetTable.BASIC else 0

    @property
    def pixel_bytes(self) -> int:
        """Bytes of frames written so far (with their item headers)."""
        return self._position

    def close(self) -> Path:
        """Fill the offset table, fsync and give the file its final name."""
        if len(self._offsets) != self.frames:
            self.abort()
            raise ValueError(
                f"instance {self.path.name} expects {self.frames} frames, got {len(self._offsets)}"
            )
        f = self._file
        f.write(_SEQUENCE_END)
        if self.table == OffsetTable.BASIC:
            f.seek(self._bot_start + _ITEM_HEADER)
            f.write(struct.pack(f"<{self.frames}I", *self._offsets))
        else:
            f.seek(self._eot_start + 12)
            f.write(struct.pack(f"<{self.frames}Q", *self._offsets))
            f.seek(12, os.SEEK_CUR)
            f.write(struct.pack(f"<{self.frames}Q", *self._lengths))
        f.flush()
        os.fsync(f.fileno())
        f.close()
        os.replace(self._partial, self.path)
        return self.path

    def abort(self) -> None:
        """Drop the partial file."""
        self._file.close()
        self._partial.unlink(missing_ok=True)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is not None:
            self.abort()
