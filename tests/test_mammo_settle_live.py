"""The periodic settle check on a running ``archipel serve``: an exam sent by dcmtk's storescu without its L-MLO
waits (``incomplete``) and, once the programme's settle time has passed since its latest image, the server's own
beat flags it (``missing view L-MLO``), seen over HTTP; nothing is run by hand.

The server is this module's own: its settle check runs every 2 s (``screening_settle_seconds``) rather than every
minute, so that the test waits for the one minute of settle time only."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx

from archipel.radiology.samples import SyntheticPatient, mammo_study
from tests.dimse_peers import dcmtk, write_files
from tests.support import ArchipelServer, wait_until

CENTRE, MODALITY = "CENTRE-SL", "MGSETTLE"
ADMIN, RADIO, READER = "sl-admin", "sl-radio-centre", "sl-reader"


def test_the_server_flags_an_exam_still_missing_a_view_once_it_has_settled(tmp_path: Path) -> None:
    srv = ArchipelServer(tmp_path / "data", env={"ARCHIPEL_SCREENING_SETTLE_SECONDS": "2"})
    srv.data.mkdir(parents=True)
    srv.add_user(ADMIN, "admin")
    srv.add_user(RADIO, "radiologist", CENTRE)
    srv.add_user(READER, "screening-reader", "CRCDC-SL")
    srv.add_node(MODALITY, site=CENTRE)
    srv.start()
    try:

        def call(who: str, method: str, path: str, body: dict[str, Any] | None = None) -> httpx.Response:
            return httpx.request(method, srv.url + path, headers=srv.headers(who), json=body, timeout=60)

        assert call(ADMIN, "POST", "/api/mammo/programmes",
                    {"code": "sl-eu", "protocol": "eu-blinded", "settle_minutes": 1}).status_code == 201  # fmt: skip
        body = {"reader": READER, "qualification": "reader"}
        assert call(ADMIN, "POST", "/api/mammo/programmes/sl-eu/readers", body).status_code == 201
        mg = SyntheticPatient("MGSL0001", "TESTSETTLE^N1", "19590101", "F", issuer=CENTRE)
        body = {"programme": "sl-eu", "issuer": CENTRE, "patient_id": mg.patient_id, "site": CENTRE,
                "round": "first", "screen_date": "2026-03-05"}  # fmt: skip
        r = call(RADIO, "POST", "/api/mammo/episodes", body)
        assert r.status_code == 201, r.text
        eid = r.json()["id"]

        files = write_files(tmp_path / "exam", mammo_study(mg, key="settle-live-1")[:3])  # no L-MLO
        sent = time.monotonic()
        run = dcmtk("storescu", "-aet", MODALITY, "-aec", srv.aet, "127.0.0.1", str(srv.dicom_port),
                    *map(str, files))  # fmt: skip
        assert run.returncode == 0, run.stderr

        def episode() -> dict[str, Any]:
            r = call(RADIO, "GET", f"/api/mammo/episodes/{eid}")
            assert r.status_code == 200, r.text
            return dict(r.json())

        wait_until(lambda: len(episode()["studies"]) == 1, 30, "the images to reach the episode")
        # Within its settle time the exam waits for its view, unflagged and on no worklist.
        ep = episode()
        assert (ep["status"], ep["flag"], ep["tasks"]) == ("incomplete", "", [])
        wait_until(lambda: episode()["status"] == "flagged", 120, "the settle check to flag the exam")
        assert time.monotonic() - sent >= 55  # not before its minute of settle time
        ep = episode()
        assert ep["flag"] == "missing view L-MLO" and ep["tasks"] == []
        worklist = call(READER, "GET", "/api/mammo/worklist").json()
        assert eid not in {w["episode_id"] for w in worklist}
    finally:
        srv.stop()
