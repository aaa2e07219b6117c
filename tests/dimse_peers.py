"""Helpers for the DIMSE tests: dcmtk peers, a pynetdicom SCU, test instances, and a look into the index."""

from __future__ import annotations

import hashlib
import os
import subprocess
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydicom import dcmread
from pydicom.dataset import Dataset
from pynetdicom import AE, evt
from pynetdicom.association import Association
from sqlalchemy import select

from archipel.platform.db import Database
from archipel.platform.storage import FileBlobStore
from archipel.radiology.dimse.sending import dataset_offset
from archipel.radiology.dimse.transport import set_nodelay
from archipel.radiology.models import Instance
from archipel.radiology.samples import SyntheticPatient, jpeg_multiframe, to_bytes, uid
from tests.support import ArchipelServer, free_port, port_answers, wait_until

VL_WHOLE_SLIDE = "1.2.840.10008.5.1.4.1.1.77.1.6"
#: Nagle off in dcmtk tools too (they read this variable), as a production peer would be tuned.
DCMTK_ENV = {**os.environ, "TCP_NODELAY": "1"}


def dcmtk(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run a dcmtk tool and return its completed process (never raises on a non-zero exit)."""
    return subprocess.run(list(args), capture_output=True, text=True, env=DCMTK_ENV, timeout=timeout)


def dataset_part(data: bytes) -> bytes:
    """The data set bytes of a Part-10 object: everything after the group 0002 file meta information."""
    return data[dataset_offset(data) :]


def sha256(data: bytes) -> str:
    """Hex SHA-256 of ``data``."""
    return hashlib.sha256(data).hexdigest()


def write_files(folder: Path, datasets: Sequence[Dataset]) -> list[Path]:
    """Write each data set as a Part-10 file named by its SOP Instance UID."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for ds in datasets:
        path = folder / f"{ds.SOPInstanceUID}.dcm"
        path.write_bytes(to_bytes(ds))
        paths.append(path)
    return paths


def wsi_instance(patient: SyntheticPatient, frames: int = 4, size: int = 64) -> Dataset:
    """A small VL Whole Slide Microscopy image: JPEG Baseline tiles of a 2x2 TILED_FULL matrix."""
    ds = jpeg_multiframe(patient, frames=frames, size=size)
    ds.SOPClassUID = VL_WHOLE_SLIDE
    ds.file_meta.MediaStorageSOPClassUID = VL_WHOLE_SLIDE
    ds.Modality = "SM"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "VOLUME", "NONE"]
    ds.DimensionOrganizationType = "TILED_FULL"
    ds.TotalPixelMatrixColumns = ds.TotalPixelMatrixRows = size * 2
    ds.TotalPixelMatrixFocalPlanes = 1
    ds.ImagedVolumeWidth = ds.ImagedVolumeHeight = 1.0
    ds.ImagedVolumeDepth = 0.001
    ds.ContainerIdentifier = "SLIDE-1"
    ds.SpecimenLabelInImage = "NO"
    ds.BurnedInAnnotation = "NO"
    ds.FocusMethod = "AUTO"
    ds.ExtendedDepthOfField = "NO"
    ds.FrameOfReferenceUID = uid()
    ds.DimensionOrganizationUID = uid()
    for keyword in ("FrameIncrementPointer", "FrameTime", "ConversionType"):
        delattr(ds, keyword)
    return ds


def scu(
    server: ArchipelServer, contexts: Sequence[tuple[str, Sequence[str]]], ae_title: str = "PYNETDICOM"
) -> Association:
    """An established pynetdicom association to ``server`` proposing ``contexts`` (Nagle off)."""
    ae = AE(ae_title=ae_title)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 60
    for abstract, syntaxes in contexts:
        ae.add_requested_context(abstract, list(syntaxes))
    assoc = ae.associate(
        "127.0.0.1", server.dicom_port, ae_title=server.aet, evt_handlers=[(evt.EVT_CONN_OPEN, set_nodelay)]
    )
    assert assoc.is_established, "association to archipel was not accepted"
    return assoc


@dataclass(frozen=True)
class IndexedInstance:
    """An index row as the tests look at it."""

    sop_uid: str
    sop_class_uid: str
    transfer_syntax: str
    sha256: str
    blob_key: str
    size: int
    source_ae: str


class ArchiveLook:
    """Read-only view of a server's index and blob store, opened from its data dir."""

    def __init__(self, data: Path) -> None:
        self.db = Database(f"sqlite:///{(data / 'index.sqlite').resolve()}")
        self.blobs = FileBlobStore((data / "blobs").resolve())

    def instances(self) -> dict[str, IndexedInstance]:
        """Every indexed instance by SOP Instance UID."""
        with self.db.sessions() as s:
            rows = s.execute(select(Instance)).scalars().all()
            return {
                r.sop_uid: IndexedInstance(
                    r.sop_uid, r.sop_class_uid, r.transfer_syntax, r.sha256, r.blob_key, r.size, r.source_ae
                )
                for r in rows
            }

    def blob(self, sop_uid: str) -> bytes:
        """The stored bytes of one instance."""
        return self.blobs.get(self.instances()[sop_uid].blob_key)

    def close(self) -> None:
        """Dispose of the engine."""
        self.db.dispose()


@contextmanager
def archive_look(server: ArchipelServer) -> Iterator[ArchiveLook]:
    """An :class:`ArchiveLook` on ``server``'s data dir, closed afterwards."""
    look = ArchiveLook(server.data)
    try:
        yield look
    finally:
        look.close()


@dataclass
class StoreSCP:
    """A dcmtk ``storescp`` writing what it receives, bit-preserving, into ``folder``."""

    aet: str
    port: int
    folder: Path
    proc: subprocess.Popen[Any]

    def received(self) -> dict[str, bytes]:
        """Received files by SOP Instance UID."""
        return files_by_sop_uid(self.folder)

    def log_tail(self, size: int = 3000) -> str:
        """The end of storescp's own output, for a failing assertion's message."""
        return (self.folder.parent / f"{self.aet}.log").read_text(errors="replace")[-size:]


def files_by_sop_uid(folder: Path) -> dict[str, bytes]:
    """The bytes of every DICOM file in ``folder``, by the SOP Instance UID in its file meta."""
    out: dict[str, bytes] = {}
    for path in folder.iterdir():
        if path.is_file():
            meta = dcmread(path, stop_before_pixels=True, specific_tags=["SOPInstanceUID"])
            out[str(meta.file_meta.MediaStorageSOPInstanceUID)] = path.read_bytes()
    return out


@contextmanager
def storescp(folder: Path, aet: str = "STORESCP", syntaxes: str = "+xa") -> Iterator[StoreSCP]:
    """Run ``storescp +B`` on a free port until the block ends; ``syntaxes`` is its acceptance option."""
    folder.mkdir(parents=True, exist_ok=True)
    port = free_port()
    log = (folder.parent / f"{aet}.log").open("w")
    proc = subprocess.Popen(
        ["storescp", "-v", "-aet", aet, "+B", syntaxes, "-od", str(folder), str(port)],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=DCMTK_ENV,
    )
    try:
        wait_until(lambda: port_answers("127.0.0.1", port), 20, f"storescp on port {port}")
        yield StoreSCP(aet, port, folder, proc)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
