"""A study for the WADO-RS tests, stored through STOW-RS, and the requests the tests make of it."""

from __future__ import annotations

import io
import uuid
from dataclasses import dataclass

import httpx
from PIL import Image
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from archipel.radiology.samples import SyntheticPatient, ct_series, jpeg_multiframe
from tests.dicomweb_messages import stow
from tests.support import ArchipelServer

JPEG_BASELINE = "1.2.840.10008.1.2.4.50"
EXPLICIT_LE = "1.2.840.10008.1.2.1"
#: What OHIF v3 sends for frames (note the unquoted type).
OHIF_FRAMES_ACCEPT = "multipart/related; type=application/octet-stream; transfer-syntax=*"


@dataclass
class StoredStudy:
    """A study stored through STOW-RS: a CT series, a native multi-frame, a JPEG multi-frame, all one patient."""

    ct: list[Dataset]
    multiframe: Dataset
    jpeg: Dataset

    @property
    def study_uid(self) -> str:
        return str(self.ct[0].StudyInstanceUID)

    @property
    def everything(self) -> list[Dataset]:
        return [*self.ct, self.multiframe, self.jpeg]


def with_bulk_values(ds: Dataset) -> Dataset:
    """Add a private OB value and an icon with its own Pixel Data: binary values beyond the inline threshold."""
    icon = Dataset()
    icon.Rows = icon.Columns = 32
    icon.SamplesPerPixel = 1
    icon.BitsAllocated = icon.BitsStored = 8
    icon.HighBit = 7
    icon.PixelRepresentation = 0
    icon.PhotometricInterpretation = "MONOCHROME2"
    icon.PixelData = bytes(range(256)) * 4
    icon["PixelData"].VR = "OB"
    ds.IconImageSequence = Sequence([icon])
    ds.private_block(0x0009, "ARCHIPEL TEST", create=True).add_new(0x10, "OB", bytes(range(256)) * 8)
    return ds


def store_study(server: ArchipelServer) -> StoredStudy:
    """Store a fresh :class:`StoredStudy` on ``server`` through STOW-RS."""
    patient = SyntheticPatient(f"W{uuid.uuid4().hex[:8]}", "WADO^Test", "19600101", "F", issuer="SITE-A")
    ct = ct_series(patient, 3, rows=64, cols=64)
    with_bulk_values(ct[0])
    study_uid = ct[0].StudyInstanceUID
    frames = ct_series(patient, 3, rows=32, cols=48, study_uid=study_uid)
    multiframe = frames[0]
    multiframe.NumberOfFrames = 3
    multiframe.PixelData = b"".join(f.PixelData for f in frames)
    jpeg = jpeg_multiframe(patient, frames=3, size=64)
    jpeg.StudyInstanceUID = study_uid
    stored = StoredStudy(ct=ct, multiframe=multiframe, jpeg=jpeg)
    r = stow(server, list(stored.everything))
    assert r.status_code == 200, r.text
    return stored


def url(server: ArchipelServer, ds: Dataset, suffix: str = "") -> str:
    """The WADO-RS URL of instance ``ds``, with ``suffix`` (``/metadata``, ``/frames/1``…)."""
    base = f"{server.url}/dicom-web/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}"
    return f"{base}/instances/{ds.SOPInstanceUID}{suffix}"


def get(
    server: ArchipelServer, target: str, accept: str | None = None, user: str = "radiologist"
) -> httpx.Response:
    """GET ``target`` as ``user``, with an ``Accept`` header when given."""
    headers = server.headers(user)
    if accept is not None:
        headers["Accept"] = accept
    return httpx.get(target, headers=headers, timeout=60)


def image(r: httpx.Response) -> Image.Image:
    """The image of a successful rendered response."""
    assert r.status_code == 200, r.text
    return Image.open(io.BytesIO(r.content))
