"""Screening intake on a running ``archipel serve``: a modality sends the woman's MG exam with dcmtk's storescu,
and over HTTP the episode is created and linked to her, held while a view is missing, and on the L2 worklist
(once) when the last view arrives; an exam missing a view is flagged and on no worklist until a technician of
the centre releases it.

The server is the session's shared one: the patients, accounts, node and programmes here are this module's own.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydicom.dataset import Dataset

from archipel.radiology.samples import SyntheticPatient, mammo_study, uid
from tests.dimse_peers import dcmtk, write_files
from tests.support import ArchipelServer, wait_until

CENTRE, COORDINATION = "CENTRE-CS", "CRCDC-CS"
MODALITY = "MGMODALITY"
EXAM = "2026-03-05"
ADMIN, RADIO, TECH = "cs-admin-depistage", "cs-radio-centre", "cs-manip-centre"
L2, READER_1, READER_2 = "cs-lecteur-l2", "cs-reader-one", "cs-reader-two"


@dataclass
class Site:
    """The shared server, seen by this module's people."""

    srv: ArchipelServer

    def call(self, who: str, method: str, path: str, body: dict[str, Any] | None = None) -> httpx.Response:
        return httpx.request(
            method, self.srv.url + path, headers=self.srv.headers(who), json=body, timeout=60
        )

    def episode(self, eid: int) -> dict[str, Any]:
        r = self.call(RADIO, "GET", f"/api/mammo/episodes/{eid}")
        assert r.status_code == 200, r.text
        return dict(r.json())

    def listed(self, who: str, eid: int) -> list[str]:
        r = self.call(who, "GET", "/api/mammo/worklist")
        assert r.status_code == 200, r.text
        return [w["role"] for w in r.json() if w["episode_id"] == eid]

    def send(self, tmp: Path, images: list[Dataset]) -> None:
        """C-STORE the images as the centre's modality, with storescu."""
        files = write_files(tmp, images)
        peer = ("-aet", MODALITY, "-aec", self.srv.aet, "127.0.0.1", str(self.srv.dicom_port))
        run = dcmtk("storescu", "-R", *peer, *map(str, files))
        assert run.returncode == 0, run.stderr


@pytest.fixture(scope="module")
def site(server: ArchipelServer) -> Iterator[Site]:
    server.add_user(ADMIN, "admin")
    server.add_user(RADIO, "radiologist", CENTRE)
    server.add_user(TECH, "technician", CENTRE)
    for reader in (L2, READER_1, READER_2):
        server.add_user(reader, "screening-reader", COORDINATION)
    server.add_node(MODALITY, site=CENTRE)
    here = Site(server)
    programmes = {
        "cs-fr": ({"protocol": "fr-depistage"}, [(RADIO, "l1"), (L2, "l2")]),
        "cs-eu": (
            {"protocol": "eu-blinded", "settle_minutes": 0},
            [(READER_1, "reader"), (READER_2, "reader")],
        ),
    }
    for code, (settings, readers) in programmes.items():
        r = here.call(ADMIN, "POST", "/api/mammo/programmes", {"code": code, **settings})
        assert r.status_code == 201, r.text
        for reader, qualification in readers:
            body = {"reader": reader, "qualification": qualification}
            r = here.call(ADMIN, "POST", f"/api/mammo/programmes/{code}/readers", body)
            assert r.status_code == 201, r.text
    yield here


def woman(n: int) -> SyntheticPatient:
    return SyntheticPatient(f"MGCS{n:04d}", f"TESTCSTORE^N{n}", "19580101", "F", issuer=CENTRE)


def test_an_exam_sent_by_c_store_reaches_the_l2_worklist_once_and_only_when_complete(
    site: Site, tmp_path: Path
) -> None:
    mg = woman(1)
    images = mammo_study(mg, key="cstore-fr-1")
    study_uid = str(images[0].StudyInstanceUID)
    site.send(tmp_path / "first", images[:3])  # R-CC, L-CC, R-MLO; the L-MLO comes later

    # The study waits for its episode on the centre's reconciliation list.
    rec = site.call(RADIO, "GET", "/api/mammo/reconciliation").json()
    assert study_uid in {row["study_uid"] for row in rec["studies_without_episode"]}

    # The centre's L1 form creates the episode, matched to the study and linked to the woman in the MPI.
    form = {
        "programme": "cs-fr", "issuer": CENTRE, "patient_id": mg.patient_id, "site": CENTRE, "round": "first",
        "screen_date": EXAM, "woman_contact": "woman-cs1@example.org", "gp_contact": "gp-cs1@example.org",
        "history": "none", "clinical_exam": "normal", "read": {"right": {"assessment": 1},
        "left": {"assessment": 1}, "density": "b"},
    }  # fmt: skip
    r = site.call(RADIO, "POST", "/api/mammo/l1-forms", form)
    assert r.status_code == 201, r.text
    eid = int(r.json()["id"])
    ep = site.episode(eid)
    assert [st["study_uid"] for st in ep["studies"]] == [study_uid]
    assert ep["patient"] == f"{CENTRE}/{mg.patient_id}" and ep["master_id"] is not None
    studies = site.call(RADIO, "GET", f"/api/patients/{ep['master_id']}/studies").json()["studies"]
    assert study_uid in {st["study_uid"] for st in studies}
    # Three views of four: held, no L2 task, on nobody's worklist.
    assert (ep["status"], ep["flag"], ep["tasks"]) == ("incomplete", "", [])
    assert site.listed(L2, eid) == []

    site.send(tmp_path / "last", images[3:])
    wait_until(lambda: site.episode(eid)["status"] == "reading", 30, "the exam to be complete")
    ep = site.episode(eid)
    assert ep["flag"] == "" and [t["role"] for t in ep["tasks"]] == ["l2"]
    assert sorted(f"{v['laterality']}-{v['view']}" for v in ep["studies"][0]["views"]) == [
        "L-CC", "L-MLO", "R-CC", "R-MLO",
    ]  # fmt: skip
    assert site.listed(L2, eid) == ["l2"]
    # The same images sent again change nothing: still one task, listed once.
    site.send(tmp_path / "again", images)
    assert [t["role"] for t in site.episode(eid)["tasks"]] == ["l2"]
    assert site.listed(L2, eid) == ["l2"]


def test_an_exam_sent_by_c_store_without_a_view_is_flagged_and_read_only_once_released(
    site: Site, tmp_path: Path
) -> None:
    mg = woman(2)
    body = {"programme": "cs-eu", "issuer": CENTRE, "patient_id": mg.patient_id, "site": CENTRE,
            "round": "first", "screen_date": EXAM}  # fmt: skip
    r = site.call(RADIO, "POST", "/api/mammo/episodes", body)
    assert r.status_code == 201, r.text
    eid = int(r.json()["id"])
    images = mammo_study(mg, key="cstore-eu-2")
    site.send(tmp_path, images[:3])  # no L-MLO; this programme flags at once (settle time 0)

    def flagged() -> bool:
        return bool(site.episode(eid)["status"] == "flagged")

    wait_until(flagged, 30, "the exam to be flagged")
    ep = site.episode(eid)
    assert ep["flag"] == "missing view L-MLO" and ep["tasks"] == [] and ep["master_id"] is not None
    assert site.listed(READER_1, eid) == [] and site.listed(READER_2, eid) == []

    # The centre's technician releases it (the view cannot be taken): both blind reads are open.
    release = {"action": "release", "reason": "left breast removed"}
    assert site.call(READER_1, "POST", f"/api/mammo/episodes/{eid}/flag", release).status_code == 403
    r = site.call(TECH, "POST", f"/api/mammo/episodes/{eid}/flag", release)
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "reading" and r.json()["resolution"]["lines"] == ["missing view L-MLO"]
    assert sorted(site.listed(READER_1, eid)) == ["first", "second"]


def test_a_corrected_image_sent_by_c_store_clears_the_flag_by_itself(site: Site, tmp_path: Path) -> None:
    mg = woman(3)
    body = {"programme": "cs-eu", "issuer": CENTRE, "patient_id": mg.patient_id, "site": CENTRE,
            "round": "first", "screen_date": EXAM}  # fmt: skip
    r = site.call(RADIO, "POST", "/api/mammo/episodes", body)
    assert r.status_code == 201, r.text
    eid = int(r.json()["id"])
    images = mammo_study(mg, key="cstore-eu-3")
    wrong = images[3]
    del wrong.ImageLaterality, wrong.Laterality
    site.send(tmp_path / "exam", images)
    bad = f"image {wrong.SOPInstanceUID} has no laterality"
    flag = f"{bad}; missing view L-MLO"  # settle time 0: the view it does not give is missing at once
    wait_until(lambda: site.episode(eid)["flag"] == flag, 30, "the exam to be flagged")
    assert site.listed(READER_1, eid) == []

    # The modality sends the image again, corrected, under a new SOP Instance UID.
    fixed = copy.deepcopy(wrong)
    fixed.ImageLaterality = "L"
    fixed.SOPInstanceUID = fixed.file_meta.MediaStorageSOPInstanceUID = uid()
    site.send(tmp_path / "fixed", [fixed])
    wait_until(lambda: site.episode(eid)["status"] == "reading", 30, "the flag to clear")
    ep = site.episode(eid)
    assert ep["flag"] == ""
    assert [(x["action"], x["resolved_by"], x["reason"], x["lines"]) for x in ep["flag_resolutions"]] == [
        (
            "corrected",
            "system",
            f"corrected image received: {fixed.SOPInstanceUID}",
            [bad, "missing view L-MLO"],
        )
    ]
    assert sorted(site.listed(READER_1, eid)) == ["first", "second"]
