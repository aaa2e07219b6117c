"""Slides into a running platform: multipart upload, resumable (tus) upload, the drop folder; conversion jobs
that index the slide as a series of the case's study (found by QIDO, frames by WADO); bad input refused or failed
with its reason, nothing half-indexed, and a retry after the fix."""

from __future__ import annotations

import base64
import hashlib
import json
import shutil
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from archipel.radiology.samples import SyntheticPatient, ct_series
from archipel.wsi.sources import open_slide
from archipel.wsi.synthetic import write_svs
from tests.dicomweb_messages import read_multipart, stow
from tests.support import ArchipelServer, wait_until

pytestmark = pytest.mark.e2e

SITE = "SITE-A"
PATIENT = SyntheticPatient(
    patient_id="WSI0001", name="SLIDEPATIENT^Alpha", birth_date="19650304", sex="F", issuer=SITE
)


@pytest.fixture(scope="module")
def slides_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Small synthetic SVS slides (240 px JPEG tiles, sizes not multiples of the tile, label and macro)."""
    folder = tmp_path_factory.mktemp("slides")
    write_svs(folder / "good.svs", 1500, 1100, tile=240, seed=1)
    write_svs(folder / "other.svs", 1300, 900, tile=240, seed=2)
    data = (folder / "good.svs").read_bytes()
    (folder / "truncated.svs").write_bytes(data[: len(data) // 3])
    return folder


@pytest.fixture(scope="module")
def wsi_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ArchipelServer]:
    """A running platform with a drop folder, a pathologist of SITE-A, a radiologist, and SITE-A registered."""
    root = tmp_path_factory.mktemp("wsi-server")
    drop = root / "drop"
    srv = ArchipelServer(
        root / "data",
        env={"ARCHIPEL_WSI_DROP_FOLDER": str(drop), "ARCHIPEL_WSI_DROP_STABLE_SECONDS": "0.5"},
    )
    srv.data.mkdir(parents=True)
    srv.cli("identity", "issuers", "add", SITE)
    srv.add_user("pathologist", "pathologist", SITE)
    srv.add_user("radiologist", "radiologist", SITE)
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


def _upload(srv: ArchipelServer, path: Path, metadata: Any, user: str = "pathologist") -> httpx.Response:
    body = metadata if isinstance(metadata, str) else json.dumps(metadata)
    with path.open("rb") as f:
        return httpx.post(
            srv.url + "/api/slides",
            headers=srv.headers(user),
            data={"metadata": body},
            files={"file": (path.name, f, "application/octet-stream")},
            timeout=60,
        )


def _slide(srv: ArchipelServer, slide_id: str) -> dict[str, Any]:
    r = httpx.get(f"{srv.url}/api/slides/{slide_id}", headers=srv.headers("pathologist"))
    r.raise_for_status()
    return dict(r.json())


def _settled(srv: ArchipelServer, slide_id: str, timeout: float = 120) -> dict[str, Any]:
    state: dict[str, Any] = {}

    def done() -> bool:
        state.update(_slide(srv, slide_id))
        # The job finishes its bookkeeping (annotations made meanwhile, its own state) after the slide is ready.
        job_done = not state.get("job") or state["job"]["state"] in ("succeeded", "failed")
        return state["status"] in ("ready", "failed") and job_done

    wait_until(done, timeout, f"slide {slide_id} to be converted")
    return state


def _qido(srv: ArchipelServer, path: str) -> list[dict[str, Any]]:
    r = httpx.get(srv.url + "/dicom-web" + path, headers=srv.headers("pathologist"))
    assert r.status_code in (200, 204), r.text
    return list(r.json()) if r.status_code == 200 else []


def _value(item: dict[str, Any], tag: str) -> Any:
    return item.get(tag, {}).get("Value", [None])[0]


def test_uploaded_slide_joins_the_case_study_and_its_frames_are_the_source_tiles(
    wsi_server: ArchipelServer, slides_dir: Path
) -> None:
    srv = wsi_server
    # The case already has a CT study in the archive under accession WSIACC1: the slide must join it.
    ct = ct_series(PATIENT, 1, accession="WSIACC1", rows=32, cols=32)
    assert stow(srv, list(ct), user="radiologist").status_code == 200
    study_uid = str(ct[0].StudyInstanceUID)
    meta = {
        "patient_id": PATIENT.patient_id,
        "issuer": SITE,
        "accession": "WSIACC1",
        "container_id": "S1-A1",
        "stain": "HE",
    }
    r = _upload(srv, slides_dir / "good.svs", meta)
    assert r.status_code == 202, r.text
    body = r.json()
    assert set(body) >= {"slide_id", "job_id"}
    job = httpx.get(f"{srv.url}/api/jobs/{body['job_id']}", headers=srv.headers("pathologist")).json()
    assert job["kind"] == "wsi.convert"
    slide = _settled(srv, body["slide_id"])
    assert slide["status"] == "ready", slide["error"]
    assert slide["study_uid"] == study_uid
    assert slide["job"]["state"] == "succeeded" and slide["job"]["progress"] == 100.0
    assert slide["job"]["total"] > 0 and slide["job"]["rate"] > 0
    assert slide["source_sha256"] == hashlib.sha256((slides_dir / "good.svs").read_bytes()).hexdigest()

    series = _qido(srv, f"/studies/{study_uid}/series")
    by_uid = {_value(s, "0020000E"): s for s in series}
    assert slide["series_uid"] in by_uid and _value(by_uid[slide["series_uid"]], "00080060") == "SM"
    assert len(by_uid) == 2  # the CT series and the slide's
    instances = _qido(srv, f"/studies/{study_uid}/series/{slide['series_uid']}/instances")
    assert len(instances) == slide["instances"] >= 4
    level0 = next(i for i in instances if _value(i, "00200013") == 1)
    sop = _value(level0, "00080018")
    r = httpx.get(
        f"{srv.url}/dicom-web/studies/{study_uid}/series/{slide['series_uid']}/instances/{sop}/frames/1,2",
        headers={**srv.headers("pathologist"), "Accept": 'multipart/related; type="image/jpeg"'},
    )
    assert r.status_code == 200, r.text
    frames = [content for _, content in read_multipart(r)]
    with open_slide(slides_dir / "good.svs") as source:
        tiles = [source.read_raw_tile(0, col, 0) for col in (0, 1)]
    stored = [t.data for t in tiles if t is not None]
    assert len(frames) == len(stored) == 2
    for frame, tile in zip(frames, stored, strict=True):
        # Byte for byte; an odd-length codestream carries DICOM's one padding byte after its EOI marker.
        assert frame[: len(tile)] == tile and frame[len(tile) :] in (b"", b"\x00")


def test_bad_metadata_unknown_issuer_and_foreign_files_are_refused_with_a_reason(
    wsi_server: ArchipelServer, slides_dir: Path, tmp_path: Path
) -> None:
    srv = wsi_server
    good = slides_dir / "good.svs"
    r = _upload(srv, good, "{not json")
    assert r.status_code == 400 and "not valid JSON" in r.json()["detail"]
    r = _upload(srv, good, {"issuer": SITE})
    assert r.status_code == 400 and "patient_id is required" in r.json()["detail"]
    r = _upload(srv, good, {"patient_id": "X1", "issuer": "NOWHERE"})
    assert r.status_code == 400 and "unknown issuer NOWHERE" in r.json()["detail"]
    pdf = tmp_path / "report.pdf"
    pdf.write_bytes(b"%PDF-1.7\n" + b"x" * 500)
    r = _upload(srv, pdf, {"patient_id": "X1", "issuer": SITE})
    assert r.status_code == 415 and "unsupported format" in r.json()["detail"]
    r = httpx.post(srv.url + "/api/slides", headers=srv.headers("pathologist"), data={"metadata": "{}"})
    assert r.status_code == 400 and "file" in r.json()["detail"]
    # Nothing of those was kept.
    assert not [p for p in (srv.data / "uploads").iterdir() if p.suffix == ".part"]


def test_corrupt_slide_fails_its_job_with_the_reason_indexes_nothing_and_a_fixed_upload_succeeds(
    wsi_server: ArchipelServer, slides_dir: Path
) -> None:
    srv = wsi_server
    meta = {"patient_id": PATIENT.patient_id, "issuer": SITE, "accession": "WSIACC2", "container_id": "S2-A1"}
    bad = _upload(srv, slides_dir / "truncated.svs", meta).json()
    failed = _settled(srv, bad["slide_id"])
    assert failed["status"] == "failed" and "truncated" in failed["error"]
    assert failed["job"]["state"] == "failed" and failed["job"]["error"] == failed["error"]
    assert _qido(srv, "/studies?AccessionNumber=WSIACC2") == []
    # A retry of the same (still corrupt) source fails again the same way, and still leaves nothing.
    r = httpx.post(f"{srv.url}/api/slides/{bad['slide_id']}/retry", headers=srv.headers("pathologist"))
    assert r.status_code == 202 and r.json()["job_id"] != bad["job_id"]
    again = _settled(srv, bad["slide_id"])
    assert again["status"] == "failed" and again["job_id"] == r.json()["job_id"]
    assert _qido(srv, "/studies?AccessionNumber=WSIACC2") == []
    # The fix: the complete file, sent again.
    fixed = _upload(srv, slides_dir / "good.svs", meta).json()
    ready = _settled(srv, fixed["slide_id"])
    assert ready["status"] == "ready", ready["error"]
    [study] = _qido(srv, "/studies?AccessionNumber=WSIACC2")
    assert _value(study, "0020000D") == ready["study_uid"] == failed["study_uid"]
    assert [_value(s, "0020000E") for s in _qido(srv, f"/studies/{ready['study_uid']}/series")] == [
        ready["series_uid"]
    ]


def _tus_headers(srv: ArchipelServer, **extra: str) -> dict[str, str]:
    return {**srv.headers("pathologist"), "Tus-Resumable": "1.0.0", **extra}


def _interrupted_patch(srv: ArchipelServer, location: str, offset: int, data: bytes, sent: int) -> None:
    """A PATCH announcing all of ``data`` whose connection drops after ``sent`` bytes of body."""
    headers = _tus_headers(
        srv,
        **{"Content-Type": "application/offset+octet-stream", "Upload-Offset": str(offset)},
    )
    head = f"PATCH {location} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {len(data)}\r\n"
    head += "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n"
    with socket.create_connection(("127.0.0.1", srv.http_port)) as sock:
        sock.sendall(head.encode() + data[:sent])
    # closed without the rest: the server keeps what arrived


def test_resumable_upload_survives_an_interruption_and_resumes_from_the_offset(
    wsi_server: ArchipelServer, slides_dir: Path
) -> None:
    srv = wsi_server
    data = (slides_dir / "other.svs").read_bytes()
    meta = {"patient_id": PATIENT.patient_id, "issuer": SITE, "accession": "WSIACC3", "urgent": True}
    encoded = lambda v: base64.b64encode(v.encode()).decode()  # noqa: E731
    r = httpx.options(srv.url + "/api/slides/uploads", headers=srv.headers("pathologist"))
    assert (
        r.status_code == 204
        and "creation" in r.headers["tus-extension"]
        and r.headers["tus-version"] == "1.0.0"
    )
    r = httpx.post(
        srv.url + "/api/slides/uploads",
        headers=_tus_headers(
            srv,
            **{
                "Upload-Length": str(len(data)),
                "Upload-Metadata": f"filename {encoded('other.svs')},metadata {encoded(json.dumps(meta))}",
            },
        ),
    )
    assert r.status_code == 201, r.text
    location = r.headers["location"]
    first = len(data) // 3
    _interrupted_patch(srv, location, 0, data, first)

    def offset() -> int:
        h = httpx.head(srv.url + location, headers=_tus_headers(srv))
        assert h.status_code == 200 and h.headers["cache-control"] == "no-store"
        return int(h.headers["upload-offset"])

    wait_until(lambda: offset() == first, 30, "the interrupted bytes to be kept")
    patch = {"Content-Type": "application/offset+octet-stream"}
    # A wrong offset and a wrong checksum are refused, and change nothing.
    r = httpx.patch(
        srv.url + location, headers=_tus_headers(srv, **patch, **{"Upload-Offset": "0"}), content=data
    )
    assert r.status_code == 409 and r.headers["upload-offset"] == str(first)
    wrong = base64.b64encode(hashlib.sha1(b"other").digest()).decode()
    r = httpx.patch(
        srv.url + location,
        headers=_tus_headers(
            srv, **patch, **{"Upload-Offset": str(first), "Upload-Checksum": f"sha1 {wrong}"}
        ),
        content=data[first:],
    )
    assert r.status_code == 460 and offset() == first
    # Resume from where the server says; the last piece completes the upload and names the slide and job.
    right = base64.b64encode(hashlib.sha1(data[first:]).digest()).decode()
    r = httpx.patch(
        srv.url + location,
        headers=_tus_headers(
            srv, **patch, **{"Upload-Offset": str(offset()), "Upload-Checksum": f"sha1 {right}"}
        ),
        content=data[first:],
        timeout=60,
    )
    assert r.status_code == 204, r.text
    assert r.headers["upload-offset"] == str(len(data))
    slide_id = r.headers["archipel-slide-id"]
    slide = _settled(srv, slide_id)
    assert slide["status"] == "ready", slide["error"]
    assert slide["urgent"] is True and slide["origin"] == "tus" and slide["filename"] == "other.svs"
    assert slide["source_sha256"] == hashlib.sha256(data).hexdigest()
    assert _qido(srv, f"/studies/{slide['study_uid']}/series/{slide['series_uid']}/instances")


def test_tus_refuses_bad_metadata_at_creation_and_termination_discards_the_bytes(
    wsi_server: ArchipelServer,
) -> None:
    srv = wsi_server
    bad = base64.b64encode(b'{"issuer": "SITE-A"}').decode()
    r = httpx.post(
        srv.url + "/api/slides/uploads",
        headers=_tus_headers(srv, **{"Upload-Length": "1000", "Upload-Metadata": f"metadata {bad}"}),
    )
    assert r.status_code == 400 and "patient_id is required" in r.json()["detail"]
    r = httpx.post(
        srv.url + "/api/slides/uploads", headers={**srv.headers("pathologist"), "Upload-Length": "10"}
    )
    assert r.status_code == 412 and r.headers["tus-version"] == "1.0.0"
    good = base64.b64encode(json.dumps({"patient_id": "T9", "issuer": SITE}).encode()).decode()
    r = httpx.post(
        srv.url + "/api/slides/uploads",
        headers=_tus_headers(srv, **{"Upload-Length": "1000", "Upload-Metadata": f"metadata {good}"}),
    )
    location = r.headers["location"]
    r = httpx.delete(srv.url + location, headers=_tus_headers(srv))
    assert r.status_code == 204
    assert httpx.head(srv.url + location, headers=_tus_headers(srv)).status_code == 404


def test_drop_folder_takes_stable_files_and_files_them_in_done_or_failed_with_a_reason(
    wsi_server: ArchipelServer, slides_dir: Path
) -> None:
    drop = Path(wsi_server.env["ARCHIPEL_WSI_DROP_FOLDER"])
    # The worker that watches the folder starts after HTTP answers; it makes the folder's sub-folders first.
    wait_until(lambda: (drop / "failed").is_dir(), 120, "the drop folder watcher to start")
    sidecar = {"patient_id": PATIENT.patient_id, "issuer": SITE, "accession": "WSIACC4", "stain": "HE"}
    (drop / "scan-1.svs.json").write_text(json.dumps(sidecar))
    shutil.copy(slides_dir / "good.svs", drop / "scan-1.svs")
    shutil.copy(slides_dir / "other.svs", drop / "no-metadata.svs")
    name = f"{SITE}__{PATIENT.patient_id}__WSIACC5__S5-B2.svs"
    shutil.copy(slides_dir / "other.svs", drop / name)
    wait_until(lambda: (drop / "done" / "scan-1.svs").exists(), 120, "the sidecar slide to be done")
    wait_until(lambda: (drop / "done" / name).exists(), 120, "the named slide to be done")
    assert (drop / "done" / "scan-1.svs.json").exists()
    reason = drop / "failed" / "no-metadata.svs.reason.txt"
    assert reason.exists() and "no metadata" in reason.read_text()
    [study] = _qido(wsi_server, "/studies?AccessionNumber=WSIACC5")
    assert _value(study, "00100020") == PATIENT.patient_id
    # Retry after the fix: a sidecar is added and the file moved back into the drop folder.
    (drop / "no-metadata.svs.json").write_text(json.dumps({**sidecar, "accession": "WSIACC6"}))
    (drop / "failed" / "no-metadata.svs").rename(drop / "no-metadata.svs")
    wait_until(lambda: (drop / "done" / "no-metadata.svs").exists(), 120, "the fixed slide to be done")
    assert _qido(wsi_server, "/studies?AccessionNumber=WSIACC6")


def test_a_reader_without_the_producer_role_cannot_upload(
    wsi_server: ArchipelServer, slides_dir: Path
) -> None:
    srv = wsi_server
    name = f"reader-{uuid.uuid4().hex[:6]}"
    srv.add_user(name, "screening-reader", SITE)
    r = _upload(srv, slides_dir / "good.svs", {"patient_id": "X1", "issuer": SITE}, user=name)
    assert r.status_code == 403
