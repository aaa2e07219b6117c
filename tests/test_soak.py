"""Soak: the scaled-out stack (tests/stack.py) ingests and converts without a pause while its workers are killed
and started again, for ``ARCHIPEL_SOAK_SECONDS`` (``make soak``: 600 unless set). Never part of the suite.

It reports the ingest and conversion rates, the error count (which must be 0: a send that failed, an instance
acknowledged and not stored, a slide not converted) and every process's resident memory at its start and end.
"""

from __future__ import annotations

import itertools
import json
import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.stack import Stack, StackConfig, s3_object_store
from tests.stack_load import (
    StoreRun,
    check_retrievable,
    settled,
    slide_state,
    upload_slide,
    write_instances,
    write_slides,
)
from tests.support import postgres_available, redis_available, wait_until

if TYPE_CHECKING:
    from tests.s3_support import S3Bucket

pytest_plugins = ["tests.s3_support"]

pytestmark = [
    pytest.mark.soak,
    # Never by accident (a ``-m`` given on the command line replaces addopts' ``not soak``): only when asked.
    pytest.mark.skipif(
        not os.environ.get("ARCHIPEL_SOAK_SECONDS"),
        reason="a soak runs when asked: make soak (ARCHIPEL_SOAK_SECONDS)",
    ),
    pytest.mark.skipif(not postgres_available(), reason="PostgreSQL does not answer on 127.0.0.1:5432"),
    pytest.mark.skipif(not redis_available(), reason="Redis does not answer on 127.0.0.1:6379"),
    # The suite's 300 s cap would end a 10-minute soak: allow its duration plus the stack's start and checks.
    pytest.mark.timeout(float(os.environ.get("ARCHIPEL_SOAK_SECONDS") or 0) + 600),
]

#: Instances sent per association in one round, and workers restarted this often (seconds).
BATCH = 40
RESTART_EVERY = 60.0


def test_ingest_and_conversion_go_on_without_error_while_workers_are_restarted(
    tmp_path: Path, s3_bucket: S3Bucket
) -> None:
    duration = float(os.environ["ARCHIPEL_SOAK_SECONDS"])
    restart_every = min(RESTART_EVERY, duration / 3)
    errors: list[str] = []
    sent: dict[str, list[Path]] = {}
    slide_ids: list[str] = []
    restarts = 0

    def make_round(n: int) -> tuple[list[dict[str, list[Path]]], Path]:
        batches = [write_instances(tmp_path / f"dicom{n}-{i}", BATCH, key=f"soak/{n}/{i}") for i in (0, 1)]
        return batches, write_slides(tmp_path / f"slides{n}", 1, first_seed=n + 1)[0]

    pool = ThreadPoolExecutor(1)
    upcoming = pool.submit(make_round, 0)
    # Visibility timeout 30 s: above the conversion of these small slides, so a running one is not handed out
    # twice, and short enough that a killed worker's slide is taken over within the run.
    with Stack(
        tmp_path / "stack", StackConfig(visibility_timeout=30, object_store=s3_object_store(s3_bucket))
    ) as stack:
        started = time.monotonic()
        last_restart = started
        for n in itertools.count():
            if time.monotonic() - started >= duration:
                break
            # Two associations, one to each listener, while a slide goes in through one API or the other; the next
            # round's data is made meanwhile.
            batches, slide = upcoming.result()
            upcoming = pool.submit(make_round, n + 1)
            runs = [
                StoreRun(
                    [p for ps in batch.values() for p in ps], svc.port, tmp_path / f"soak{n}-{i}.out"
                ).start()
                for i, (batch, svc) in enumerate(zip(batches, stack.listeners, strict=True))
            ]
            slide_ids.append(upload_slide(stack, n % 2, slide, f"SOAK{n}"))
            for run in runs:
                if run.wait() != 0:
                    errors.append(f"round {n}: storescu failed: {run.out.read_text()[-500:]}")
            for batch in batches:
                for study, files in batch.items():
                    sent.setdefault(study, []).extend(files)
            if time.monotonic() - last_restart >= restart_every:
                worker = stack.workers[restarts % len(stack.workers)]
                stack.restart(worker)
                restarts += 1
                last_restart = time.monotonic()
        ingest_seconds = time.monotonic() - started
        pool.shutdown(wait=True, cancel_futures=True)

        states: dict[str, dict[str, object]] = {}

        def converted() -> bool:
            for slide_id in slide_ids:
                if slide_id not in states or not settled(states[slide_id]):
                    states[slide_id] = slide_state(stack, 0, slide_id)
            return all(settled(s) for s in states.values())

        wait_until(converted, 180, "the last conversions")
        convert_seconds = time.monotonic() - started
        errors += [
            f"slide {i} {s['status']}: {s.get('error')}" for i, s in states.items() if s["status"] != "ready"
        ]
        check = check_retrievable(stack, 1, sent)
        errors += [f"instance {sop} missing" for sop in check.missing]
        errors += [f"instance {sop} differs" for sop in check.different]
        memory = {svc.name: {"start_kb": svc.rss_start_kb, "end_kb": svc.rss_kb()} for svc in stack.services}

    report = {
        "seconds": round(ingest_seconds, 1),
        "instances": check.checked,
        "instances_per_s": round(check.checked / ingest_seconds, 1),
        "slides": len(slide_ids),
        "slides_per_min": round(60 * len(slide_ids) / convert_seconds, 1),
        "worker_restarts": restarts,
        "errors": len(errors),
        "memory": memory,
    }
    (tmp_path / "soak-report.json").write_text(json.dumps(report, indent=2))
    print("soak report:", json.dumps(report, indent=2))
    for name, rss in memory.items():
        growth = rss["end_kb"] - rss["start_kb"]
        print(
            f"  {name}: RSS {rss['start_kb'] // 1024} MiB -> {rss['end_kb'] // 1024} MiB ({growth / 1024:+.1f})"
        )
    assert restarts >= 1
    assert not errors, errors[:20]
