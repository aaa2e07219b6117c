"""A frozen section on a running platform, followed live: the on-duty pathologist's event stream announces the
request and its slide, the surgeon's stream of the request carries the verdict the moment it is signed, and the
verdict's SR joins the case's study beside the converted slide."""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from archipel.platform.db import Database
from archipel.wsi.synthetic import write_svs
from tests.access_support import ensure_master
from tests.support import ArchipelServer, wait_until

pytestmark = pytest.mark.e2e

HOSPITAL, LAB, PATIENT = "CH-SUD", "CHU-NORD", "FSL0001"


class Listener:
    """Reads a Server-Sent Events stream in a thread and keeps each event (its data, and when it came)."""

    def __init__(self, url: str, headers: dict[str, str]) -> None:
        self.events: list[dict[str, Any]] = []
        self.arrived: list[float] = []
        self.status = 0
        self.ended = threading.Event()
        self._socket: socket.socket | None = None
        self._thread = threading.Thread(target=self._run, args=(url, headers), daemon=True)
        self._thread.start()

    def _run(self, url: str, headers: dict[str, str]) -> None:
        try:
            with httpx.stream("GET", url, headers=headers, timeout=httpx.Timeout(10, read=120)) as r:
                self.status = r.status_code
                self._socket = r.extensions["network_stream"].get_extra_info("socket")
                data: list[str] = []
                for line in r.iter_lines():
                    if line.startswith("data: "):
                        data.append(line.removeprefix("data: "))
                    elif not line and data:
                        self.events.append(json.loads("\n".join(data)))
                        self.arrived.append(time.monotonic())
                        data = []
        except httpx.HTTPError:
            pass  # the server stopped
        finally:
            self.ended.set()

    def close(self) -> None:
        """Leave the stream, as a browser closing the page does."""
        if self._socket is not None and not self.ended.is_set():
            with contextlib.suppress(OSError):
                self._socket.shutdown(socket.SHUT_RDWR)
        self.ended.wait(10)

    def kinds(self) -> list[str]:
        return [str(e["kind"]) for e in self.events]

    def wait_for(self, kind: str, timeout: float = 30) -> dict[str, Any]:
        wait_until(lambda: kind in self.kinds(), timeout, f"a {kind} event (got {self.kinds()})")
        return next(e for e in self.events if e["kind"] == kind)


@pytest.fixture(scope="module")
def hospital(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ArchipelServer, Path]]:
    root = tmp_path_factory.mktemp("frozen-live")
    srv = ArchipelServer(root / "data")
    srv.data.mkdir(parents=True)
    srv.add_user("chirurgienne", "surgeon", HOSPITAL)
    srv.add_user("technicien", "technician", HOSPITAL)
    srv.add_user("patho-garde", "pathologist", LAB)
    srv.start()
    db = Database(f"sqlite:///{(srv.data / 'index.sqlite').resolve()}")
    ensure_master(db, HOSPITAL, PATIENT, "LIVEFROZEN", "19550505")
    db.dispose()
    slide = write_svs(root / "frozen.svs", 700, 500, tile=240, downsamples=(1,), seed=9)
    try:
        yield srv, slide
    finally:
        srv.stop()


def test_the_surgeon_sees_the_verdict_live(hospital: tuple[ArchipelServer, Path]) -> None:
    srv, slide_file = hospital
    now = datetime.now(UTC)
    shift = {"start": (now - timedelta(minutes=5)).isoformat(), "end": (now + timedelta(hours=4)).isoformat()}
    on = httpx.post(srv.url + "/api/duty", json=shift, headers=srv.headers("patho-garde"))
    assert on.status_code == 201, on.text
    board = Listener(srv.url + "/api/frozen-sections/stream", srv.headers("patho-garde"))
    wait_until(lambda: board.status == 200, 10, "the worklist stream to open")

    created = httpx.post(
        srv.url + "/api/frozen-sections",
        json={
            "issuer": HOSPITAL,
            "patient_id": PATIENT,
            "accession": "FSL26-1",
            "specimen": "thyroid nodule",
            "specimen_site": "right lobe",
            "clinical_question": "papillary carcinoma?",
            "or_phone": "+33 4 00 00 00 21",
        },
        headers=srv.headers("chirurgienne"),
    )
    assert created.status_code == 201, created.text
    rid = created.json()["request_id"]
    assert board.wait_for("requested")["request_id"] == rid
    theatre = Listener(f"{srv.url}/api/frozen-sections/{rid}/events", srv.headers("chirurgienne"))

    with slide_file.open("rb") as f:
        up = httpx.post(
            srv.url + "/api/slides",
            headers=srv.headers("technicien"),
            data={"metadata": json.dumps({"issuer": HOSPITAL, "patient_id": PATIENT, "frozen_request": rid})},
            files={"file": ("frozen.svs", f, "application/octet-stream")},
            timeout=60,
        )
    assert up.status_code == 202, up.text
    slide_id = up.json()["slide_id"]
    assert board.wait_for("slide-attached")["slide_id"] == slide_id
    assert theatre.wait_for("slide-attached")["slide_id"] == slide_id

    patho = srv.headers("patho-garde")
    worklist = httpx.get(srv.url + "/api/frozen-sections/worklist", headers=patho).json()["requests"]
    assert [r["request_id"] for r in worklist] == [rid]
    assert httpx.post(f"{srv.url}/api/frozen-sections/{rid}/claim", headers=patho).status_code == 200
    assert httpx.get(f"{srv.url}/tiles/{slide_id}.dzi", headers=patho).status_code == 200
    assert theatre.wait_for("first-view")["by"] == "patho-garde"

    signed = httpx.post(
        f"{srv.url}/api/frozen-sections/{rid}/verdict",
        json={"diagnosis": "benign", "margins": "not-assessed", "text": "follicular nodule, no carcinoma"},
        headers=patho,
        timeout=60,
    )
    answered = time.monotonic()
    assert signed.status_code == 201, signed.text
    verdict = theatre.wait_for("verdict", 10)
    assert verdict["diagnosis"] == "benign" and verdict["state"] == "answered"
    latency = theatre.arrived[theatre.kinds().index("verdict")] - answered
    print(f"verdict reached the surgeon's stream {max(latency, 0) * 1000:.0f} ms after the signing answered")
    assert board.wait_for("verdict")["request_id"] == rid

    seen = httpx.post(f"{srv.url}/api/frozen-sections/{rid}/seen", headers=srv.headers("chirurgienne"))
    assert seen.status_code == 200 and seen.json()["state"] == "seen"
    assert theatre.ended.wait(10), "the request's stream ends once the verdict is seen"
    assert theatre.kinds()[-1] == "seen"

    # The SR is a series of the case's study, next to the slide once it is converted.
    wait_until(
        lambda: httpx.get(f"{srv.url}/api/slides/{slide_id}", headers=patho).json()["status"] == "ready",
        90,
        "the slide's conversion",
    )
    study = signed.json()["verdict"]["study_uid"]
    series = httpx.get(f"{srv.url}/dicom-web/studies/{study}/series", headers=srv.headers("chirurgienne"))
    assert series.status_code == 200, series.text
    modalities = sorted(s["00080060"]["Value"][0] for s in series.json())
    assert modalities == ["SM", "SR"]
    check = httpx.get(
        f"{srv.url}/api/frozen-sections/{rid}/verdict/verify", headers=srv.headers("chirurgienne")
    )
    assert check.json()["valid"] is True
    board.close()
    assert board.ended.is_set()
