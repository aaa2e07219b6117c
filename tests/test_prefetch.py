"""Prefetch from the region's PACS against a real Orthanc (its own AE title, ports, patients and PatientIDs):
C-FIND then C-MOVE to our listener, C-GET, DICOMweb QIDO/WADO, and nodes that are down or never answer."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from io import BytesIO
from pathlib import Path

import pytest
from pydicom import dcmread
from sqlalchemy import select

from archipel.platform import audit, jobs
from archipel.platform.authn import Principal
from archipel.platform.runtime import Runtime
from archipel.radiology import prefetch, tumorboard
from archipel.radiology.dimse.listener import Listener, start_listener
from archipel.radiology.models import DicomNode
from archipel.radiology.prefetch_node import held_instances
from archipel.radiology.remote_nodes import configure_remote
from archipel.radiology.samples import SyntheticPatient, ct_series, uid
from tests.dimse_peers import storescp
from tests.prefetch_peers import DICOMWEB_PLUGIN, HungPacs, OrthancPacs, SilentNode, closed_port, person
from tests.support import wait_until

pytestmark = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)

RADIOLOGIST = Principal(subject="dr-rcp", role="radiologist", site="SITE-A", kind="user")


@pytest.fixture(scope="module")
def orthanc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OrthancPacs]:
    pacs = OrthancPacs(tmp_path_factory.mktemp("orthanc-b"))
    yield pacs
    pacs.stop()


@pytest.fixture
def listener(runtime: Runtime) -> Iterator[Listener]:
    lst = start_listener(runtime, "127.0.0.1", 0)
    yield lst
    lst.stop()


def add_node(rt: Runtime, aet: str, port: int, site: str, retrieve: str, url: str = "", **kw: float) -> None:
    with rt.db.write() as s:
        s.add(DicomNode(ae_title=aet, host="127.0.0.1", port=port, site=site))
    configure_remote(rt.db, aet, "127.0.0.1", retrieve=retrieve, dicomweb_url=url, **kw)  # type: ignore[arg-type]


def remote_study(
    orthanc: OrthancPacs, patient_id: str, key: str, slices: int = 3, date: str = "20260110"
) -> str:
    """A CT study of ``patient_id`` (a SITE-B PatientID) stored in Orthanc; its Study Instance UID."""
    study = uid(f"{key}-study")
    pat = SyntheticPatient(patient_id=patient_id, name="TESTPATIENT^Camille", birth_date="19610412", sex="F")
    orthanc.upload(ct_series(pat, slices, study_uid=study, study_date=date, key=key))
    return study


def run(rt: Runtime, master: int, **kw: object) -> tuple[jobs.Job, dict[str, object]]:
    job_id = prefetch.request_patient_prefetch(
        rt.db, RADIOLOGIST, master, reason="RCP thorax", send=False, **kw
    )  # type: ignore[arg-type]
    prefetch.prefetch_job(job_id)
    job = jobs.get_job(rt.db, job_id)
    assert job is not None
    with rt.db.sessions() as s:
        request_id = json.loads(s.get(jobs.Job, job_id).params)["request_id"]  # type: ignore[union-attr]
    return job, prefetch.request_status(rt.db, request_id)


def held(rt: Runtime, study_uid: str) -> int:
    return held_instances(rt.db, [study_uid]).get(study_uid, 0)


def audit_actions(rt: Runtime) -> list[tuple[str, str, str, str]]:
    with rt.db.sessions() as s:
        rows = s.execute(select(audit.AuditEvent).order_by(audit.AuditEvent.id)).scalars().all()
        return [
            (e.event_type, e.action, e.outcome, e.patient) for e in rows if e.action.startswith("prefetch")
        ]


@pytest.mark.e2e
def test_c_move_retrieves_the_patients_study_under_the_pacs_own_patient_id(
    runtime: Runtime, listener: Listener, orthanc: OrthancPacs
) -> None:
    orthanc.know_destination(runtime.settings.ae_title, listener.port)
    add_node(runtime, orthanc.aet, orthanc.dicom_port, "SITE-B", "move")
    study = remote_study(orthanc, "B-MOVE-1", "move1")
    remote_study(orthanc, "B-OTHER-9", "other9")  # another patient of the PACS: never fetched
    master = person(runtime.db, [("SITE-A", "A-MOVE-1"), ("SITE-B", "B-MOVE-1")], "TESTMOVE")

    job, status = run(runtime, master)

    assert job.state == jobs.SUCCEEDED, job.error
    assert job.percent == 100.0
    assert (job.done, job.total) == (2, 2)  # one node queried, one study retrieved
    assert status["state"] == "ready"
    node = status["nodes"][0]  # type: ignore[index]
    assert node["state"] == "ready" and node["patient_id"] == "B-MOVE-1" and node["studies_found"] == 1
    assert held(runtime, study) == 3
    actions = audit_actions(runtime)
    assert ("110112", "prefetch-query", "success", "SITE-B/B-MOVE-1") in actions
    assert ("110107", "prefetch-retrieve", "success", "SITE-B/B-MOVE-1") in actions

    again, status = run(runtime, master)  # idempotent: nothing retrieved twice
    assert again.state == jobs.SUCCEEDED and status["nodes"][0]["instances_retrieved"] == 0  # type: ignore[index]


@pytest.mark.e2e
def test_c_get_retrieves_on_the_query_association(runtime: Runtime, orthanc: OrthancPacs) -> None:
    add_node(runtime, orthanc.aet, orthanc.dicom_port, "SITE-B", "get")
    study = remote_study(orthanc, "B-GET-1", "get1", slices=2)
    master = person(runtime.db, [("SITE-A", "A-GET-1"), ("SITE-B", "B-GET-1")], "TESTGET")

    job, status = run(runtime, master)

    assert job.state == jobs.SUCCEEDED, job.error
    assert status["state"] == "ready"
    assert held(runtime, study) == 2


@pytest.mark.e2e
def test_modality_and_date_range_select_the_relevant_studies(runtime: Runtime, orthanc: OrthancPacs) -> None:
    add_node(runtime, orthanc.aet, orthanc.dicom_port, "SITE-B", "get")
    recent = remote_study(orthanc, "B-DATE-1", "date-recent", slices=1, date="20260301")
    old = remote_study(orthanc, "B-DATE-1", "date-old", slices=1, date="20190301")
    master = person(runtime.db, [("SITE-A", "A-DATE-1"), ("SITE-B", "B-DATE-1")], "TESTDATE")

    job, _status = run(runtime, master, modalities=["CT"], date_from="20250101")

    assert job.state == jobs.SUCCEEDED, job.error
    assert held(runtime, recent) == 1 and held(runtime, old) == 0


@pytest.mark.e2e
@pytest.mark.skipif(not DICOMWEB_PLUGIN.exists(), reason="Debian package orthanc-dicomweb is not installed")
def test_dicomweb_node_is_queried_by_qido_and_retrieved_by_wado(
    runtime: Runtime, orthanc: OrthancPacs
) -> None:
    add_node(runtime, "ORTHANCWEB", orthanc.dicom_port, "SITE-B", "dicomweb", orthanc.dicomweb)
    study = remote_study(orthanc, "B-WEB-1", "web1", slices=2)
    master = person(runtime.db, [("SITE-A", "A-WEB-1"), ("SITE-B", "B-WEB-1")], "TESTWEB")

    job, status = run(runtime, master)

    assert job.state == jobs.SUCCEEDED, job.error
    assert status["nodes"][0]["state"] == "ready"  # type: ignore[index]
    assert held(runtime, study) == 2


def test_a_patient_without_identity_at_the_site_is_not_queried_there(runtime: Runtime) -> None:
    add_node(runtime, "PACSC", closed_port(), "SITE-C", "move")
    master = person(runtime.db, [("SITE-A", "A-NOID-1")], "TESTNOID")

    job, status = run(runtime, master)

    assert job.state == jobs.SUCCEEDED
    node = status["nodes"][0]  # type: ignore[index]
    assert node["state"] == "none" and "no identity of this patient at site SITE-C" in node["reason"]


def test_a_dead_node_fails_with_its_reason_after_retries_with_backoff(runtime: Runtime) -> None:
    add_node(runtime, "DEADPACS", closed_port(), "SITE-D", "move", timeout_seconds=2, attempts=3)
    master = person(runtime.db, [("SITE-A", "A-DEAD-1"), ("SITE-D", "D-DEAD-1")], "TESTDEAD")

    started = time.monotonic()
    job, status = run(runtime, master)
    elapsed = time.monotonic() - started

    assert job.state == jobs.FAILED
    assert "failed: DEADPACS" in job.error
    node = status["nodes"][0]  # type: ignore[index]
    assert node["state"] == "failed" and node["attempts"] == 3
    assert "after 3 attempts" in node["reason"]
    assert status["state"] == "failed" and "DEADPACS" in str(status["reason"])
    assert 1.5 <= elapsed < 30  # two pauses of backoff (0.5 s, 1 s), never a hang
    assert ("110112", "prefetch-query", "failure", "SITE-D/D-DEAD-1") in audit_actions(runtime)


@pytest.mark.e2e
def test_a_node_that_never_answers_fails_within_its_timeouts(runtime: Runtime, tmp_path: Path) -> None:
    silent = SilentNode()
    try:
        add_node(runtime, "SLOWPACS", silent.port, "SITE-S", "get", timeout_seconds=1.5, attempts=2)
        master = person(runtime.db, [("SITE-A", "A-SLOW-1"), ("SITE-S", "S-SLOW-1")], "TESTSLOW")
        started = time.monotonic()
        job, status = run(runtime, master)
        elapsed = time.monotonic() - started
    finally:
        silent.close()
    assert job.state == jobs.FAILED
    node = status["nodes"][0]  # type: ignore[index]
    assert node["state"] == "failed" and node["attempts"] == 2 and "after 2 attempts" in node["reason"]
    assert elapsed < 30


@pytest.mark.e2e
def test_ready_studies_are_forwarded_to_the_sessions_destination_node(
    runtime: Runtime, orthanc: OrthancPacs, tmp_path: Path
) -> None:
    add_node(runtime, orthanc.aet, orthanc.dicom_port, "SITE-B", "get")
    study = remote_study(orthanc, "B-FWD-1", "fwd1", slices=2)
    master = person(runtime.db, [("SITE-A", "A-FWD-1"), ("SITE-B", "B-FWD-1")], "TESTFWD")
    with storescp(tmp_path / "board-pacs", aet="BOARDPACS") as scp:
        with runtime.db.write() as s:
            s.add(DicomNode(ae_title="BOARDPACS", host="127.0.0.1", port=scp.port, site="SITE-A"))
        when = datetime.now(UTC) + timedelta(days=2)
        session = tumorboard.create_session(
            runtime.db, RADIOLOGIST, tumorboard.NewSession("RCP", when, "Salle 1", "BOARDPACS")
        )
        entry = tumorboard.register_patient(
            runtime.db, RADIOLOGIST, session, master, reason="RCP", send=False
        )
        prefetch.prefetch_job(entry["job_id"])

        assert tumorboard.patient_entry(runtime.db, entry["id"])["status"] == "ready"
        wait_until(lambda: len(scp.received()) == 2, 30, "the two instances at the board's PACS")
    assert all(str(dcmread(BytesIO(b)).StudyInstanceUID) == study for b in scp.received().values())
    # Registering made the board's physician part of the patient's care: they may forward SITE-B's study.
    transferred = [a for a in audit_actions(runtime) if a[1] == "prefetch-forward"]
    assert transferred == [("110104", "prefetch-forward", "success", "")]


def test_a_dicomweb_node_that_never_answers_fails_within_its_timeouts(runtime: Runtime) -> None:
    silent = SilentNode()
    try:
        url = f"http://127.0.0.1:{silent.port}/dicom-web"
        add_node(runtime, "SLOWWEB", silent.port, "SITE-W", "dicomweb", url, timeout_seconds=1, attempts=2)
        master = person(runtime.db, [("SITE-A", "A-SLOWWEB-1"), ("SITE-W", "W-SLOWWEB-1")], "TESTSLOWWEB")
        started = time.monotonic()
        job, status = run(runtime, master)
        elapsed = time.monotonic() - started
    finally:
        silent.close()
    assert job.state == jobs.FAILED
    node = status["nodes"][0]  # type: ignore[index]
    assert node["state"] == "failed" and "QIDO-RS" in node["reason"] and "no answer in 1 s" in node["reason"]
    assert elapsed < 20


def test_a_patient_id_with_a_wildcard_is_never_sent_to_a_pacs(runtime: Runtime) -> None:
    silent = SilentNode()  # would hang the test if it were queried
    try:
        add_node(runtime, "WILDPACS", silent.port, "SITE-X", "move", timeout_seconds=30, attempts=3)
        master = person(runtime.db, [("SITE-A", "A-WILD-1"), ("SITE-X", "X-WILD*")], "TESTWILD")
        job, status = run(runtime, master)
    finally:
        silent.close()
    assert job.state == jobs.FAILED
    node = status["nodes"][0]  # type: ignore[index]
    assert node["state"] == "failed" and "wildcard" in node["reason"] and node["attempts"] == 0
    assert silent.accepted == []


@pytest.mark.e2e
def test_named_studies_only_are_fetched_for_priors(runtime: Runtime, orthanc: OrthancPacs) -> None:
    add_node(runtime, orthanc.aet, orthanc.dicom_port, "SITE-B", "get")
    wanted = remote_study(orthanc, "B-PRIOR-1", "prior-wanted", slices=1)
    other = remote_study(orthanc, "B-PRIOR-1", "prior-other", slices=1)
    master = person(runtime.db, [("SITE-A", "A-PRIOR-1"), ("SITE-B", "B-PRIOR-1")], "TESTPRIOR")

    job, _status = run(runtime, master, studies=[wanted])

    assert job.state == jobs.SUCCEEDED, job.error
    assert held(runtime, wanted) == 1 and held(runtime, other) == 0


@pytest.mark.e2e
def test_a_pacs_that_does_not_know_our_ae_title_fails_the_move_with_its_status(
    runtime: Runtime, orthanc: OrthancPacs
) -> None:
    add_node(runtime, "ORTHANCB", orthanc.dicom_port, "SITE-B", "move", attempts=1)
    runtime.settings.ae_title = "UNKNOWNAE"  # Orthanc has no destination of that name
    remote_study(orthanc, "B-NOAE-1", "noae1", slices=1)
    master = person(runtime.db, [("SITE-A", "A-NOAE-1"), ("SITE-B", "B-NOAE-1")], "TESTNOAE")

    job, status = run(runtime, master)

    assert job.state == jobs.FAILED
    node = status["nodes"][0]  # type: ignore[index]
    assert node["state"] == "failed" and "C-MOVE" in node["reason"] and "status 0x" in node["reason"]
    assert node["studies_found"] == 1


def test_a_pacs_that_accepts_but_never_answers_the_query_fails_on_the_dimse_timeout(runtime: Runtime) -> None:
    hung = HungPacs()
    try:
        add_node(runtime, "HUNGPACS", hung.port, "SITE-H", "move", timeout_seconds=1.5, attempts=2)
        master = person(runtime.db, [("SITE-A", "A-HUNG-1"), ("SITE-H", "H-HUNG-1")], "TESTHUNG")
        started = time.monotonic()
        job, status = run(runtime, master)
        elapsed = time.monotonic() - started
    finally:
        hung.close()
    assert job.state == jobs.FAILED
    node = status["nodes"][0]  # type: ignore[index]
    assert node["state"] == "failed" and "no answer in 1.5 s" in node["reason"] and node["attempts"] == 2
    assert hung.queries == 2
    assert elapsed < 20


@pytest.mark.e2e
def test_a_destination_node_that_is_down_fails_the_forward_with_its_reason(
    runtime: Runtime, orthanc: OrthancPacs
) -> None:
    add_node(runtime, orthanc.aet, orthanc.dicom_port, "SITE-B", "get")
    study = remote_study(orthanc, "B-FWDDOWN-1", "fwddown1", slices=1)
    master = person(runtime.db, [("SITE-A", "A-FWDDOWN-1"), ("SITE-B", "B-FWDDOWN-1")], "TESTFWDDOWN")
    with runtime.db.write() as s:
        s.add(DicomNode(ae_title="DOWNPACS", host="127.0.0.1", port=closed_port(), site="SITE-A"))
    when = datetime.now(UTC) + timedelta(days=2)
    session = tumorboard.create_session(
        runtime.db, RADIOLOGIST, tumorboard.NewSession("RCP", when, "Salle 3", "DOWNPACS")
    )
    entry = tumorboard.register_patient(runtime.db, RADIOLOGIST, session, master, reason="RCP", send=False)
    prefetch.prefetch_job(entry["job_id"])

    after = tumorboard.patient_entry(runtime.db, entry["id"])
    assert after["status"] == "failed" and "destination DOWNPACS" in after["status_reason"]
    assert held(runtime, study) == 1  # what was fetched stays here


def test_slow_nodes_are_waited_for_at_the_same_time_not_one_after_the_other(runtime: Runtime) -> None:
    first, second = SilentNode(), SilentNode()
    try:
        add_node(runtime, "SLOWONE", first.port, "SITE-S1", "get", timeout_seconds=2, attempts=2)
        add_node(runtime, "SLOWTWO", second.port, "SITE-S2", "get", timeout_seconds=2, attempts=2)
        identities = [("SITE-A", "A-PAR-1"), ("SITE-S1", "S1-PAR-1"), ("SITE-S2", "S2-PAR-1")]
        master = person(runtime.db, identities, "TESTPARALLEL")
        started = time.monotonic()
        job, status = run(runtime, master)
        elapsed = time.monotonic() - started
    finally:
        first.close()
        second.close()
    assert job.state == jobs.FAILED and "SLOWONE" in job.error and "SLOWTWO" in job.error
    assert [n["state"] for n in status["nodes"]] == ["failed", "failed"]  # type: ignore[union-attr]
    # Each node: two tries of a 2 s association timeout and a 0.5 s pause; one after the other would be 9 s.
    assert elapsed < 8
