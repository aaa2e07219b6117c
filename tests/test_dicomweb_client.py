"""DICOMweb with a real client: dicomweb-client (the library highdicom and many pipelines use) against the server."""

from __future__ import annotations

import io
import uuid
import warnings

import pytest
from dicomweb_client import DICOMwebClient
from PIL import Image
from pydicom import dcmread, dcmwrite
from pydicom.dataset import Dataset
from pydicom.encaps import generate_frames

from archipel.radiology.samples import SyntheticPatient, ct_series, jpeg_multiframe, to_bytes
from tests.dicomweb_messages import sha256
from tests.support import ArchipelServer


def encoded(ds: Dataset) -> bytes:
    """The bytes dicomweb-client's ``store_instances`` sends for ``ds``."""
    buf = io.BytesIO()
    dcmwrite(buf, ds)
    return buf.getvalue()


def part10(ds: Dataset) -> bytes:
    """Part-10 bytes of a dataset the client read, written back as they were read (preamble and meta included)."""
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=False)
    return buf.getvalue()


@pytest.fixture(scope="module")
def client(server: ArchipelServer) -> DICOMwebClient:
    return DICOMwebClient(url=server.url + "/dicom-web", headers=server.headers("radiologist"))


@pytest.fixture(scope="module")
def sent(client: DICOMwebClient) -> dict[str, Dataset]:
    """A CT series and a JPEG multi-frame of one study, stored with ``store_instances``."""
    patient = SyntheticPatient(f"C{uuid.uuid4().hex[:8]}", "CLIENT^Test", "19800808", "F", issuer="SITE-A")
    ct = ct_series(patient, 3, rows=64, cols=64)
    jpeg = jpeg_multiframe(patient, frames=4, size=64)
    jpeg.StudyInstanceUID = ct[0].StudyInstanceUID
    # as a client reading files would hold them: with their preamble, so it sends the Part-10 bytes unchanged
    datasets = [dcmread(io.BytesIO(to_bytes(ds))) for ds in (*ct, jpeg)]
    response = client.store_instances(datasets)
    assert len(response.ReferencedSOPSequence) == len(datasets)
    assert "FailedSOPSequence" not in response
    return dict(zip(("ct0", "ct1", "ct2", "jpeg"), datasets, strict=True))


def test_store_then_retrieve_study_series_and_instance_byte_identical(
    client: DICOMwebClient, sent: dict[str, Dataset]
) -> None:
    expected = {ds.SOPInstanceUID: sha256(encoded(ds)) for ds in sent.values()}
    ct = sent["ct0"]
    study = client.retrieve_study(ct.StudyInstanceUID)
    assert {ds.SOPInstanceUID: sha256(part10(ds)) for ds in study} == expected
    series = client.retrieve_series(ct.StudyInstanceUID, ct.SeriesInstanceUID)
    assert sorted(sha256(part10(ds)) for ds in series) == sorted(
        expected[sent[k].SOPInstanceUID] for k in ("ct0", "ct1", "ct2")
    )
    jpeg = sent["jpeg"]
    one = client.retrieve_instance(jpeg.StudyInstanceUID, jpeg.SeriesInstanceUID, jpeg.SOPInstanceUID)
    assert sha256(part10(one)) == expected[jpeg.SOPInstanceUID]
    assert one.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.4.50"


@pytest.mark.filterwarnings("ignore:A value of type 'int' cannot be assigned")
def test_instance_metadata_reads_back_as_a_dataset(client: DICOMwebClient, sent: dict[str, Dataset]) -> None:
    ct = sent["ct1"]
    meta = client.retrieve_instance_metadata(ct.StudyInstanceUID, ct.SeriesInstanceUID, ct.SOPInstanceUID)
    fetched: list[bytes] = []

    def fetch(uri: str) -> bytes:
        fetched.extend(client.retrieve_bulkdata(uri))
        return fetched[-1]

    ds = Dataset.from_json(meta, bulk_data_uri_handler=fetch)
    assert ds.PatientName == "CLIENT^Test"
    assert (ds.Rows, ds.Columns, ds.WindowCenter) == (64, 64, 40)
    assert fetched == [ct.PixelData]  # Pixel Data, fetched through its BulkDataURI


def test_jpeg_frames_are_the_source_fragments(client: DICOMwebClient, sent: dict[str, Dataset]) -> None:
    jpeg = sent["jpeg"]
    source = list(generate_frames(jpeg.PixelData, number_of_frames=4))
    frames = client.retrieve_instance_frames(
        jpeg.StudyInstanceUID, jpeg.SeriesInstanceUID, jpeg.SOPInstanceUID, frame_numbers=[4, 2]
    )
    assert frames == [source[3], source[1]]
    typed = client.retrieve_instance_frames(
        jpeg.StudyInstanceUID,
        jpeg.SeriesInstanceUID,
        jpeg.SOPInstanceUID,
        frame_numbers=[1],
        media_types=(("image/jpeg", "1.2.840.10008.1.2.4.50"),),
    )
    assert typed == [source[0]]


def test_native_frames_are_the_pixel_bytes(client: DICOMwebClient, sent: dict[str, Dataset]) -> None:
    ct = sent["ct2"]
    [frame] = client.retrieve_instance_frames(
        ct.StudyInstanceUID,
        ct.SeriesInstanceUID,
        ct.SOPInstanceUID,
        frame_numbers=[1],
        media_types=(("application/octet-stream", "1.2.840.10008.1.2.1"),),
    )
    assert frame == ct.PixelData


def test_rendered_instance_and_frame(client: DICOMwebClient, sent: dict[str, Dataset]) -> None:
    ct = sent["ct0"]
    rendered = client.retrieve_instance_rendered(
        ct.StudyInstanceUID, ct.SeriesInstanceUID, ct.SOPInstanceUID, media_types=("image/jpeg",)
    )
    assert Image.open(io.BytesIO(rendered)).size == (64, 64)
    jpeg = sent["jpeg"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        png = client.retrieve_instance_frames_rendered(
            jpeg.StudyInstanceUID,
            jpeg.SeriesInstanceUID,
            jpeg.SOPInstanceUID,
            frame_numbers=[3],
            media_types=("image/png",),
        )
    image = Image.open(io.BytesIO(png))
    assert (image.format, image.mode) == ("PNG", "RGB")


def test_a_dataset_built_in_memory_is_stored_with_a_zero_preamble(client: DICOMwebClient) -> None:
    """pydicom writes such a data set without preamble and DICM prefix; the archive adds them, keeps the rest."""
    patient = SyntheticPatient(f"M{uuid.uuid4().hex[:8]}", "MEMORY^Test", "19900909", "M", issuer="SITE-A")
    ds = ct_series(patient, 1, rows=16, cols=16)[0]
    sent_bytes = encoded(ds)
    assert sent_bytes[128:132] != b"DICM"
    response = client.store_instances([ds])
    assert len(response.ReferencedSOPSequence) == 1
    back = client.retrieve_instance(ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID)
    assert part10(back) == bytes(128) + b"DICM" + sent_bytes
