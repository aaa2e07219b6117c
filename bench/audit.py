"""What auditing costs a request: p95 of ``audit.record`` alone, and of a guarded HTTP request (QIDO-RS search,
policy + audit + query) with auditing on and off, on SQLite and PostgreSQL. Goal: auditing adds < 10 ms at p95.

    .venv/bin/python -m bench.audit [--n 500]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from archipel.migrations import upgrade
from archipel.platform import audit
from archipel.platform import settings as settings_mod
from archipel.platform.authn import Principal
from archipel.platform.db import forget_databases
from archipel.platform.login import session_policy
from archipel.platform.runtime import Runtime, get_runtime, reset_runtime
from archipel.platform.sessions import issue_token, open_session

PG_ADMIN = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
WHO = Principal(subject="bench-reader", role="radiologist", site="SITE-A")


def p95(samples: list[float]) -> float:
    """The 95th percentile, in milliseconds."""
    return statistics.quantiles(samples, n=20)[18] * 1000


def timed(fn: Callable[[], Any], n: int) -> list[float]:
    """``n`` wall-clock durations of ``fn``, after a few warm-up calls."""
    for _ in range(20):
        fn()
    out = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return out


@contextmanager
def runtime(kind: str, data: Path) -> Iterator[Runtime]:
    """A migrated runtime on a fresh SQLite file or PostgreSQL database."""
    import sqlalchemy

    drop: Callable[[], None] = lambda: None  # noqa: E731
    if kind == "sqlite":
        url = f"sqlite:///{data / 'index.sqlite'}"
    else:
        name = f"archipel_bench_{uuid.uuid4().hex[:8]}"
        admin = sqlalchemy.create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
        with admin.connect() as c:
            c.exec_driver_sql(f'CREATE DATABASE "{name}"')
        url = f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"

        def drop() -> None:
            forget_databases()
            with admin.connect() as c:
                c.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    settings_mod.configure(data_dir=data / kind, database_url=url)
    reset_runtime()
    upgrade(url)
    try:
        yield get_runtime()
    finally:
        reset_runtime()
        drop()


def measure(kind: str, n: int, data: Path) -> dict[str, float]:
    """p95 (ms) of audit.record, and of a QIDO-RS request with and without auditing."""
    from fastapi.testclient import TestClient

    from archipel.app import create_app

    with runtime(kind, data) as rt:
        record = timed(lambda: audit.record(rt.db, WHO, audit.QUERY, "search:study", patient="SITE-A/P1"), n)
        policy, now = session_policy(rt.settings), rt.clock()
        token = issue_token(
            open_session(rt.db, WHO, "bench", policy, now), rt.settings.signing_key(), policy, now
        )
        headers = {"Authorization": f"Bearer {token.token}"}
        with TestClient(create_app()) as http:

            def qido() -> None:
                http.get("/dicom-web/studies?PatientID=P1", headers=headers).raise_for_status()

            with_audit = timed(qido, n)
            real = audit.record
            audit.record = lambda *a, **k: None  # type: ignore[assignment]
            try:
                without = timed(qido, n)
            finally:
                audit.record = real
        return {
            "record": p95(record),
            "with": p95(with_audit),
            "without": p95(without),
            "events": float(n),
        }


def main() -> None:
    """Print the figures for SQLite and PostgreSQL."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=500)
    args = parser.parse_args()
    print(f"{'index':<11} {'record p95':>11} {'QIDO p95 audited':>17} {'not audited':>12} {'added':>8}")
    with tempfile.TemporaryDirectory() as tmp:
        for kind in ("sqlite", "postgresql"):
            try:
                r = measure(kind, args.n, Path(tmp))
            except Exception as exc:  # PostgreSQL may be absent on a laptop
                print(f"{kind:<11} skipped: {exc.__class__.__name__}")
                continue
            added = r["with"] - r["without"]
            print(
                f"{kind:<11} {r['record']:>9.2f}ms {r['with']:>15.2f}ms {r['without']:>10.2f}ms {added:>6.2f}ms"
            )


if __name__ == "__main__":
    main()
