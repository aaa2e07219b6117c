"""`archipel hl7 …` as an operator runs it: the listener alone, senders, and the dead letters replayed after a fix;
and the same dead letters through /api/hl7 for administrators only."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from archipel.platform.identity import feed, store
from archipel.platform.runtime import Runtime
from archipel.radiology.hl7.receiver import receive
from archipel.radiology.hl7.sources import add_source
from tests.auth_helpers import Clock, bearer, login, make_account
from tests.support import ArchipelServer, archipel_cmd, free_port, port_answers, wait_until
from tests.test_hl7_mllp import message, msa, msh, pid, send

UNKNOWN = "CLINIQUE-KER"


@pytest.fixture
def listening(tmp_path: Path) -> Iterator[tuple[Path, int]]:
    """``archipel hl7 listen`` on a free port, with its own data directory."""
    data, port = tmp_path / "data", free_port()
    archipel_cmd("hl7", "sources", "add", "CH-ARMOR", "--site", "SITE-ARMOR", data=data)
    log = (tmp_path / "hl7.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "archipel.cli", "hl7", "listen", "--port", str(port), "--host", "127.0.0.1"],
        env={**os.environ, "ARCHIPEL_DATA": str(data)},
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_until(lambda: port_answers("127.0.0.1", port), timeout=120, what="the MLLP listener")
        yield data, port
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
        log.close()


def test_listen_sources_and_dead_letters_from_the_command_line(listening: tuple[Path, int]) -> None:
    data, port = listening
    assert msa(send(port, message(msh("ADT^A01", "CLI-1"), pid("IPP6001"))))[0] == "AA"
    refused = send(port, message(msh("ADT^A01", "CLI-2", facility=UNKNOWN), pid("IPP6002")))
    assert msa(refused)[0] == "AE"
    listed = archipel_cmd("hl7", "dead-letters", "list", data=data).stdout
    assert "CLI-2" in listed and UNKNOWN in listed and "CLI-1" not in listed
    dead_id = next(line.split("\t")[0] for line in listed.splitlines() if "CLI-2" in line)
    shown = archipel_cmd("hl7", "dead-letters", "show", dead_id, data=data).stdout
    assert "PID|1||IPP6002" in shown and "unknown sender" in shown
    again = archipel_cmd("hl7", "dead-letters", "replay", dead_id, data=data, check=False)
    assert again.returncode == 1 and "refused again" in again.stderr
    archipel_cmd(
        "hl7", "sources", "add", UNKNOWN, "--site", "SITE-KER", "--application", "XPLORE-RIS", data=data
    )
    assert UNKNOWN in archipel_cmd("hl7", "sources", "list", data=data).stdout
    assert archipel_cmd("hl7", "dead-letters", "replay", dead_id, data=data).returncode == 0
    assert "CLI-2" not in archipel_cmd("hl7", "dead-letters", "list", data=data).stdout
    assert "resolved" in archipel_cmd("hl7", "dead-letters", "list", "--all", data=data).stdout


def test_a_malformed_dead_letter_is_corrected_and_replayed_from_the_command_line(
    listening: tuple[Path, int], tmp_path: Path
) -> None:
    data, port = listening
    header = "MSH|^~\\&|XPLORE-RIS|CH-ARMOR|ARCHIPEL|REGION|20261202||ADT^A01|{}|P|2.5|||AL|NE|FRA|8859/1"
    assert msa(send(port, message(header.format(""), pid("IPP6010"))))[0] == "AR"
    listed = archipel_cmd("hl7", "dead-letters", "list", data=data).stdout
    dead_id = next(line.split("\t")[0] for line in listed.splitlines()[1:] if "ADT^A01" in line)
    shown = archipel_cmd("hl7", "dead-letters", "show", dead_id, data=data).stdout
    original = shown.split("\nmessage:\n", 1)[1]
    assert original.startswith("MSH|") and "PID|1||IPP6010" in original
    refused = archipel_cmd("hl7", "dead-letters", "replay", dead_id, data=data, check=False)
    assert refused.returncode == 1 and "MSH-10" in refused.stderr  # replayed as received: still unreadable
    fixed = tmp_path / "fixed.hl7"
    fixed.write_text(original.replace("|ADT^A01||P|", "|ADT^A01|CLI-10|P|"), encoding="utf-8")
    bad = tmp_path / "bad.hl7"
    bad.write_text("PID|1||IPP6010\n", encoding="utf-8")
    wrong = archipel_cmd(
        "hl7", "dead-letters", "correct", dead_id, "--file", str(bad), data=data, check=False
    )
    assert wrong.returncode == 2 and "MSH" in wrong.stderr
    done = archipel_cmd("hl7", "dead-letters", "replay", dead_id, "--file", str(fixed), data=data)
    assert "corrected" in done.stderr + done.stdout and "accepted" in done.stderr + done.stdout
    shown = archipel_cmd("hl7", "dead-letters", "show", dead_id, data=data).stdout
    assert "state: resolved" in shown and "corrected: True" in shown
    kept, corrected = shown.split("\nmessage:\n", 1)[1].split("\ncorrected message:\n", 1)
    assert "|ADT^A01||P|" in kept and "|ADT^A01|CLI-10|P|" in corrected
    # The RIS's message is applied: sending it again is a duplicate of the replayed one.
    again = msa(send(port, message(header.format("CLI-10"), pid("IPP6010"))))
    assert again[0] == "AA" and "duplicate" in again[2]


@pytest.fixture
def http_admin(runtime: Runtime, http: TestClient, clock: Clock) -> dict[str, dict[str, str]]:
    """Bearer headers of an administrator and a radiologist."""
    store.forget_indexes()
    feed.forget_feeds()
    headers = {}
    for name, role in (("root", "admin"), ("rad", "radiologist")):
        account = make_account(runtime, name, role=role, site="SITE-ARMOR" if role != "admin" else "")
        clock.advance(seconds=30)
        r = login(http, account, clock.now)
        assert r.status_code == 200, r.text
        headers[name] = bearer(r.json()["access_token"])
    return headers


def test_api_dead_letters_for_administrators_only(
    runtime: Runtime, http: TestClient, http_admin: dict[str, dict[str, str]]
) -> None:
    root, rad = http_admin["root"], http_admin["rad"]
    result = receive(runtime, message(msh("ADT^A04", "API-1", facility=UNKNOWN), pid("IPP6003")))
    assert result.code == "AE" and result.dead_letter is not None
    assert http.get("/api/hl7/dead-letters", headers=rad).status_code == 403
    listed = http.get("/api/hl7/dead-letters", headers=root).json()
    assert [d["control_id"] for d in listed] == ["API-1"]
    one = http.get(f"/api/hl7/dead-letters/{result.dead_letter}", headers=root).json()
    assert "IPP6003" in one["message"] and one["ack_code"] == "AE"
    assert http.get("/api/hl7/dead-letters/999999", headers=root).status_code == 404
    r = http.post("/api/hl7/sources", headers=root, json={"facility": UNKNOWN, "site": "SITE-KER"})
    assert r.status_code == 201, r.text
    assert UNKNOWN in [s["facility"] for s in http.get("/api/hl7/sources", headers=root).json()]
    replayed = http.post(f"/api/hl7/dead-letters/{result.dead_letter}/replay", headers=root).json()
    assert replayed["accepted"] is True
    assert http.post(f"/api/hl7/dead-letters/{result.dead_letter}/replay", headers=root).status_code == 409
    assert http.get("/api/hl7/dead-letters", headers=root).json() == []
    assert http.get("/api/hl7/dead-letters?state=bogus", headers=root).status_code == 422
    broken = receive(runtime, message(msh("ADT^A04", "", facility=UNKNOWN), pid("IPP6004")))
    assert broken.code == "AR" and broken.dead_letter is not None
    url = f"/api/hl7/dead-letters/{broken.dead_letter}"
    shown = http.get(url, headers=root).json()
    assert shown["corrected_message"] is None and shown["corrected"] is False
    assert http.put(url + "/message", headers=rad, json={"message": "x"}).status_code == 403
    unreadable = http.put(url + "/message", headers=root, json={"message": shown["message"]})
    assert unreadable.status_code == 422 and "MSH-10" in unreadable.text
    text = shown["message"].replace("|ADT^A04^ADT_A01||", "|ADT^A04^ADT_A01|API-2|")
    put = http.put(url + "/message", headers=root, json={"message": text})
    assert put.status_code == 200 and put.json()["corrected_by"] == "root"
    shown = http.get(url, headers=root).json()
    assert "|API-2|" in shown["corrected_message"] and "|API-2|" not in shown["message"]
    assert http.post(url + "/replay", headers=root).json()["accepted"] is True
    assert http.put(url + "/message", headers=root, json={"message": text}).status_code == 409
    add_source(runtime.db, "CH-ARMOR", "SITE-ARMOR")  # the registry is not only the API's
    assert {s["site"] for s in http.get("/api/hl7/sources", headers=root).json()} == {
        "SITE-KER",
        "SITE-ARMOR",
    }


def test_archipel_serve_listens_for_hl7_beside_dicom(tmp_path: Path) -> None:
    hl7_port = free_port()
    srv = ArchipelServer(tmp_path / "data", env={"ARCHIPEL_HL7_PORT": str(hl7_port)})
    srv.data.mkdir(parents=True)
    srv.cli("hl7", "sources", "add", "CH-ARMOR", "--site", "SITE-ARMOR")
    srv.start()
    try:
        wait_until(
            lambda: port_answers("127.0.0.1", hl7_port), timeout=120, what="the MLLP listener of serve"
        )
        assert msa(send(hl7_port, message(msh("ADT^A01", "SRV-1"), pid("IPP6100"))))[0] == "AA"
        assert port_answers("127.0.0.1", srv.dicom_port)
    finally:
        srv.stop()
