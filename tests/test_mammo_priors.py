"""Priors of a screening episode fetched from the region's other PACS (a real Orthanc holding the woman's earlier
mammogram under its own PatientID), tracked on the episode (requested, retrieving, received, or failed with the
reason), the case held back meanwhile and released when they are here, or by hand after a failure; and the
intake of views beyond the four screening views (extra views, a tomosynthesis stack) without a flag."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from archipel.mammo import priors
from archipel.mammo.models import PriorFetch, ScreeningStudy
from archipel.platform import jobs
from archipel.platform.db import Database
from archipel.radiology.archive import Archive
from archipel.radiology.models import DicomNode
from archipel.radiology.prefetch_node import held_instances
from archipel.radiology.remote_nodes import configure_remote
from archipel.radiology.samples import SyntheticPatient, mammo_study, to_bytes
from tests.dicomweb_messages import stow_body
from tests.mammo_images import extra_view, tomosynthesis
from tests.prefetch_peers import OrthancPacs, closed_port, person
from tests.support import ArchipelServer, wait_until
from tests.test_mammo_api import CENTRE, EXAM, Programme, prog  # noqa: F401

sqlite_only = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)


@pytest.fixture(scope="module")
def orthanc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OrthancPacs]:
    pacs = OrthancPacs(tmp_path_factory.mktemp("orthanc-priors"))
    yield pacs
    pacs.stop()


def add_node(p: Programme, aet: str, port: int, site: str, **kw: float) -> None:
    with p.rt.db.write() as s:
        s.add(DicomNode(ae_title=aet, host="127.0.0.1", port=port, site=site))
    configure_remote(p.rt.db, aet, "127.0.0.1", retrieve="get", **kw)  # type: ignore[arg-type]


def screened_woman(p: Programme, n: int, elsewhere: str) -> tuple[SyntheticPatient, int]:
    """A woman known at the centre and, as ``elsewhere``, at SITE-B; her episode of the blinded programme
    with its four views stored; returns her and the episode id."""
    mg = SyntheticPatient(f"MGP{n:03d}", f"TESTPRIORS^N{n}", "19610412", "F", issuer=CENTRE)
    person(p.rt.db, [(CENTRE, mg.patient_id), ("SITE-B", elsewhere)], f"TESTPRIORS{n}")
    body = {"programme": "eu", "issuer": CENTRE, "patient_id": mg.patient_id, "site": CENTRE,
            "round": "subsequent", "screen_date": EXAM}  # fmt: skip
    r = p.post("centre", "/api/mammo/episodes", body)
    assert r.status_code == 201, r.text
    assert r.json()["master_id"] is not None and r.json()["prior_fetch"] is None
    archive = Archive(p.rt.db, p.rt.blobs)
    for ds in mammo_study(mg, key=f"priors-exam-{n}"):
        archive.store(to_bytes(ds))
    return mg, int(r.json()["id"])


def open_tasks(p: Programme) -> list[int]:
    return [w["episode_id"] for w in p.get("r1", "/api/mammo/worklist").json()]


@sqlite_only
@pytest.mark.e2e
def test_priors_are_fetched_from_the_other_pacs_and_the_case_released_when_they_are_here(
    prog: Programme,  # noqa: F811
    orthanc: OrthancPacs,
) -> None:
    p = prog
    p.setup("eu", "eu-blinded")
    add_node(p, orthanc.aet, orthanc.dicom_port, "SITE-B")
    _, eid = screened_woman(p, 1, "B-PRIOR-1")
    assert open_tasks(p) == [eid, eid]
    # Her mammogram of two years ago is at SITE-B's PACS, under SITE-B's PatientID; a CT there is not a prior.
    earlier = SyntheticPatient("B-PRIOR-1", "TESTPRIORS^N1", "19610412", "F")
    prior_images = mammo_study(earlier, study_date="20240302", accession="PRIORB1", key="priors-b-1")
    orthanc.upload(prior_images)
    prior_uid = str(prior_images[0].StudyInstanceUID)

    r = p.post("centre", f"/api/mammo/episodes/{eid}/priors", {"status": "requested"})
    assert r.status_code == 200, r.text
    ep = r.json()
    assert ep["priors"] == "requested" and ep["prior_fetch"]["state"] == "requested"
    job_id = ep["prior_fetch"]["job_id"]
    assert job_id and jobs.get_job(p.rt.db, job_id) is not None
    # Held back while they are fetched; asking again meanwhile is refused.
    assert open_tasks(p) == []
    r = p.post("centre", f"/api/mammo/episodes/{eid}/priors", {"status": "requested"})
    assert r.status_code == 409 and "being fetched already" in r.json()["detail"]

    # The fetch's task (as the prefetch worker runs it): C-FIND, then C-GET of the MG study before the exam.
    assert priors.run_fetch(p.rt.db, ep["prior_fetch"]["id"]) == "received"

    assert held_instances(p.rt.db, [prior_uid]).get(prior_uid) == 4
    ep = p.get("centre", f"/api/mammo/episodes/{eid}").json()
    assert ep["priors"] == "received" and ep["prior_fetch"]["state"] == "received"
    assert ep["prior_fetch"]["progress"] == 100.0 and ep["prior_fetch"]["finished_at"]
    (node,) = ep["prior_fetch"]["nodes"]
    assert node["node"] == orthanc.aet and node["state"] == "ready" and node["studies_found"] == 1
    assert sorted(open_tasks(p)) == [eid, eid]
    # The prior is the episode's, not a study to reconcile; the reader finds it among the woman's studies.
    rec = p.get("centre", "/api/mammo/reconciliation").json()
    assert prior_uid not in [x["study_uid"] for x in rec["studies_without_episode"]]
    with p.rt.db.sessions() as s:
        marked = s.execute(select(ScreeningStudy).where(ScreeningStudy.study_uid == prior_uid)).scalar_one()
        assert marked.prior_of == eid and marked.episode_id is None


@sqlite_only
def test_a_dead_node_leaves_the_case_held_with_its_reason_until_released_by_hand(prog: Programme) -> None:  # noqa: F811
    p = prog
    p.setup("eu", "eu-blinded")
    add_node(p, "DEADPACS", closed_port(), "SITE-B", timeout_seconds=1, attempts=1)
    _, eid = screened_woman(p, 2, "B-PRIOR-2")

    before = p.get("centre", f"/api/mammo/episodes/{eid}").json()["next"]
    assert before["step"] == "wait" and "priors" not in before["waiting_for"]
    asked = p.post("centre", f"/api/mammo/episodes/{eid}/priors", {"status": "requested"}).json()
    fetch = asked["prior_fetch"]
    # Held back: the episode's next step says it waits for its priors, not for the blind reads.
    assert asked["next"]["step"] == "wait" and asked["next"]["waiting_for"] == "the priors (requested)"
    assert priors.run_fetch(p.rt.db, fetch["id"]) == "failed"

    ep = p.get("centre", f"/api/mammo/episodes/{eid}").json()
    assert ep["next"]["step"] == "wait" and "fetching them failed" in ep["next"]["waiting_for"]
    assert "DEADPACS" in ep["next"]["waiting_for"]
    assert ep["priors"] == "failed" and ep["prior_fetch"]["state"] == "failed"
    assert "DEADPACS" in ep["prior_fetch"]["reason"] and "after 1 attempt" in ep["prior_fetch"]["reason"]
    assert ep["prior_fetch"]["nodes"][0]["state"] == "failed"
    # Still held, and a claim says why.
    assert open_tasks(p) == []
    first = p.task(eid, "first")
    r = p.post("r1", f"/api/mammo/tasks/{first}/claim")
    assert r.status_code == 409 and "fetching its priors failed" in r.json()["detail"]
    # Running the failed fetch again changes nothing; the periodic check has nothing to settle.
    assert priors.run_fetch(p.rt.db, fetch["id"]) == "failed"
    resent: list[int] = []
    assert priors.check_open(p.rt.db, resend=resent.append) == 0 and resent == []

    # Asked again (a new fetch), then released by hand: the case is read without priors.
    again = p.post("centre", f"/api/mammo/episodes/{eid}/priors", {"status": "requested"}).json()
    assert again["prior_fetch"]["id"] != fetch["id"] and again["priors"] == "requested"
    # A fetch whose task was lost (its job still queued ten minutes on) is queued again by the periodic check.
    assert priors.check_open(p.rt.db, resend=resent.append) == 0 and resent == []
    later = datetime.now(UTC) + priors.STALLED_AFTER
    assert priors.check_open(p.rt.db, later, resend=resent.append) == 0
    assert resent == [again["prior_fetch"]["id"]]
    r = p.post("centre", f"/api/mammo/episodes/{eid}/priors", {"status": "none"})
    assert r.status_code == 200 and r.json()["priors"] == "none"
    assert r.json()["next"] == before
    assert r.json()["prior_fetch"]["state"] == "released"
    assert "released by radio-centre" in r.json()["prior_fetch"]["reason"]
    assert sorted(open_tasks(p)) == [eid, eid]
    # The released fetch's job, if it still runs, no longer holds the case.
    assert priors.run_fetch(p.rt.db, again["prior_fetch"]["id"]) == "released"
    assert p.get("centre", f"/api/mammo/episodes/{eid}").json()["priors"] == "none"
    assert p.post("r1", f"/api/mammo/tasks/{first}/claim").status_code == 200


@sqlite_only
def test_priors_for_an_unknown_episode_an_unknown_status_or_an_unlinked_woman_are_refused(
    prog: Programme,  # noqa: F811
) -> None:
    p = prog
    p.setup("eu", "eu-blinded")
    r = p.post("centre", "/api/mammo/episodes/999999/priors", {"status": "requested"})
    assert r.status_code == 404 and "screening episode 999999" in r.json()["detail"]
    _, eid = screened_woman(p, 3, "B-PRIOR-3")
    r = p.post("centre", f"/api/mammo/episodes/{eid}/priors", {"status": "fetched"})
    assert r.status_code == 422
    # A woman the MPI does not know: her identities elsewhere cannot be found.
    body = {"programme": "eu", "issuer": CENTRE, "patient_id": "MGP-UNKNOWN", "site": CENTRE,
            "round": "first", "screen_date": EXAM}  # fmt: skip
    unlinked = p.post("centre", "/api/mammo/episodes", body).json()
    assert unlinked["master_id"] is None
    r = p.post("centre", f"/api/mammo/episodes/{unlinked['id']}/priors", {"status": "requested"})
    assert r.status_code == 409 and "not linked to a master patient" in r.json()["detail"]
    with p.rt.db.sessions() as s:
        assert s.execute(select(PriorFetch)).scalars().all() == []
    assert p.get("centre", f"/api/mammo/episodes/{unlinked['id']}").json()["priors"] == "none"


def test_the_fetch_state_follows_its_job() -> None:
    fetch = PriorFetch(state="requested", reason="", job_id="j1", requested_at=datetime.now(UTC))
    job = jobs.Job(id="j1", kind="prefetch", state=jobs.QUEUED, error="")
    assert priors.live_state(fetch, job) == ("requested", "")
    job.state = jobs.RUNNING
    assert priors.live_state(fetch, job) == ("retrieving", "")
    job.state, job.error = jobs.FAILED, "failed: PACSB: association refused"
    assert priors.live_state(fetch, job) == ("failed", "failed: PACSB: association refused")
    job.state = jobs.SUCCEEDED
    assert priors.live_state(fetch, job) == ("received", "")
    assert priors.live_state(fetch, None)[0] == "failed"


@sqlite_only
def test_extra_views_and_a_tomosynthesis_stack_are_taken_in_without_a_flag(prog: Programme) -> None:  # noqa: F811
    p = prog
    p.setup("eu", "eu-blinded")
    mg = SyntheticPatient("MGP004", "TESTPRIORS^N4", "19610412", "F", issuer=CENTRE)
    person(p.rt.db, [(CENTRE, mg.patient_id)], "TESTPRIORS4")
    body = {"programme": "eu", "issuer": CENTRE, "patient_id": mg.patient_id, "site": CENTRE,
            "round": "first", "screen_date": EXAM}  # fmt: skip
    eid = p.post("centre", "/api/mammo/episodes", body).json()["id"]
    images = mammo_study(mg, key="extras-4")
    r_cc = next(ds for ds in images if ds.ImageLaterality == "R" and ds.ViewPosition == "CC")
    xccl = extra_view(r_cc, "XCCL")
    spot = extra_view(r_cc, "CC", spot=True)
    stack = tomosynthesis(images[1], "L", "CC", frames=8, size=64)
    archive = Archive(p.rt.db, p.rt.blobs)
    for ds in [*images, xccl, spot, stack]:
        archive.store(to_bytes(ds))

    ep = p.get("centre", f"/api/mammo/episodes/{eid}").json()
    assert ep["status"] != "flagged" and ep["flag"] == "", ep
    assert {t["role"] for t in ep["tasks"]} == {"first", "second"}
    views = {v["sop"]: v for v in ep["studies"][0]["views"]}
    assert len(views) == 7
    assert views[str(xccl.SOPInstanceUID)] | {"sop": ""} == {
        "sop": "", "laterality": "R", "view": "XCCL", "modifier": "", "frames": 1, "tomo": False,
    }  # fmt: skip
    assert (
        views[str(spot.SOPInstanceUID)]["view"] == "CC"
        and views[str(spot.SOPInstanceUID)]["modifier"] == "spot"
    )
    tomo = views[str(stack.SOPInstanceUID)]
    assert (tomo["laterality"], tomo["view"], tomo["frames"], tomo["tomo"]) == ("L", "CC", 8, True)


@pytest.mark.e2e
def test_archipel_serve_fetches_the_priors_in_its_worker_and_releases_the_case(
    tmp_path: Path, orthanc: OrthancPacs
) -> None:
    """The whole path on a running ``archipel serve``: the coordinator's request over HTTP, the fetch task on the
    worker's prefetch queue (C-FIND, C-GET from Orthanc), and the case on the reader's worklist once here."""
    srv = ArchipelServer(tmp_path / "data")
    srv.data.mkdir(parents=True)
    srv.add_user("admin-depistage", "admin")
    srv.add_user("radio-centre", "radiologist", CENTRE)
    srv.add_user("reader-one", "screening-reader", "CRCDC")
    srv.start()
    try:
        call = lambda who, method, path, **kw: httpx.request(  # noqa: E731
            method, srv.url + path, headers=srv.headers(who), timeout=60, **kw
        )
        r = call(
            "admin-depistage", "POST", "/api/mammo/programmes", json={"code": "eu", "protocol": "eu-blinded"}
        )
        assert r.status_code == 201, r.text
        body = {"reader": "reader-one", "qualification": "reader"}
        assert (
            call("admin-depistage", "POST", "/api/mammo/programmes/eu/readers", json=body).status_code == 201
        )
        db = Database(f"sqlite:///{(srv.data / 'index.sqlite').resolve()}")
        try:
            mg = SyntheticPatient("MGP005", "TESTPRIORS^N5", "19610412", "F", issuer=CENTRE)
            person(db, [(CENTRE, mg.patient_id), ("SITE-B", "B-PRIOR-5")], "TESTPRIORS5")
            with db.write() as s:
                s.add(
                    DicomNode(ae_title=orthanc.aet, host="127.0.0.1", port=orthanc.dicom_port, site="SITE-B")
                )
            configure_remote(db, orthanc.aet, "127.0.0.1", retrieve="get")
        finally:
            db.dispose()
        body = {"programme": "eu", "issuer": CENTRE, "patient_id": mg.patient_id, "site": CENTRE,
                "round": "subsequent", "screen_date": EXAM}  # fmt: skip
        r = call("radio-centre", "POST", "/api/mammo/episodes", json=body)
        assert r.status_code == 201, r.text
        eid = r.json()["id"]
        images = mammo_study(mg, key="priors-exam-5")
        boundary = f"b-{uuid.uuid4().hex}"
        r = httpx.post(
            srv.url + "/dicom-web/studies",
            content=stow_body([to_bytes(ds) for ds in images], boundary),
            headers={
                **srv.headers("radio-centre"),
                "Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}',
            },
            timeout=60,
        )
        assert r.status_code == 200, r.text
        prior = mammo_study(
            SyntheticPatient("B-PRIOR-5", "TESTPRIORS^N5", "19610412", "F"),
            study_date="20240305",
            accession="PRIORB5",
            key="priors-b-5",
        )
        orthanc.upload(prior)

        r = call("radio-centre", "POST", f"/api/mammo/episodes/{eid}/priors", json={"status": "requested"})
        assert r.status_code == 200 and r.json()["priors"] in ("requested", "retrieving", "received"), r.text
        seen: set[str] = set()

        def received() -> bool:
            ep = call("radio-centre", "GET", f"/api/mammo/episodes/{eid}").json()
            seen.add(ep["priors"])
            assert ep["priors"] != "failed", ep["prior_fetch"]
            return bool(ep["priors"] == "received")

        wait_until(received, 180, "the worker to fetch the priors")
        ep = call("radio-centre", "GET", f"/api/mammo/episodes/{eid}").json()
        assert ep["prior_fetch"]["state"] == "received" and ep["prior_fetch"]["nodes"][0]["state"] == "ready"
        worklist = call("reader-one", "GET", "/api/mammo/worklist").json()
        assert [w["episode_id"] for w in worklist] == [eid, eid], (worklist, seen)
        # The reader, once the case is claimed, finds the prior among the woman's studies.
        assert (
            call("reader-one", "POST", f"/api/mammo/tasks/{worklist[0]['task_id']}/claim").status_code == 200
        )
        studies = call("reader-one", "GET", f"/api/patients/{ep['master_id']}/studies").json()["studies"]
        assert str(prior[0].StudyInstanceUID) in {st["study_uid"] for st in studies}
    finally:
        srv.stop()
