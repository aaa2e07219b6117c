"""Readiness: whether this process can serve, i.e. whether the index, the blob store and the broker answer.

A load balancer or Kubernetes sends traffic only to a ready process; ``/healthz`` (liveness) says only that the
process runs and reaches its index. Each part is probed in a thread of its own with a deadline, so a peer that
hangs (a firewall dropping packets) makes the probe answer "not ready" in time instead of hanging with it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout

from sqlalchemy import text

from archipel.platform import jobs
from archipel.platform.runtime import Runtime

log = logging.getLogger("archipel.readiness")

#: Seconds each part has to answer.
DEADLINE = 3.0
#: A key no blob has (blob keys are hex digests): asking for it exercises the store's read path (for S3, a
#: HEAD request that checks the endpoint, the credentials and the bucket) without reading any data.
PROBE_KEY = "readiness-probe"

_pool = ThreadPoolExecutor(max_workers=6, thread_name_prefix="readiness")


def _database(rt: Runtime) -> None:
    with rt.db.sessions() as s:
        s.execute(text("SELECT 1"))


def _blob_store(rt: Runtime) -> None:
    rt.blobs.exists(PROBE_KEY)


def _broker(rt: Runtime) -> None:
    with jobs.celery_app().connection_for_write() as conn:
        conn.ensure_connection(max_retries=1, interval_start=0, interval_step=0, timeout=DEADLINE)


PARTS: dict[str, Callable[[Runtime], None]] = {
    "database": _database,
    "blob_store": _blob_store,
    "broker": _broker,
}


def check(rt: Runtime, deadline: float = DEADLINE) -> dict[str, str]:
    """Probe every part at once; return the parts that failed, each with a short reason (empty: ready).

    The reason names the kind of failure (``OperationalError: connection refused``, ``timed out after 3 s``),
    never a URL, which may carry a password.
    """
    futures = {name: _pool.submit(probe, rt) for name, probe in PARTS.items()}
    failed: dict[str, str] = {}
    for name, future in futures.items():
        try:
            future.result(timeout=deadline)
        except FutureTimeout:
            failed[name] = f"timed out after {deadline:g} s"
        except Exception as exc:
            failed[name] = f"{type(exc).__name__}: {_first_line(str(exc))}"
    if failed:
        log.warning("event=not_ready %s", " ".join(f"{k}={v!r}" for k, v in failed.items()))
    return failed


def _first_line(message: str) -> str:
    return message.strip().splitlines()[0][:200] if message.strip() else "no detail"
