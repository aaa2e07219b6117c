"""Background jobs: the Celery app, and the job table that shows state and progress.

Tasks take a job id, never an object, and are idempotent: a job that is delivered twice (``acks_late`` after a
worker died) finds its row and carries on. The embedded default broker is kombu's filesystem transport inside
the data dir, so ``archipel serve`` needs no broker installed; Redis or RabbitMQ are used by URL.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from celery import Celery
from sqlalchemy import Float, Integer, String, Text, select
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Mapped, mapped_column

from archipel.platform import access
from archipel.platform.authn import Principal, find_user
from archipel.platform.db import Base, Database, UTCDateTime, utcnow
from archipel.platform.settings import Settings, get_settings

QUEUED, RUNNING, SUCCEEDED, FAILED = "queued", "running", "succeeded", "failed"
QUEUES = ("ingest", "wsi", "prefetch", "notify")
#: Errors that say "not now" rather than "never": a store, a peer or the database that does not answer (a lost
#: connection, a failover, a full disk being cleaned). Tasks retry on them with backoff; any other error (a bad
#: slide, a refused object) ends the job at once with its reason.
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (OSError, OperationalError)
#: Retries of a task after transient errors, and the longest wait between two (seconds).
TRANSIENT_RETRIES = 6
TRANSIENT_BACKOFF_MAX = 600
#: The Celery options of every job task: acknowledged once done (a worker killed mid-task leaves it to another),
#: and retried with exponential backoff on :data:`TRANSIENT_ERRORS`. ``@shared_task(name=..., **RETRY_TRANSIENT)``.
RETRY_TRANSIENT: dict[str, Any] = {
    "acks_late": True,
    "autoretry_for": TRANSIENT_ERRORS,
    "retry_backoff": True,
    "retry_backoff_max": TRANSIENT_BACKOFF_MAX,
    "max_retries": TRANSIENT_RETRIES,
}


class Job(Base):
    """One background job and its progress."""

    __tablename__ = "jobs"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    kind: Mapped[str] = mapped_column(String(64), index=True)
    state: Mapped[str] = mapped_column(String(16), default=QUEUED, index=True)
    done: Mapped[int] = mapped_column(Integer, default=0)
    total: Mapped[int] = mapped_column(Integer, default=0)
    rate: Mapped[float] = mapped_column(Float, default=0.0)
    message: Mapped[str] = mapped_column(Text, default="")
    error: Mapped[str] = mapped_column(Text, default="")
    params: Mapped[str] = mapped_column(Text, default="{}")
    result: Mapped[str] = mapped_column(Text, default="{}")
    created_by: Mapped[str] = mapped_column(String(128), default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, index=True)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)

    @property
    def percent(self) -> float:
        """Progress in percent (100 once finished)."""
        if self.state in (SUCCEEDED, FAILED):
            return 100.0
        return round(100.0 * self.done / self.total, 1) if self.total else 0.0

    def as_dict(self) -> dict[str, Any]:
        """The job as the API shows it."""
        return {
            "id": self.id,
            "kind": self.kind,
            "state": self.state,
            "progress": self.percent,
            "done": self.done,
            "total": self.total,
            "rate": round(self.rate, 2),
            "message": self.message,
            "error": self.error,
            "result": json.loads(self.result or "{}"),
            "created_by": self.created_by,
            "created_at": self.created_at.isoformat() if self.created_at else None,
            "started_at": self.started_at.isoformat() if self.started_at else None,
            "finished_at": self.finished_at.isoformat() if self.finished_at else None,
        }


def create_job(db: Database, kind: str, params: dict[str, Any], created_by: str | Principal) -> str:
    """Insert a queued job and return its id (the caller then sends the task).

    Given a :class:`Principal`, the job remembers its role, site and kind, so that the task can ask the access
    policy again, as that principal, when it runs (rights may have changed while it waited).
    """
    if isinstance(created_by, Principal):
        params = {**params, "role": created_by.role, "site": created_by.site, "actor_kind": created_by.kind}
        created_by = created_by.subject
    job_id = uuid.uuid4().hex
    with db.write() as s:
        s.add(Job(id=job_id, kind=kind, params=json.dumps(params), created_by=created_by))
    return job_id


def acting_principal(db: Database, job: Job) -> Principal:
    """The principal a job acts for: its creator as they are now.

    A local account's current role and site count (a disabled account has no role left); an external identity
    (OIDC) or a service keeps the role and site recorded when the job was created.
    """
    params = json.loads(job.params or "{}")
    kind = params.get("actor_kind", "user")
    role, site = params.get("role", ""), params.get("site", "")
    if kind == "user":
        with db.sessions() as s:
            user = find_user(s, job.created_by)
            if user is not None:
                role, site = (user.role if user.active else ""), user.site
    return Principal(subject=job.created_by, role=role, site=site or "", kind=kind)


def authorize_run(
    db: Database, job: Job, action: str, resource: access.Resource, event_type: str
) -> Principal:
    """The principal the job acts for, once the access policy has allowed ``action`` on ``resource`` again.

    Asked when the job runs, not only when it was queued: the creator's rights may have changed while it
    waited. The decision is audited with the job as its source; a refusal raises :class:`access.AccessDenied`.
    """
    actor = acting_principal(db, job)
    access.check(db, actor, action, resource, event_type=event_type, source=f"job:{job.id}")
    return actor


def get_job(db: Database, job_id: str, owner: str | None = None) -> Job | None:
    """The job row, or ``None``; with ``owner``, only a job that ``owner`` created."""
    with db.sessions() as s:
        job = s.get(Job, job_id)
    if job is None or (owner is not None and job.created_by != owner):
        return None
    return job


def list_jobs(db: Database, limit: int = 50, owner: str | None = None) -> list[Job]:
    """The most recent jobs, newest first; with ``owner``, only those ``owner`` created."""
    stmt = select(Job).order_by(Job.created_at.desc()).limit(limit)
    if owner is not None:
        stmt = stmt.where(Job.created_by == owner)
    with db.sessions() as s:
        return list(s.execute(stmt).scalars())


@dataclass
class Progress:
    """Reports a running job's progress to its row, at most a few times a second."""

    db: Database
    job_id: str
    total: int = 0
    done: int = 0
    _started: float = 0.0
    _last: float = 0.0

    def start(self, total: int, message: str = "") -> None:
        """Mark the job running with ``total`` units of work."""
        self.total, self.done = total, 0
        self._started = self._last = time.monotonic()
        with self.db.write() as s:
            job = s.get(Job, self.job_id)
            if job is not None:
                job.state, job.total, job.done, job.message = RUNNING, total, 0, message
                job.started_at, job.error = utcnow(), ""

    def advance(self, n: int = 1, message: str | None = None) -> None:
        """Count ``n`` more units done; the row is updated at most every 0.25 s."""
        self.done += n
        now = time.monotonic()
        if now - self._last < 0.25 and self.done < self.total:
            return
        self._last = now
        self._write(message)

    def _write(self, message: str | None = None) -> None:
        elapsed = max(time.monotonic() - self._started, 1e-6)
        with self.db.write() as s:
            job = s.get(Job, self.job_id)
            if job is not None:
                job.done, job.total, job.rate = self.done, self.total, self.done / elapsed
                if message is not None:
                    job.message = message

    def finish(self, result: dict[str, Any], message: str = "") -> None:
        """Mark the job succeeded with its result."""
        elapsed = max(time.monotonic() - self._started, 1e-6)
        with self.db.write() as s:
            job = s.get(Job, self.job_id)
            if job is not None:
                job.state, job.done, job.result = SUCCEEDED, self.done, json.dumps(result)
                job.rate, job.message, job.finished_at = self.done / elapsed, message, utcnow()

    def fail(self, error: str) -> None:
        """Mark the job failed with a reason."""
        with self.db.write() as s:
            job = s.get(Job, self.job_id)
            if job is not None:
                job.state, job.error, job.finished_at = FAILED, error, utcnow()


def make_celery(settings: Settings | None = None) -> Celery:
    """A Celery app configured from the settings (embedded filesystem broker by default)."""
    settings = settings or get_settings()
    app = Celery("archipel", broker=settings.effective_broker_url)
    conf: dict[str, Any] = {
        "task_serializer": "json",
        "accept_content": ["json"],
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        "task_default_queue": "ingest",
        "task_ignore_result": True,
        "broker_connection_retry_on_startup": True,
        "worker_hijack_root_logger": False,
    }
    if settings.effective_broker_url.startswith(("redis://", "rediss://")):
        # kombu hands an unacknowledged task (its worker died) to another worker after the visibility timeout,
        # found by a sweep that by default scans Redis only every 10th tick of 10 s: scan on every tick, and
        # tick well within the timeout, so that the hand-over comes soon after it (decision 0043).
        timeout = settings.broker_visibility_timeout
        conf["broker_transport_options"] = {
            "visibility_timeout": timeout,
            "unacked_restore_interval": min(10, max(1, timeout // 4)),
            "unacked_restore_throttle": 1,
        }
    if settings.embedded_broker:
        folder = settings.broker_dir.resolve()
        for sub in ("queue", "processed", "control"):
            (folder / sub).mkdir(parents=True, exist_ok=True)
        conf["broker_transport_options"] = {
            "data_folder_in": str(folder / "queue"),
            "data_folder_out": str(folder / "queue"),
            "processed_folder": str(folder / "processed"),
            # kombu keeps its exchange tables in ./control unless told: keep them in the data directory.
            "control_folder": str(folder / "control"),
            "store_processed": False,
        }
    app.conf.update(conf)
    return app


_celery: Celery | None = None


def celery_app() -> Celery:
    """The process-wide Celery app."""
    global _celery
    if _celery is None:
        _celery = make_celery()
    return _celery


def reset_celery() -> None:
    """Forget the Celery app (after the settings change)."""
    global _celery
    _celery = None
