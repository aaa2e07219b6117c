"""One prefetch run at each remote node: the PatientID at its site, query, retrieve of what is missing, forward,
and the node's status row kept up to date as it goes.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from sqlalchemy import func, select

from archipel.platform import audit, jobs
from archipel.platform.authn import Principal
from archipel.platform.db import Database, utcnow
from archipel.platform.identity.models import LocalIdentity
from archipel.platform.runtime import Runtime
from archipel.radiology import tumorboard_models as m
from archipel.radiology.archive import Archive
from archipel.radiology.models import DicomNode, Instance, Series, Study
from archipel.radiology.remote import (
    RemoteError,
    RemoteStudy,
    RemoteTarget,
    find_studies,
    queryable,
    relevant,
    retrieve_study,
)

log = logging.getLogger("archipel.prefetch")

#: Pause before the second try of a node; doubled at each further try, never above :data:`MAX_BACKOFF`.
FIRST_BACKOFF, MAX_BACKOFF = 0.5, 8.0

T = TypeVar("T")


def remote_targets(db: Database) -> list[RemoteTarget]:
    """Every configured remote node, by registration order."""
    with db.sessions() as s:
        rows = s.execute(
            select(m.RemoteNode, DicomNode)
            .join(DicomNode, DicomNode.id == m.RemoteNode.node_pk)
            .order_by(DicomNode.id)
        ).all()
    return [
        RemoteTarget(
            node_pk=node.id,
            ae_title=node.ae_title.strip(),
            host=node.host,
            port=node.port,
            site=node.site,
            retrieve=remote.retrieve,
            dicomweb_url=remote.dicomweb_url,
            timeout=remote.timeout_seconds,
            attempts=max(1, remote.attempts),
        )
        for remote, node in rows
    ]


def identities_by_site(db: Database, master_id: int) -> dict[str, list[str]]:
    """The master's local PatientIDs, by issuer (site)."""
    with db.sessions() as s:
        rows = s.execute(
            select(LocalIdentity.issuer, LocalIdentity.local_id).where(LocalIdentity.master_id == master_id)
        ).all()
    out: dict[str, list[str]] = {}
    for issuer, local_id in rows:
        out.setdefault(issuer, []).append(local_id)
    return out


def held_instances(db: Database, study_uids: Sequence[str]) -> dict[str, int]:
    """How many instances of each study the archive holds."""
    if not study_uids:
        return {}
    with db.sessions() as s:
        rows = s.execute(
            select(Study.study_uid, func.count(Instance.id))
            .join(Series, Series.study_pk == Study.id)
            .join(Instance, Instance.series_pk == Series.id)
            .where(Study.study_uid.in_(list(study_uids)))
            .group_by(Study.study_uid)
        ).all()
    return {uid: int(n) for uid, n in rows}


def _is_held(study: RemoteStudy, held: dict[str, int]) -> bool:
    have = held.get(study.study_uid, 0)
    return have > 0 and (study.instances is None or have >= study.instances)


def with_retries(
    target: RemoteTarget, what: str, call: Callable[[], T], on_attempt: Callable[[int], None]
) -> T:
    """``call()``, tried up to ``target.attempts`` times with a doubling pause between tries (bounded)."""
    pause = FIRST_BACKOFF
    for attempt in range(1, target.attempts + 1):
        on_attempt(attempt)
        try:
            return call()
        except RemoteError as exc:
            log.warning(
                "event=prefetch_try_failed node=%s what=%s attempt=%d reason=%r",
                target.label,
                what,
                attempt,
                exc.reason,
            )
            if attempt == target.attempts:
                raise RemoteError(f"{exc.reason} (after {attempt} attempts)") from exc
            time.sleep(pause)
            pause = min(pause * 2, MAX_BACKOFF)
    raise AssertionError("unreachable")


def set_status(db: Database, request_id: int, node_pk: int, **values: Any) -> None:
    with db.write() as s:
        row = s.execute(
            select(m.PrefetchNodeStatus).where(
                m.PrefetchNodeStatus.request_id == request_id, m.PrefetchNodeStatus.node_pk == node_pk
            )
        ).scalar_one_or_none()
        if row is None:
            row = m.PrefetchNodeStatus(request_id=request_id, node_pk=node_pk)
            s.add(row)
        for key, value in values.items():
            setattr(row, key, value)
        row.updated_at = utcnow()


class NodeRun:
    """One run of one prefetch request, for one principal, node by node."""

    def __init__(
        self,
        rt: Runtime,
        job: jobs.Job,
        actor: Principal,
        request: m.PrefetchRequest,
        progress: jobs.Progress | None = None,
    ) -> None:
        self.rt, self.job, self.actor, self.request = rt, job, actor, request
        #: The job's progress counts one unit per node queried and one per study retrieved; nodes run in
        #: threads of their own, so it is counted under a lock.
        self.progress = progress
        self._counting = threading.Lock()
        self.archive = Archive(rt.db, rt.blobs, rt.settings.duplicate_policy)
        self.source = f"job:{job.id}"
        self.modalities = tuple(x for x in request.modalities.split("\\") if x)
        self.only = set(json.loads(request.study_uids or "[]"))

    def count(self, *, more: int = 0, done: int = 0, message: str | None = None) -> None:
        """Add ``more`` units of work to the job's progress and count ``done`` of them as done."""
        if self.progress is None:
            return
        with self._counting:
            self.progress.total += more
            if done:
                self.progress.advance(done, message)

    def _audit(
        self,
        event: str,
        action: str,
        target: RemoteTarget,
        patient_id: str,
        outcome: str,
        detail: str,
        obj: str = "",
    ) -> None:
        audit.record(
            self.rt.db,
            self.actor,
            event,
            action,
            outcome=outcome,
            patient=f"{target.site}/{patient_id}",
            master=self.request.master_id,
            obj=obj or f"node:{target.ae_title}",
            source=self.source,
            detail=detail,
        )

    def node(self, target: RemoteTarget, patient_ids: list[str]) -> dict[str, Any]:
        """Query, retrieve and forward at one node; the node's summary. Never raises for a node's failure."""
        rid, db = self.request.id, self.rt.db
        if not patient_ids:
            reason = f"no identity of this patient at site {target.site}"
            set_status(db, rid, target.node_pk, state=m.NONE, reason=reason, studies_found=0, studies_ready=0)
            return {"node": target.ae_title, "state": m.NONE, "reason": reason}
        exact = [p for p in patient_ids if queryable(p)]
        if not exact:
            reason = (
                f"PatientID {patient_ids[0]!r} at site {target.site} cannot be queried exactly (wildcard)"
            )
            set_status(db, rid, target.node_pk, state=m.FAILED, reason=reason, patient_id=patient_ids[0])
            return {"node": target.ae_title, "state": m.FAILED, "reason": reason}
        patient_id = exact[0]
        attempts = {"n": 0}

        def counted(n: int) -> None:
            attempts["n"] += 1
            set_status(db, rid, target.node_pk, attempts=attempts["n"])

        set_status(db, rid, target.node_pk, state=m.QUERYING, reason="", patient_id=patient_id, attempts=0)
        try:
            found = self._query(target, patient_id, counted)
            held = held_instances(db, [s.study_uid for s in found])
            missing = [s for s in found if not _is_held(s, held)]
            uids = json.dumps([s.study_uid for s in found])
            set_status(
                db,
                rid,
                target.node_pk,
                state=m.FOUND,
                studies_found=len(found),
                studies_ready=len(found) - len(missing),
                study_uids=uids,
            )
            retrieved = 0
            if missing:
                set_status(db, rid, target.node_pk, state=m.RETRIEVING)
                self.count(more=len(missing))
            for i, study in enumerate(missing, start=1):
                retrieved += self._retrieve(target, patient_id, study, counted)
                self.count(done=1, message=f"{target.ae_title}: study {i} of {len(missing)} retrieved")
                set_status(
                    db,
                    rid,
                    target.node_pk,
                    studies_ready=len(found) - len(missing) + i,
                    instances_retrieved=retrieved,
                )
            self._forward(target, [s.study_uid for s in found])
        except RemoteError as exc:
            set_status(db, rid, target.node_pk, state=m.FAILED, reason=exc.reason)
            return {"node": target.ae_title, "state": m.FAILED, "reason": exc.reason}
        except Exception as exc:  # a bug or an unexpected answer must not hide the other nodes' results
            log.exception("event=prefetch_node_error node=%s job=%s", target.label, self.job.id)
            reason = f"{type(exc).__name__}: {exc}"
            set_status(db, rid, target.node_pk, state=m.FAILED, reason=reason)
            return {"node": target.ae_title, "state": m.FAILED, "reason": reason}
        state = m.READY if found else m.NONE
        reason = "" if found else "no relevant study at this node"
        set_status(db, rid, target.node_pk, state=state, reason=reason)
        return {
            "node": target.ae_title,
            "state": state,
            "studies": len(found),
            "instances_retrieved": retrieved,
        }

    def _query(
        self, target: RemoteTarget, patient_id: str, counted: Callable[[int], None]
    ) -> list[RemoteStudy]:
        req = self.request
        try:
            answers = with_retries(
                target,
                "query",
                lambda: find_studies(
                    target, self.rt.settings.ae_title, patient_id, req.date_from, req.date_to
                ),
                counted,
            )
        except RemoteError as exc:
            self._audit(audit.QUERY, "prefetch-query", target, patient_id, audit.FAILURE, exc.reason)
            raise
        found = [
            s
            for s in answers
            if relevant(s, self.modalities, req.date_from, req.date_to)
            and (not self.only or s.study_uid in self.only)
        ]
        self._audit(
            audit.QUERY,
            "prefetch-query",
            target,
            patient_id,
            audit.SUCCESS,
            f"answers={len(answers)} relevant={len(found)}",
        )
        return found

    def _retrieve(
        self, target: RemoteTarget, patient_id: str, study: RemoteStudy, counted: Callable[[int], None]
    ) -> int:
        try:
            n = with_retries(
                target,
                "retrieve",
                lambda: retrieve_study(target, self.rt.settings.ae_title, study.study_uid, self.archive),
                counted,
            )
            have = held_instances(self.rt.db, [study.study_uid]).get(study.study_uid, 0)
            if have == 0 or (study.instances is not None and have < study.instances):
                raise RemoteError(
                    f"{target.label} sent {n} instances but {have} of {study.instances or '?'} are held here"
                )
        except RemoteError as exc:
            self._audit(
                audit.IMPORT,
                "prefetch-retrieve",
                target,
                patient_id,
                audit.FAILURE,
                exc.reason,
                study.study_uid,
            )
            raise
        self._audit(
            audit.IMPORT,
            "prefetch-retrieve",
            target,
            patient_id,
            audit.SUCCESS,
            f"method={target.retrieve} instances={n}",
            study.study_uid,
        )
        return n

    def _forward(self, target: RemoteTarget, study_uids: list[str]) -> None:
        if self.request.destination_node_pk is None or not study_uids:
            return
        from archipel.radiology.forwarding import forward_studies

        forward_studies(self.rt, self.actor, self.request.destination_node_pk, study_uids, self.source)
