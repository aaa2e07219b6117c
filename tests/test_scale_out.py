"""Scale-out on this machine: 2 API processes, 2 DICOM listeners and 2 workers, each with a data dir of its own,
sharing PostgreSQL, Redis and one object store (tests/stack.py). One listener and one worker are killed with
SIGKILL in the middle of the load; nothing acknowledged is lost and every conversion completes on the survivor."""

from __future__ import annotations

import re
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
    pytest.mark.e2e,
    pytest.mark.skipif(not postgres_available(), reason="PostgreSQL does not answer on 127.0.0.1:5432"),
    pytest.mark.skipif(not redis_available(), reason="Redis does not answer on 127.0.0.1:6379"),
]

INSTANCES = 200
SLIDES = 4


class _Phases:
    """Seconds since the test began at each step, printed at the end (and shown by pytest on failure)."""

    def __init__(self) -> None:
        self.t0 = time.monotonic()
        self.marks: list[str] = []

    def __call__(self, what: str) -> None:
        self.marks.append(f"{time.monotonic() - self.t0:6.1f}s {what}")
        print(self.marks[-1])


def _started(log: str) -> set[str]:
    return set(re.findall(r"event=conversion_started job=\w+ slide=(\w+)", log))


def _ready(log: str) -> set[str]:
    return set(re.findall(r"event=slide_ready slide=(\w+)", log))


def test_killing_a_listener_and_a_worker_mid_load_loses_no_acknowledged_instance_and_no_conversion(
    tmp_path: Path, s3_bucket: S3Bucket
) -> None:
    phase = _Phases()
    pool = ThreadPoolExecutor(1)
    # The test's data is made while the stack comes up.
    made = pool.submit(
        lambda: (write_instances(tmp_path / "dicom", INSTANCES), write_slides(tmp_path / "slides", SLIDES))
    )
    pool.shutdown(wait=False)
    with Stack(
        tmp_path / "stack", StackConfig(visibility_timeout=8, object_store=s3_object_store(s3_bucket))
    ) as stack:
        studies, slides = made.result()
        files = sorted(p for paths in studies.values() for p in paths)
        halves = [files[0::2], files[1::2]]
        phase("stack up, data written")
        doomed_listener = stack.listeners[1]
        # Slides in through both API processes, converted while the instances arrive through both listeners.
        slide_ids = [upload_slide(stack, i % 2, path, f"SLIDE{i}") for i, path in enumerate(slides)]
        runs = [
            StoreRun(half, listener.port, tmp_path / f"storescu{i}.out").start()
            for i, (half, listener) in enumerate(zip(halves, stack.listeners, strict=True))
        ]

        wait_until(lambda: len(runs[1].acknowledged()) >= len(halves[1]) // 5, 60, "a fifth on listener 2")
        doomed_listener.kill()
        phase("listener 2 killed")

        victim: list[int] = []

        def a_worker_is_converting() -> bool:
            for i, worker in enumerate(stack.workers):
                log = worker.log_text()
                if _started(log) - _ready(log):
                    victim.append(i)
                    return True
            return False

        wait_until(a_worker_is_converting, 60, "a worker in the middle of a conversion")
        doomed, survivor = stack.workers[victim[0]], stack.workers[1 - victim[0]]
        doomed.kill()
        phase("worker killed")
        interrupted = _started(doomed.log_text()) - _ready(doomed.log_text())
        assert interrupted

        assert runs[0].wait() == 0, runs[0].out.read_text()[-2000:]
        runs[1].wait()
        assert 0 < len(runs[1].acknowledged()) < len(halves[1]), "listener 2 was not killed mid-send"
        # A modality whose association was cut sends the rest again, to the address that still answers.
        rest = [p for p in halves[1] if p not in set(runs[1].acknowledged())]
        resend = StoreRun(rest, stack.listeners[0].port, tmp_path / "storescu-resend.out").start()
        assert resend.wait() == 0, resend.out.read_text()[-2000:]

        phase("sends done")
        # Every instance is stored and returned byte-identical by the other API: the acknowledged ones, which were
        # never sent again, and the rest, sent again after the cut.
        check = check_retrievable(stack, 1, studies)
        assert check.checked == INSTANCES and not check.missing and not check.different, check
        phase("archive checked")
        # The dead worker's conversion is handed to the survivor once Redis's visibility timeout has passed.
        states: dict[str, dict[str, object]] = {}

        def all_converted() -> bool:
            survivor.check_running()
            for slide_id in slide_ids:
                if slide_id not in states or not settled(states[slide_id]):
                    states[slide_id] = slide_state(stack, 1, slide_id)
            return all(settled(s) for s in states.values())

        wait_until(all_converted, 90, "every conversion to finish on the surviving worker")
        phase("conversions done")
        assert {s["status"] for s in states.values()} == {"ready"}, states
        assert interrupted <= _ready(survivor.log_text())
        # Both workers took conversions before one of them died.
        assert _started(doomed.log_text()) and _started(survivor.log_text()) - interrupted
