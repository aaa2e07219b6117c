"""The priors of a reading request fetched from the region: a real Orthanc (Debian's) holds an earlier CT of the
patient under its own site's PatientID; the teleradiologist's claim asks the region for the patient's studies (a
prefetch job), the job retrieves the study by C-GET, and the request then shows it as an available prior that
opens in the viewer. A node that is down shows on the request as a failed fetch, with its reason."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from sqlalchemy import select

from archipel.platform import jobs
from archipel.platform.runtime import Runtime
from archipel.radiology import prefetch
from archipel.radiology import tumorboard_models as m
from archipel.radiology.archive import Archive
from archipel.radiology.prefetch_node import held_instances
from archipel.radiology.samples import SyntheticPatient, ct_series, uid
from archipel.radiology.telerad_models import PriorStudy
from tests.prefetch_peers import OrthancPacs, person
from tests.test_prefetch import add_node
from tests.test_telerad import HOSPITAL, OTHER_SITE, Desk, open_desk


@pytest.fixture(scope="module")
def orthanc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OrthancPacs]:
    pacs = OrthancPacs(tmp_path_factory.mktemp("orthanc-telerad"), aet="ORTHANCSUD")
    yield pacs
    pacs.stop()


@pytest.fixture
def desk(runtime: Runtime, archive: Archive) -> Iterator[Desk]:
    with open_desk(runtime, archive) as d:
        yield d


def _woman() -> SyntheticPatient:
    """The woman of a test at the site of the remote PACS, under a PatientID of her own (the PACS is shared by the
    module's tests)."""
    return SyntheticPatient(
        f"SUD-{uuid.uuid4().hex[:8]}", "TELERADPRIOR^Camille", "19610412", "F", OTHER_SITE
    )


def _claim_and_prefetch(desk: Desk, woman: SyntheticPatient) -> tuple[int, str]:
    """A reading request for the woman (known at the requesting hospital too), claimed by radio1; the prefetch
    job the claim queued, run as a worker would run it. Returns the request and the job."""
    here_id = f"TRP-{woman.patient_id}"
    master = person(desk.rt.db, [(HOSPITAL, here_id), (OTHER_SITE, woman.patient_id)], "TELERADPRIOR")
    rid = desk.ask(patient_id=here_id, accession_number="TRP26-1").json()["request_id"]
    assert desk.get("radio1", f"/requests/{rid}/priors").json()["priors"] == []  # nothing here, no claim yet
    assert desk.post("radio1", f"/requests/{rid}/claim").status_code == 200
    [job] = [
        j for j in desk.http.get("/api/jobs", headers=desk.h("radio1")).json() if j["kind"] == "prefetch"
    ]
    with desk.rt.db.sessions() as s:
        request = s.execute(
            select(m.PrefetchRequest).where(m.PrefetchRequest.job_id == job["id"])
        ).scalar_one()
        assert request.master_id == master
    prefetch.prefetch_job(job["id"])
    return rid, job["id"]


@pytest.mark.e2e
def test_a_claim_fetches_the_remote_prior_which_then_shows_as_available(
    desk: Desk, orthanc: OrthancPacs
) -> None:
    add_node(desk.rt, orthanc.aet, orthanc.dicom_port, OTHER_SITE, "get")
    woman, prior = _woman(), uid()
    orthanc.upload(
        ct_series(woman, 2, study_uid=prior, study_date="20240115", accession="SUD-24", rows=32, cols=32)
    )

    rid, job_id = _claim_and_prefetch(desk, woman)

    job = jobs.get_job(desk.rt.db, job_id)
    assert job is not None and job.state == jobs.SUCCEEDED, job and job.error
    assert held_instances(desk.rt.db, [prior]) == {prior: 2}
    [shown] = desk.get("radio1", f"/requests/{rid}/priors").json()["priors"]
    assert shown["study_uid"] == prior and shown["status"] == "available"
    assert shown["site"] == OTHER_SITE and shown["patient"] == f"{OTHER_SITE}/{woman.patient_id}"
    assert shown["study_date"] == "20240115" and shown["viewer_url"] == f"/app/study.html?study={prior}"
    r = desk.http.get(f"/dicom-web/studies/{prior}/series", headers=desk.h("radio1"))
    assert r.status_code == 200, r.text  # the reader opens it: the claim's reading assignment covers it
    with desk.rt.db.sessions() as s:
        rows = s.execute(
            select(PriorStudy.study_uid, PriorStudy.status).where(PriorStudy.request_id == rid)
        ).all()
    assert [tuple(r) for r in rows] == [(prior, "available")]


@pytest.mark.e2e
def test_a_prior_found_at_a_node_that_then_fails_shows_as_failed_with_its_reason(
    desk: Desk, orthanc: OrthancPacs
) -> None:
    # The PACS answers the query but cannot send the study: our AE title is unknown to it, so its C-MOVE fails.
    add_node(desk.rt, orthanc.aet, orthanc.dicom_port, OTHER_SITE, "move", attempts=1)
    woman, prior = _woman(), uid()
    orthanc.upload(
        ct_series(woman, 1, study_uid=prior, study_date="20230301", accession="SUD-23", rows=32, cols=32)
    )

    rid, job_id = _claim_and_prefetch(desk, woman)

    job = jobs.get_job(desk.rt.db, job_id)
    assert job is not None and job.state == jobs.FAILED
    [shown] = desk.get("radio1", f"/requests/{rid}/priors").json()["priors"]
    assert shown["study_uid"] == prior and shown["status"] == "failed"
    assert "ORTHANCSUD" in shown["reason"] and shown["viewer_url"] == ""
    assert held_instances(desk.rt.db, [prior]) == {}
    # Only the reader who asked for the fetch is told of a study that is not here.
    assert desk.get("requester", f"/requests/{rid}/priors").json()["priors"] == []
