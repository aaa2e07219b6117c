"""Jobs act for the person who started them: they ask the access policy again when they run, and each person
sees only their own jobs."""

from __future__ import annotations

from sqlalchemy import select

from archipel.platform import audit, jobs
from archipel.platform.authn import Principal, create_user, find_user
from archipel.platform.runtime import Runtime
from archipel.radiology.models import Instance
from archipel.radiology.samples import SyntheticPatient, ct_series, to_bytes
from archipel.radiology.tasks import IMPORT_TASK, import_job


def _upload(rt: Runtime, patient: SyntheticPatient) -> str:
    path = rt.settings.data_dir / "upload.dcm"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(to_bytes(next(iter(ct_series(patient, 1, key="jobs-access")))))
    return str(path)


def test_an_import_job_is_refused_when_its_creator_lost_the_right_to_add_data(
    runtime: Runtime, patient: SyntheticPatient
) -> None:
    with runtime.db.write() as s:
        create_user(s, "tech", "technician", "long enough password", site="SITE-A")
    creator = Principal(subject="tech", role="technician", site="SITE-A")
    job_id = jobs.create_job(
        runtime.db, IMPORT_TASK, {"paths": [_upload(runtime, patient)], "issuer": "SITE-A"}, creator
    )
    # While the job waited in the queue, the account was moved to a role that may not add patient data.
    with runtime.db.write() as s:
        user = find_user(s, "tech")
        assert user is not None
        user.role = "auditor"

    import_job(job_id)

    job = jobs.get_job(runtime.db, job_id)
    assert job is not None and job.state == jobs.FAILED
    assert job.error.startswith("refused: ")
    with runtime.db.sessions() as s:
        assert s.execute(select(Instance)).first() is None
        denied = s.execute(
            select(audit.AuditEvent).where(
                audit.AuditEvent.outcome == "denied", audit.AuditEvent.actor == "tech"
            )
        ).scalar_one()
    assert denied.source == f"job:{job_id}"


def test_an_import_job_runs_as_its_creator_and_is_audited_as_them(
    runtime: Runtime, patient: SyntheticPatient
) -> None:
    creator = Principal(subject="tech", role="technician", site="SITE-A")
    job_id = jobs.create_job(
        runtime.db, IMPORT_TASK, {"paths": [_upload(runtime, patient)], "issuer": "SITE-A"}, creator
    )

    import_job(job_id)

    job = jobs.get_job(runtime.db, job_id)
    assert job is not None and job.state == jobs.SUCCEEDED, job.error
    assert jobs.acting_principal(runtime.db, job) == Principal(
        subject="tech", role="technician", site="SITE-A"
    )
    with runtime.db.sessions() as s:
        actions = [
            (e.action, e.actor_site)
            for e in s.execute(select(audit.AuditEvent).where(audit.AuditEvent.actor == "tech")).scalars()
        ]
    assert ("create:study", "SITE-A") in actions and ("import", "SITE-A") in actions


def test_each_person_sees_only_their_own_jobs_and_an_admin_sees_all(runtime: Runtime) -> None:
    mine = jobs.create_job(runtime.db, IMPORT_TASK, {"paths": []}, Principal(subject="a", role="radiologist"))
    theirs = jobs.create_job(
        runtime.db, IMPORT_TASK, {"paths": []}, Principal(subject="b", role="radiologist")
    )

    assert [j.id for j in jobs.list_jobs(runtime.db, owner="a")] == [mine]
    assert jobs.get_job(runtime.db, theirs, owner="a") is None
    assert {j.id for j in jobs.list_jobs(runtime.db)} == {mine, theirs}
