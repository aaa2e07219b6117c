"""IOCM rejection notes against a running server: a KOS titled "Rejected for Quality Reasons", sent with dcmtk's
storescu, hides the instances it names from C-FIND (findscu), QIDO-RS and WADO-RS at once; the note stays
visible; a later C-STORE of a rejected instance is refused with 0xA771; an emptied series disappears."""

from __future__ import annotations

import subprocess
import uuid
from dataclasses import dataclass
from pathlib import Path

import httpx
import pydicom
import pytest
from pydicom.dataset import Dataset

from archipel.radiology.samples import SyntheticPatient, ct_series, mr_series, rejection_note, to_bytes
from tests.support import ArchipelServer


@dataclass
class Rejected:
    server: ArchipelServer
    study: str
    ct: list[Dataset]
    mr: list[Dataset]
    note: Dataset
    folder: Path


def _storescu(server: ArchipelServer, *files: Path, level: str = "-v") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["storescu", level, "-aet", "STORESCU", "-aec", server.aet, "127.0.0.1", str(server.dicom_port),
         *map(str, files)],
        capture_output=True,
        text=True,
        timeout=120,
    )  # fmt: skip


@pytest.fixture(scope="module")
def rejected(server: ArchipelServer, tmp_path_factory: pytest.TempPathFactory) -> Rejected:
    """A study of 3 CT and 1 MR slices, then a note rejecting CT #1 and the MR (its whole series)."""
    tag = uuid.uuid4().hex[:6].upper()
    patient = SyntheticPatient(f"RJ{tag}", "REJTEST^Alpha", "19700101", "F", "SITE-A")
    ct = ct_series(patient, 3, study_date="20261120", accession=f"RJ{tag}", rows=8, cols=8)
    mr = mr_series(patient, 1, study_uid=ct[0].StudyInstanceUID, study_date="20261120", accession=f"RJ{tag}")
    folder = tmp_path_factory.mktemp("rejection")
    files = []
    for ds in [*ct, *mr]:
        files.append(folder / f"{ds.SOPInstanceUID}.dcm")
        files[-1].write_bytes(to_bytes(ds))
    done = _storescu(server, *files)
    assert done.returncode == 0, done.stderr
    note = rejection_note([ct[0], mr[0]], "113001")
    note_file = folder / "note.dcm"
    note_file.write_bytes(to_bytes(note))
    done = _storescu(server, note_file)
    assert done.returncode == 0, done.stderr
    return Rejected(server, ct[0].StudyInstanceUID, ct, mr, note, folder)


def _findscu(server: ArchipelServer, out: Path, keys: list[str]) -> list[Dataset]:
    out.mkdir(parents=True, exist_ok=True)
    args = ["findscu", "-S", "-aet", "FINDSCU", "-aec", server.aet, "-X", "-od", str(out), "-to", "60"]
    for key in keys:
        args += ["-k", key]
    subprocess.run([*args, "127.0.0.1", str(server.dicom_port)], check=True, capture_output=True, timeout=120)
    return [pydicom.dcmread(p) for p in sorted(out.glob("rsp*.dcm"))]


def test_cfind_no_longer_finds_the_rejected_instances_but_finds_the_note(
    rejected: Rejected, tmp_path: Path
) -> None:
    found = _findscu(
        rejected.server,
        tmp_path / "image",
        [
            "QueryRetrieveLevel=IMAGE",
            f"StudyInstanceUID={rejected.study}",
            "SeriesInstanceUID",
            "SOPInstanceUID",
        ],
    )
    assert {str(d.SOPInstanceUID) for d in found} == {
        str(rejected.ct[1].SOPInstanceUID),
        str(rejected.ct[2].SOPInstanceUID),
        str(rejected.note.SOPInstanceUID),
    }
    studies = _findscu(
        rejected.server,
        tmp_path / "study",
        [
            "QueryRetrieveLevel=STUDY",
            f"StudyInstanceUID={rejected.study}",
            "ModalitiesInStudy",
            "NumberOfStudyRelatedSeries",
            "NumberOfStudyRelatedInstances",
        ],
    )
    assert len(studies) == 1
    # The MR series held only the rejected MR slice: it is gone, and so is MR from ModalitiesInStudy.
    assert int(studies[0].NumberOfStudyRelatedSeries) == 2
    assert int(studies[0].NumberOfStudyRelatedInstances) == 3
    assert "MR" not in list(studies[0].ModalitiesInStudy)


def test_qido_and_wado_no_longer_serve_the_rejected_instances(rejected: Rejected) -> None:
    srv = rejected.server
    headers = srv.headers("radiologist")
    base = f"{srv.url}/dicom-web/studies/{rejected.study}"
    r = httpx.get(base + "/instances", headers=headers, timeout=30)
    assert r.status_code == 200, r.text
    uids = {i["00080018"]["Value"][0] for i in r.json()}
    assert str(rejected.ct[0].SOPInstanceUID) not in uids
    assert str(rejected.note.SOPInstanceUID) in uids and len(uids) == 3
    gone = rejected.ct[0]
    wado = httpx.get(
        f"{base}/series/{gone.SeriesInstanceUID}/instances/{gone.SOPInstanceUID}",
        headers={**headers, "Accept": 'multipart/related; type="application/dicom"'},
        timeout=30,
    )
    assert wado.status_code == 404


def test_a_rejected_instance_sent_again_is_refused_with_a771_and_stays_hidden(
    rejected: Rejected, tmp_path: Path
) -> None:
    again = _storescu(rejected.server, rejected.folder / f"{rejected.ct[0].SOPInstanceUID}.dcm", level="-d")
    said = again.stdout + again.stderr
    # dcmtk names the class (A7xx: "Refused: OutOfResources"); the debug dump shows the status and the comment.
    assert "0xa771" in said.lower(), said
    assert "rejected instance (113001 Rejected for Quality Reasons)" in said
    found = _findscu(
        rejected.server,
        tmp_path / "again",
        ["QueryRetrieveLevel=IMAGE", f"StudyInstanceUID={rejected.study}", "SOPInstanceUID"],
    )
    assert str(rejected.ct[0].SOPInstanceUID) not in {str(d.SOPInstanceUID) for d in found}


def test_a_rejected_instance_sent_again_by_stow_gets_its_failure_reason(rejected: Rejected) -> None:
    srv = rejected.server
    data = to_bytes(rejected.ct[0])
    body = b"--rj\r\nContent-Type: application/dicom\r\n\r\n" + data + b"\r\n--rj--\r\n"
    r = httpx.post(
        f"{srv.url}/dicom-web/studies",
        headers={
            **srv.headers("radiologist"),
            "Content-Type": 'multipart/related; type="application/dicom"; boundary=rj',
            "Accept": "application/dicom+json",
        },
        content=body,
        timeout=60,
    )
    assert r.status_code == 409, r.text
    failed = r.json()["00081198"]["Value"][0]
    assert failed["00081197"]["Value"] == [0xA771]
    assert "rejected instance (113001" in failed["00000902"]["Value"][0]


def test_cget_of_the_study_retrieves_the_note_and_the_kept_instances_only(
    rejected: Rejected, tmp_path: Path
) -> None:
    srv = rejected.server
    out = tmp_path / "got"
    out.mkdir()
    subprocess.run(
        ["getscu", "-S", "-aet", "GETSCU", "-aec", srv.aet, "-od", str(out),
         "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={rejected.study}",
         "127.0.0.1", str(srv.dicom_port)],
        check=True, capture_output=True, timeout=120,
    )  # fmt: skip
    got = {str(pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID) for p in out.iterdir()}
    assert got == {
        str(rejected.ct[1].SOPInstanceUID),
        str(rejected.ct[2].SOPInstanceUID),
        str(rejected.note.SOPInstanceUID),
    }
