"""Scale-out benchmark: ingest rate through 1 and 2 DICOM listeners, conversion rate with 1 and 2 workers.

Run from the repository root (PostgreSQL and Redis must answer on loopback)::

    .venv/bin/python bench/scale.py [--instances 600] [--slides 6] [--out DIR]

It brings up the scaled-out stack of ``tests/stack.py`` (1 API process, 2 ``archipel dicom`` listeners, workers
with one conversion at a time each, all with their own data dirs, on PostgreSQL, Redis and one object store),
then:

- sends ``--instances`` small CT instances with dcmtk ``storescu`` over 2 associations, first both to one
  listener, then one to each listener, and times each send;
- uploads ``--slides`` synthetic slides with 1 worker running and times until every one is converted, then
  starts a second worker and does the same with as many new slides.

It prints rates and the 2-vs-1 ratios, and writes ``DIR/results.json``. Every process shares this machine's cores:
on 2 cores, a second listener or worker can only take the CPU the first leaves idle (and the API, PostgreSQL and
the sender take their share), so the ratios here are a floor, not what separate machines give. See
docs/performance.md and docs/scaling.md.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.stack import Stack, StackConfig
from tests.stack_load import StoreRun, settled, slide_state, upload_slide, write_instances, write_slides
from tests.support import postgres_available, redis_available


def _send(stack: Stack, files: list[Path], ports: list[int], out: Path) -> float:
    """Send ``files`` over two associations to ``ports`` (one each); seconds of wall time, all acknowledged."""
    halves = [files[0::2], files[1::2]]
    started = time.perf_counter()
    runs = [
        StoreRun(h, port, out / f"send-{i}-{port}.out").start()
        for i, (h, port) in enumerate(zip(halves, ports, strict=True))
    ]
    for run in runs:
        if run.wait(timeout=600) != 0:
            raise RuntimeError(f"storescu failed: {run.out.read_text()[-2000:]}")
    seconds = time.perf_counter() - started
    acked = sum(len(r.acknowledged()) for r in runs)
    if acked != len(files):
        raise RuntimeError(f"{acked} of {len(files)} instances acknowledged")
    return seconds


def _convert(stack: Stack, slides: list[Path], tag: str) -> float:
    """Upload ``slides`` and wait until all are converted; seconds from the first upload to the last ready."""
    started = time.perf_counter()
    ids = [upload_slide(stack, 0, path, f"{tag}{i}") for i, path in enumerate(slides)]
    pending = set(ids)
    while pending:
        for slide_id in list(pending):
            state = slide_state(stack, 0, slide_id)
            if settled(state):
                if state["status"] != "ready":
                    raise RuntimeError(f"slide {slide_id} failed: {state.get('error')}")
                pending.discard(slide_id)
        if time.perf_counter() - started > 1200:
            raise RuntimeError(f"{len(pending)} slides not converted after 20 minutes")
        time.sleep(0.2)
    return time.perf_counter() - started


def run(instances: int, slides: int, width: int, height: int, out: Path) -> dict[str, Any]:
    data = out / "data"
    batch_one = [
        p for paths in write_instances(data / "one", instances, key="bench-one").values() for p in paths
    ]
    batch_two = [
        p for paths in write_instances(data / "two", instances, key="bench-two").values() for p in paths
    ]
    first = write_slides(data / "slides-1", slides, width, height)
    second = write_slides(data / "slides-2", slides, width, height, first_seed=slides + 1)
    config = StackConfig(apis=1, listeners=2, workers=1, visibility_timeout=3600)
    with Stack(out / "stack", config) as stack:
        ports = [svc.port for svc in stack.listeners]
        one = _send(stack, batch_one, [ports[0], ports[0]], out)
        two = _send(stack, batch_two, ports, out)
        conv_one = _convert(stack, first, "BENCHA")
        stack.add_worker()
        conv_two = _convert(stack, second, "BENCHB")
    results = {
        "instances": instances,
        "slides": slides,
        "slide_size": f"{width}x{height}",
        "cpus": os.cpu_count(),
        "load1_after": os.getloadavg()[0],
        "ingest_1_listener_per_s": instances / one,
        "ingest_2_listeners_per_s": instances / two,
        "ingest_ratio": one / two,
        "convert_1_worker_per_min": 60 * slides / conv_one,
        "convert_2_workers_per_min": 60 * slides / conv_two,
        "convert_ratio": conv_one / conv_two,
    }
    return results


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--instances", type=int, default=600)
    parser.add_argument("--slides", type=int, default=6)
    parser.add_argument("--slide-width", type=int, default=4000)
    parser.add_argument("--slide-height", type=int, default=3000)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    if not (postgres_available() and redis_available()):
        sys.exit("bench/scale.py needs PostgreSQL (127.0.0.1:5432) and Redis (127.0.0.1:6379)")
    out = args.out or Path(tempfile.mkdtemp(prefix="archipel-bench-scale-"))
    out.mkdir(parents=True, exist_ok=True)
    r = run(args.instances, args.slides, args.slide_width, args.slide_height, out)
    (out / "results.json").write_text(json.dumps(r, indent=2))
    print(f"machine: {r['cpus']} cores, load average {r['load1_after']:.1f} at the end")
    print(
        f"ingest   : {r['ingest_1_listener_per_s']:7.1f} instances/s through 1 listener, "
        f"{r['ingest_2_listeners_per_s']:7.1f} through 2  (x{r['ingest_ratio']:.2f})"
    )
    print(
        f"convert  : {r['convert_1_worker_per_min']:7.1f} slides/min with 1 worker, "
        f"{r['convert_2_workers_per_min']:7.1f} with 2  (x{r['convert_ratio']:.2f})"
    )
    print(
        f"limit    : every process shares these {r['cpus']} cores; a second listener or worker only gets what the "
        "first leaves idle, so the ratios are a floor for separate machines."
    )
    print(f"results  : {out / 'results.json'}")


if __name__ == "__main__":
    main()
