"""A study as DICOM media (PS3.10 / PS3.11 General Purpose): a ZIP of its Part-10 files and a DICOMDIR.

The files go into the ZIP exactly as the archive stored them (their bytes unchanged); only the DICOMDIR is
made here. pydicom's :class:`~pydicom.fileset.FileSet` writes it from each instance's header (read without
the pixel data), so the directory records name the files by their File ID (``PT000000/ST000000/...``) and carry
the keys PS3.3 F.5 asks for. The ZIP is written as it is sent, one member after the other, so a large study
is never held in memory: stored members (DICOM pixel data is most often compressed already) with data
descriptors.
"""

from __future__ import annotations

import tempfile
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, cast

from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.fileset import FileSet

from archipel.platform.storage import BlobStore

CHUNK = 1 << 20
#: Type 1 keys of the PATIENT, STUDY, SERIES and IMAGE directory records, and the value used when a stored
#: instance lacks one (the DICOMDIR must still be valid; the files themselves are not touched).
_RECORD_DEFAULTS = {
    "PatientID": "UNKNOWN",
    "StudyDate": "19000101",
    "StudyTime": "000000",
    "StudyID": "1",
    "SeriesNumber": 1,
    "InstanceNumber": 1,
}


@dataclass(frozen=True)
class MediaFile:
    """One stored instance to put on the media: its SOP Instance UID, blob key and size in bytes."""

    sop_uid: str
    blob_key: str
    size: int


class _Pipe:
    """A write-only, unseekable file for :class:`zipfile.ZipFile` whose written bytes are taken as they come."""

    def __init__(self) -> None:
        self._chunks: list[bytes] = []

    def write(self, data: bytes) -> int:
        self._chunks.append(bytes(data))
        return len(data)

    def flush(self) -> None:
        """Nothing to flush: bytes are taken by :meth:`take`."""

    @property
    def pending(self) -> bool:
        """Whether bytes were written since the last :meth:`take`."""
        return bool(self._chunks)

    def take(self) -> bytes:
        data = b"".join(self._chunks)
        self._chunks.clear()
        return data


def _record_header(blobs: BlobStore, item: MediaFile) -> Dataset:
    with blobs.open(item.blob_key) as f:
        ds = dcmread(f, stop_before_pixels=True)
    for keyword, default in _RECORD_DEFAULTS.items():
        if keyword not in ds or ds[keyword].value in (None, ""):
            setattr(ds, keyword, default)
    return ds


def dicomdir(
    blobs: BlobStore, files: list[MediaFile], label: str = "ARCHIPEL"
) -> tuple[bytes, dict[str, str]]:
    """The DICOMDIR for ``files`` and the File ID (a ``/``-separated path) each SOP Instance UID gets."""
    fs = FileSet()
    fs.ID = label[:16]
    for item in files:
        fs.add(_record_header(blobs, item))
    with tempfile.TemporaryDirectory(prefix="archipel-dicomdir-") as tmp:
        fs.write(tmp)
        written = Path(tmp, "DICOMDIR").read_bytes()
        ids = {str(i.SOPInstanceUID): "/".join(i.FileID.split("\\")) for i in fs}
    return written, ids


def stream_zip(
    blobs: BlobStore, files: list[MediaFile], directory: bytes, ids: dict[str, str]
) -> Iterator[bytes]:
    """The ZIP of ``files`` under their File IDs (``ids``, from :func:`dicomdir`) and ``directory`` (the
    DICOMDIR) at its root, as a sequence of chunks. Make the DICOMDIR first: it reads every file's header, so a
    missing file fails there, before an answer has started, rather than cutting the ZIP short."""
    pipe = _Pipe()
    with zipfile.ZipFile(cast(IO[bytes], pipe), "w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
        zf.writestr("DICOMDIR", directory)
        yield pipe.take()
        for item in files:
            info = zipfile.ZipInfo(ids[item.sop_uid])
            info.file_size = item.size
            with (
                zf.open(info, "w", force_zip64=item.size >= 2**31) as member,
                blobs.open(item.blob_key) as src,
            ):
                while chunk := src.read(CHUNK):
                    member.write(chunk)
                    if pipe.pending:
                        yield pipe.take()
            yield pipe.take()
    yield pipe.take()
