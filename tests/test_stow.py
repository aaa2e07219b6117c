"""STOW-RS against a running server: what is stored, what is refused and why, and that refusals change nothing."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from io import BytesIO

import httpx
import pydicom
import pytest

from archipel.radiology.samples import SyntheticPatient, ct_series, jpeg_multiframe, to_bytes, uid
from tests.dicomweb_messages import first_value, read_multipart, sha256, sop_items, stow, stow_body
from tests.support import ArchipelServer

REFERENCED = "00081199"
FAILED = "00081198"
FAILURE_REASON = "00081197"
ERROR_COMMENT = "00000902"
RETRIEVE_URL = "00081190"
SOP_INSTANCE = "00081155"


def new_patient() -> SyntheticPatient:
    """A fresh invented patient of SITE-A, so tests sharing the server do not see each other's data."""
    return SyntheticPatient(f"P{uuid.uuid4().hex[:8]}", "STOW^Test", "19750505", "M", issuer="SITE-A")


def stored_hashes(server: ArchipelServer, study_uid: str) -> dict[str, str]:
    """SOP Instance UID → SHA-256 of every instance of the study, as WADO-RS returns them."""
    r = httpx.get(f"{server.url}/dicom-web/studies/{study_uid}", headers=server.headers("radiologist"))
    if r.status_code == 404:
        return {}
    r.raise_for_status()
    return {
        str(pydicom.dcmread(BytesIO(content)).SOPInstanceUID): sha256(content)
        for _, content in read_multipart(r)
    }


def test_a_series_is_stored_and_answered_with_retrieve_urls(server: ArchipelServer) -> None:
    series = ct_series(new_patient(), 3, rows=64, cols=64)
    r = stow(server, list(series))
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("application/dicom+json")
    body = r.json()
    study_uid = series[0].StudyInstanceUID
    assert first_value(body, RETRIEVE_URL) == f"{server.url}/dicom-web/studies/{study_uid}"
    items = sop_items(body, REFERENCED)
    assert [first_value(i, SOP_INSTANCE) for i in items] == [ds.SOPInstanceUID for ds in series]
    for item, ds in zip(items, series, strict=True):
        assert first_value(item, "00081150") == ds.SOPClassUID
        url = str(first_value(item, RETRIEVE_URL))
        assert url.endswith(
            f"/studies/{study_uid}/series/{ds.SeriesInstanceUID}/instances/{ds.SOPInstanceUID}"
        )
    assert FAILED not in body
    assert stored_hashes(server, study_uid) == {ds.SOPInstanceUID: sha256(to_bytes(ds)) for ds in series}


def test_storing_the_same_bytes_again_succeeds(server: ArchipelServer) -> None:
    ds = ct_series(new_patient(), 1, rows=32, cols=32)[0]
    assert stow(server, [ds]).status_code == 200
    again = stow(server, [ds])
    assert again.status_code == 200
    assert [first_value(i, SOP_INSTANCE) for i in sop_items(again.json(), REFERENCED)] == [ds.SOPInstanceUID]


def test_an_instance_of_another_study_than_the_url_fails_with_a_reason(server: ArchipelServer) -> None:
    patient = new_patient()
    ours = ct_series(patient, 1, rows=32, cols=32)[0]
    other = ct_series(patient, 1, rows=32, cols=32)[0]
    target = ours.StudyInstanceUID
    r = stow(server, [ours, other], study=target)
    assert r.status_code == 202, r.text
    body = r.json()
    assert [first_value(i, SOP_INSTANCE) for i in sop_items(body, REFERENCED)] == [ours.SOPInstanceUID]
    [failed] = sop_items(body, FAILED)
    assert first_value(failed, SOP_INSTANCE) == other.SOPInstanceUID
    assert first_value(failed, FAILURE_REASON) == 0xA900
    assert target in str(first_value(failed, ERROR_COMMENT))
    assert "Warning" in r.headers
    assert stored_hashes(server, other.StudyInstanceUID) == {}


@pytest.mark.parametrize(
    "content_type",
    [
        "application/dicom",
        'multipart/related; type="application/dicom+json"; boundary=x',
        "multipart/related; boundary=x",
        "multipart/form-data; boundary=x",
        "application/json",
    ],
)
def test_a_body_that_is_not_multipart_dicom_is_415(server: ArchipelServer, content_type: str) -> None:
    data = to_bytes(ct_series(new_patient(), 1, rows=16, cols=16)[0])
    headers = {**server.headers("radiologist"), "Content-Type": content_type}
    r = httpx.post(server.url + "/dicom-web/studies", content=stow_body([data], "x"), headers=headers)
    assert r.status_code == 415, r.text
    assert r.json()["detail"]


def test_a_malformed_multipart_body_is_400_and_stores_nothing(server: ArchipelServer) -> None:
    ds = ct_series(new_patient(), 1, rows=16, cols=16)[0]
    complete = stow_body([to_bytes(ds)], "cut")
    headers = {
        **server.headers("radiologist"),
        "Content-Type": 'multipart/related; type="application/dicom"; boundary=cut',
    }
    truncated = httpx.post(server.url + "/dicom-web/studies", content=complete[:-40], headers=headers)
    assert truncated.status_code == 400
    assert "closing boundary" in truncated.json()["detail"]
    no_boundary = httpx.post(server.url + "/dicom-web/studies", content=b"just some bytes", headers=headers)
    assert no_boundary.status_code == 400
    assert stored_hashes(server, ds.StudyInstanceUID) == {}


def test_a_garbage_part_fails_with_reason_and_409(server: ArchipelServer) -> None:
    r = stow(server, [b"this is not DICOM at all" * 10])
    assert r.status_code == 409, r.text
    body = r.json()
    assert REFERENCED not in body
    [failed] = sop_items(body, FAILED)
    assert first_value(failed, FAILURE_REASON) == 0xC000
    assert "DICM" in str(first_value(failed, ERROR_COMMENT))


def test_an_unsupported_transfer_syntax_fails_with_C122(server: ArchipelServer) -> None:
    data = to_bytes(ct_series(new_patient(), 1, rows=16, cols=16)[0])
    patched = data.replace(b"1.2.840.10008.1.2.1\x00", b"1.2.840.10008.1.2.99", 1)
    r = stow(server, [patched])
    assert r.status_code == 409
    [failed] = sop_items(r.json(), FAILED)
    assert first_value(failed, FAILURE_REASON) == 0xC122
    assert "1.2.840.10008.1.2.99" in str(first_value(failed, ERROR_COMMENT))


def test_good_and_bad_parts_together_are_202_with_warnings(server: ArchipelServer) -> None:
    patient = new_patient()
    good = [ct_series(patient, 1, rows=16, cols=16)[0], jpeg_multiframe(patient)]
    r = stow(server, [to_bytes(good[0]), b"garbage", to_bytes(good[1])])
    assert r.status_code == 202, r.text
    body = r.json()
    assert {first_value(i, SOP_INSTANCE) for i in sop_items(body, REFERENCED)} == {
        ds.SOPInstanceUID for ds in good
    }
    assert len(sop_items(body, FAILED)) == 1
    assert r.headers["Warning"].startswith("299 ")
    for ds in good:
        assert stored_hashes(server, ds.StudyInstanceUID)[ds.SOPInstanceUID] == sha256(to_bytes(ds))


def test_a_duplicate_with_different_bytes_is_409_0111_and_the_first_copy_is_kept(
    server: ArchipelServer,
) -> None:
    first = ct_series(new_patient(), 1, rows=16, cols=16)[0]
    original = to_bytes(first)
    assert stow(server, [original]).status_code == 200
    first.SeriesDescription = "CHANGED AFTER THE FACT"
    r = stow(server, [first])
    assert r.status_code == 409, r.text
    [failed] = sop_items(r.json(), FAILED)
    assert first_value(failed, SOP_INSTANCE) == first.SOPInstanceUID
    assert first_value(failed, FAILURE_REASON) == 0x0111
    assert "already stored" in str(first_value(failed, ERROR_COMMENT))
    assert stored_hashes(server, first.StudyInstanceUID) == {first.SOPInstanceUID: sha256(original)}


def test_a_part_with_a_wrong_uid_fails_without_touching_the_study(server: ArchipelServer) -> None:
    patient = new_patient()
    kept = ct_series(patient, 1, rows=16, cols=16)[0]
    assert stow(server, [kept]).status_code == 200
    before = stored_hashes(server, kept.StudyInstanceUID)
    broken = ct_series(patient, 1, rows=16, cols=16, study_uid=kept.StudyInstanceUID)[0]
    broken.file_meta.MediaStorageSOPInstanceUID = uid()
    with pytest.warns(UserWarning, match="Invalid value for VR UI"):
        broken.SOPInstanceUID = "not-a-uid"
        data = to_bytes(broken)
    r = stow(server, [data], study=kept.StudyInstanceUID)
    assert r.status_code == 409
    assert first_value(sop_items(r.json(), FAILED)[0], FAILURE_REASON) == 0xA900
    assert stored_hashes(server, kept.StudyInstanceUID) == before


def test_storing_needs_a_token(server: ArchipelServer) -> None:
    body = stow_body([to_bytes(ct_series(new_patient(), 1, rows=16, cols=16)[0])], "b")
    headers = {"Content-Type": 'multipart/related; type="application/dicom"; boundary=b'}
    for path in ("/dicom-web/studies", f"/dicom-web/studies/{uid()}"):
        r = httpx.post(server.url + path, content=body, headers=headers)
        assert r.status_code == 401
        assert r.headers["www-authenticate"] == "Bearer"


def test_a_user_without_a_producer_role_may_not_store(server: ArchipelServer) -> None:
    server.add_user("doctor", "treating-doctor", "SITE-A")
    r = stow(server, [ct_series(new_patient(), 1, rows=16, cols=16)[0]], user="doctor")
    assert r.status_code == 403
    assert "may not add" in r.json()["detail"]


def test_a_large_body_streamed_in_chunks_with_a_preamble_is_stored_intact(server: ArchipelServer) -> None:
    """A body sent with chunked transfer encoding, text before the first boundary (RFC 2046 allows it), and a
    part larger than what is kept in memory (it spools to disk)."""
    patient = new_patient()
    big = ct_series(patient, 1, rows=2048, cols=2100)[0]  # 8.6 MB of pixels
    small = ct_series(patient, 1, rows=16, cols=16, study_uid=big.StudyInstanceUID)[0]
    body = b"This is a preamble, to be ignored.\r\n" + stow_body([to_bytes(big), to_bytes(small)], "chunky")

    def chunks() -> Iterator[bytes]:
        for start in range(0, len(body), 65_537):
            yield body[start : start + 65_537]

    headers = {
        **server.headers("radiologist"),
        "Content-Type": 'multipart/related; type="application/dicom"; boundary="chunky"',
    }
    r = httpx.post(server.url + "/dicom-web/studies", content=chunks(), headers=headers, timeout=120)
    assert r.status_code == 200, r.text
    assert stored_hashes(server, big.StudyInstanceUID) == {
        big.SOPInstanceUID: sha256(to_bytes(big)),
        small.SOPInstanceUID: sha256(to_bytes(small)),
    }
