"""Prefetch: fetch one master patient's relevant studies from every remote node of the region.

:func:`request_patient_prefetch` checks the access policy, records a :class:`PrefetchRequest` and queues the
job; the job (:func:`prefetch_job`, queue ``prefetch``) queries each configured remote node with the patient's
PatientID *at that node's site* (the MPI's local identity whose issuer is the node's site), retrieves the
studies we do not hold, forwards them to the request's destination node if it has one, and keeps a status per
node: found, retrieving, ready, none (nothing there), or failed with its reason. Every query and every retrieve
is audited. A node that is down or slow costs at most ``attempts`` bounded tries with a growing pause between
them (:mod:`archipel.radiology.remote` bounds each try), then its status is "failed" and the job goes on with
the next node: the job never hangs. Running a job twice is harmless: held studies are not retrieved again.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import Any

from celery import shared_task
from sqlalchemy import select

from archipel.platform import access, access_facts, audit, jobs
from archipel.platform.authn import Principal
from archipel.platform.db import Database, utcnow
from archipel.platform.identity.models import MasterPatient
from archipel.platform.runtime import get_runtime
from archipel.radiology import tumorboard_models as m
from archipel.radiology.models import DicomNode
from archipel.radiology.prefetch_node import NodeRun, identities_by_site, remote_targets, set_status

log = logging.getLogger("archipel.prefetch")

PREFETCH_TASK = "radiology.prefetch"
#: Remote nodes queried at the same time by one job.
NODE_WORKERS = 4
JOB_KIND = "prefetch"


class PrefetchError(ValueError):
    """A prefetch request that cannot be made (unknown master, unknown destination...)."""


def current_master(db: Database, master_id: int) -> int:
    """``master_id``, or the master it was merged into; :class:`PrefetchError` if there is no such master."""
    with db.sessions() as s:
        if s.get(MasterPatient, master_id) is None:
            raise PrefetchError(f"no master patient {master_id}")
        return access_facts.current_masters(s, {master_id})[master_id]


def authorize(
    db: Database, principal: Principal, master_id: int, *, event_type: str = audit.QUERY, source: str = ""
) -> None:
    """Ask the access policy whether ``principal`` may read ``master_id``'s record (and so bring it here).

    As for the patient record API: a professional of a site holding one of the master's identities reads it
    as its producing site; elsewhere a care relationship (or break-the-glass) is needed. Raises
    :class:`access.AccessDenied`.
    """
    resource, facts = access_facts.load(db, principal, access.Resource(kind="patient", master=master_id))
    site = principal.site if principal.kind == "user" and principal.site not in ("", "*") else ""
    if site and site in facts.patient_sites:
        resource = replace(resource, site=site)
    access.check(db, principal, access.READ, resource, event_type=event_type, source=source, facts=facts)


def send_job(job_id: str) -> None:
    """Queue the prefetch task of ``job_id`` on the ``prefetch`` queue."""
    jobs.celery_app().send_task(PREFETCH_TASK, args=[job_id], queue="prefetch")


def create_request(
    db: Database,
    principal: Principal,
    master_id: int,
    *,
    reason: str,
    studies: Sequence[str] | None = None,
    modalities: Sequence[str] = (),
    date_from: str = "",
    date_to: str = "",
    destination_node_pk: int | None = None,
) -> int:
    """Check access and record a prefetch request (not yet queued); return its id."""
    for value, name in ((date_from, "date_from"), (date_to, "date_to")):
        if value and not (len(value) == 8 and value.isdigit()):
            raise PrefetchError(f"{name} must be a DICOM date YYYYMMDD, got {value!r}")
    master = current_master(db, master_id)
    authorize(db, principal, master)
    with db.write() as s:
        if destination_node_pk is not None and s.get(DicomNode, destination_node_pk) is None:
            raise PrefetchError(f"no DICOM node {destination_node_pk}")
        request = m.PrefetchRequest(
            master_id=master,
            reason=reason,
            modalities="\\".join(x.strip().upper() for x in modalities if x.strip()),
            date_from=date_from,
            date_to=date_to,
            study_uids=json.dumps(list(studies or [])),
            destination_node_pk=destination_node_pk,
            requested_by=principal.subject,
        )
        s.add(request)
        s.flush()
        return request.id


def start_run(db: Database, principal: Principal | str, request_id: int, *, send: bool = True) -> str:
    """Create a job that runs prefetch request ``request_id`` once, for ``principal``, and queue it."""
    job_id = jobs.create_job(db, JOB_KIND, {"request_id": request_id}, principal)
    with db.write() as s:
        request = s.get(m.PrefetchRequest, request_id)
        if request is not None:
            request.job_id = job_id
    if send:
        send_job(job_id)
    return job_id


def request_patient_prefetch(
    db: Database,
    principal: Principal,
    master_id: int,
    *,
    reason: str,
    studies: Sequence[str] | None = None,
    modalities: Sequence[str] = (),
    date_from: str = "",
    date_to: str = "",
    send: bool = True,
) -> str:
    """Fetch ``master_id``'s studies from every remote node into the archive; return the job id at once.

    ``studies`` restricts the fetch to these Study Instance UIDs (priors of a teleradiology request);
    otherwise every study matching ``modalities`` (any, if empty) and the date range is fetched. The job's
    progress is in the job API; :func:`request_status` gives the status per node. Raises
    :class:`access.AccessDenied` if ``principal`` may not read the patient's record, :class:`PrefetchError`
    for an unknown master or a malformed date.
    """
    request_id = create_request(
        db,
        principal,
        master_id,
        reason=reason,
        studies=studies,
        modalities=modalities,
        date_from=date_from,
        date_to=date_to,
    )
    return start_run(db, principal, request_id, send=send)


@shared_task(name=PREFETCH_TASK, **jobs.RETRY_TRANSIENT)
def prefetch_job(job_id: str) -> None:
    """Run one prefetch job: every remote node in turn, each bounded, each with its own status.

    The job succeeds when no node failed; otherwise it fails with the nodes' reasons (their statuses, and
    what the other nodes brought, are kept). Safe to run twice.
    """
    rt = get_runtime()
    job = jobs.get_job(rt.db, job_id)
    if job is None or job.state in (jobs.SUCCEEDED, jobs.FAILED):
        return
    params = json.loads(job.params)
    progress = jobs.Progress(rt.db, job_id)
    with rt.db.sessions() as s:
        request = s.get(m.PrefetchRequest, int(params["request_id"]))
    if request is None:
        progress.fail(f"no prefetch request {params['request_id']}")
        return
    actor = jobs.acting_principal(rt.db, job)
    try:
        authorize(rt.db, actor, request.master_id, source=f"job:{job_id}")
    except access.AccessDenied as exc:
        progress.fail(f"refused: {exc.reason}")
        return
    targets = remote_targets(rt.db)
    sites = identities_by_site(rt.db, request.master_id)
    run = NodeRun(rt, job, actor, request, progress)
    progress.start(len(targets), f"querying {len(targets)} nodes")
    for target in targets:
        set_status(rt.db, request.id, target.node_pk, state=m.QUEUED, reason="")
    # Nodes are worked in parallel: a region's dead or slow PACS then cost the time of one, not their sum.
    results: list[dict[str, Any]] = []
    with ThreadPoolExecutor(
        max_workers=max(1, min(NODE_WORKERS, len(targets))), thread_name_prefix="prefetch"
    ) as pool:
        futures = [pool.submit(run.node, target, sites.get(target.site, [])) for target in targets]
        for target, future in zip(targets, futures, strict=True):
            results.append(future.result())
            run.count(done=1, message=f"{target.ae_title}: {results[-1]['state']}")
    with rt.db.write() as s:
        row = s.get(m.PrefetchRequest, request.id)
        if row is not None:
            row.last_run_at = utcnow()
    failed = [r for r in results if r["state"] == m.FAILED]
    log.info("event=prefetch_done job=%s nodes=%d failed=%d", job_id, len(results), len(failed))
    if failed:
        with rt.db.write() as s:
            row_job = s.get(jobs.Job, job_id)
            if row_job is not None:
                row_job.result = json.dumps({"nodes": results})
        progress.fail("; ".join(f"failed: {r['node']}: {r['reason']}" for r in failed))
        return
    progress.finish({"nodes": results}, "ready")


def request_status(db: Database, request_id: int) -> dict[str, Any]:
    """A prefetch request's status per node, and overall: retrieving while a node works, failed if one failed
    (with the reasons), found while found studies are not all here, else ready."""
    with db.sessions() as s:
        request = s.get(m.PrefetchRequest, request_id)
        if request is None:
            raise PrefetchError(f"no prefetch request {request_id}")
        rows = s.execute(
            select(m.PrefetchNodeStatus, DicomNode)
            .join(DicomNode, DicomNode.id == m.PrefetchNodeStatus.node_pk)
            .where(m.PrefetchNodeStatus.request_id == request_id)
            .order_by(DicomNode.id)
        ).all()
        job = s.get(jobs.Job, request.job_id) if request.job_id else None
    nodes: list[dict[str, Any]] = [
        {
            "node": node.ae_title.strip(),
            "site": node.site,
            "state": st.state,
            "reason": st.reason,
            "patient_id": st.patient_id,
            "studies_found": st.studies_found,
            "studies_ready": st.studies_ready,
            "instances_retrieved": st.instances_retrieved,
            "attempts": st.attempts,
            "updated_at": st.updated_at.isoformat(),
        }
        for st, node in rows
    ]
    return {
        "request_id": request.id,
        "master_id": request.master_id,
        "job_id": request.job_id,
        "job": job.as_dict() if job is not None else None,
        "state": overall_state([str(n["state"]) for n in nodes], job.state if job else jobs.QUEUED),
        "reason": "; ".join(f"{n['node']}: {n['reason']}" for n in nodes if n["state"] == m.FAILED),
        "nodes": nodes,
    }


def overall_state(states: Sequence[str], job_state: str) -> str:
    """One patient's state from its nodes' states: retrieving, querying (or queued), failed, found, ready."""
    if m.RETRIEVING in states:
        return m.RETRIEVING
    if m.QUERYING in states or m.QUEUED in states:
        return m.QUERYING
    if not states and job_state in (jobs.QUEUED, jobs.RUNNING):
        return m.QUEUED
    if m.FAILED in states:
        return m.FAILED
    if m.FOUND in states:
        return m.FOUND
    return m.READY
