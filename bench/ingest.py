"""Ingest benchmark: C-STORE rate of Archipel next to Orthanc (and a bare pynetdicom SCP), and QIDO-RS latency.

Run from the repository root::

    .venv/bin/python bench/ingest.py [--instances 2000] [--out DIR]

It generates synthetic CT instances once (512x512, 16-bit, several series), then for each target and each
association count starts the target fresh, sends every instance with dcmtk ``storescu`` (one process per
association, each sending its share), and checks the target holds exactly that many instances. Rates are
instances per second of wall-clock time for the whole send. Results are printed and written to
``DIR/results.json``. See docs/performance.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.peers import CALLING_AET, ArchipelTarget, BareScpTarget, OrthancTarget, Target
from bench.qido import run_qido

TARGETS = ("archipel", "orthanc", "orthanc-nagle", "bare")
#: Also accepted: ``archipel-Nproc``, Archipel with N DICOM listener processes on one data dir, each on a port of
#: its own (associations dealt out in turn), and ``archipel-Nlisteners``, ``archipel serve --dicom-listeners N``:
#: N processes on one socket, each association taken by the least busy (decision 0053), as a site would run it.


@dataclass
class IngestRun:
    """One send of every instance to one freshly started target."""

    target: str
    associations: int
    instances: int
    seconds: float
    held: int
    #: One-minute load average right after the run: other work on the machine skews the rates.
    load1: float

    @property
    def rate(self) -> float:
        return self.instances / self.seconds if self.seconds else 0.0


def generate(folder: Path, instances: int, series_size: int, rows: int, cols: int) -> list[Path]:
    """Write ``instances`` synthetic CT Part-10 files under ``folder`` (reused when already there)."""
    from archipel.radiology.samples import ct_series, demo_patients, to_bytes, uid

    folder.mkdir(parents=True, exist_ok=True)
    files = sorted(folder.glob("*.dcm"))
    if len(files) == instances:
        return files
    for stale in files:
        stale.unlink()
    started = time.perf_counter()
    written = 0
    series_count = -(-instances // series_size)
    # Two series per study, one study per patient.
    patients = list(demo_patients("BENCH", -(-series_count // 2)))
    for k in range(series_count):
        size = min(series_size, instances - written)
        for ds in ct_series(
            patients[k // 2],
            size,
            rows=rows,
            cols=cols,
            accession=f"BENCH{k // 2:05d}",
            study_uid=uid(f"bench-ingest/study/{k // 2}"),
            key=f"bench-ingest/series/{k}",
        ):
            (folder / f"{written:06d}.dcm").write_bytes(to_bytes(ds))
            written += 1
    print(f"event=instances_generated count={written} seconds={time.perf_counter() - started:.1f}")
    return sorted(folder.glob("*.dcm"))


def send(target: Target, files: list[Path], associations: int, logs: Path) -> float:
    """Send ``files`` with ``associations`` storescu processes at once; return the wall-clock seconds."""
    env = {**os.environ, "TCP_NODELAY": "1"}
    # Contiguous shares: each association sends whole series, as separate modalities would.
    step = -(-len(files) // associations)
    shares = [files[i : i + step] for i in range(0, len(files), step)]
    started = time.perf_counter()
    procs = []
    for i, share in enumerate(shares):
        log = (logs / f"{target.name}-{associations}-{i}.log").open("wb")
        port = target.ports[i % len(target.ports)]
        cmd = ["storescu", "-aet", CALLING_AET, "-aec", target.aet, "127.0.0.1", str(port)]
        procs.append(
            subprocess.Popen([*cmd, *map(str, share)], env=env, stdout=log, stderr=subprocess.STDOUT)
        )
    codes = [p.wait() for p in procs]
    elapsed = time.perf_counter() - started
    if any(codes):
        raise RuntimeError(f"storescu failed against {target.name} (exit codes {codes}); see {logs}")
    return elapsed


def wait_for_quiet(limit: float, timeout: float = 60.0) -> None:
    """Wait (up to ``timeout`` s) until the one-minute load average is below ``limit``; warn if it never is."""
    deadline = time.monotonic() + timeout
    while os.getloadavg()[0] >= limit:
        if time.monotonic() > deadline:
            print(f"event=machine_busy load1={os.getloadavg()[0]:.2f} note=rates_may_be_low")
            return
        time.sleep(2)


def run_target(target: Target, files: list[Path], associations: int, logs: Path, quiet: float) -> IngestRun:
    """Start ``target`` fresh, send everything, verify the count, stop."""
    if quiet > 0:
        wait_for_quiet(quiet)
    target.start()
    try:
        seconds = send(target, files, associations, logs)
        held = target.count()
    finally:
        target.stop()
    run = IngestRun(target.name, associations, len(files), seconds, held, os.getloadavg()[0])
    print(
        f"event=ingest_run target={run.target} associations={associations} instances={run.instances} "
        f"held={held} seconds={seconds:.2f} rate={run.rate:.1f} load1={run.load1:.2f}"
    )
    if held != len(files):
        raise RuntimeError(f"{target.name} holds {held} instances after sending {len(files)}")
    return run


def report(runs: list[IngestRun]) -> dict[str, float]:
    """Print the rate table and the Archipel/peer ratios; return the ratios."""
    print()
    print(f"{'target':<16} {'assoc':>5} {'instances':>9} {'seconds':>8} {'inst/s':>8}")
    for r in runs:
        print(f"{r.target:<16} {r.associations:>5} {r.instances:>9} {r.seconds:>8.2f} {r.rate:>8.1f}")
    best: dict[tuple[str, int], float] = {}
    for r in runs:
        best[(r.target, r.associations)] = max(best.get((r.target, r.associations), 0.0), r.rate)
    ratios: dict[str, float] = {}
    for (target, assoc), rate in sorted(best.items()):
        if target == "archipel":
            continue
        mine = best.get(("archipel", assoc))
        if mine:
            ratios[f"archipel/{target} assoc={assoc}"] = mine / rate
    for name, ratio in ratios.items():
        print(f"ratio {name}: {ratio:.2f}")
    return ratios


def main() -> None:
    parser = argparse.ArgumentParser(
        description="Archipel ingest and QIDO benchmark (see docs/performance.md)."
    )
    parser.add_argument("--instances", type=int, default=2000, help="CT instances to send (default 2000)")
    parser.add_argument("--series-size", type=int, default=200, help="instances per series (default 200)")
    parser.add_argument("--size", type=int, default=512, help="rows and columns of each image (default 512)")
    parser.add_argument(
        "--parallel", type=int, default=4, help="associations of the parallel run (default 4)"
    )
    parser.add_argument("--repeat", type=int, default=1, help="runs per target and mode; the best counts")
    parser.add_argument(
        "--targets",
        default=",".join(TARGETS),
        help=f"comma-separated, from: {', '.join(TARGETS)} (default: all)",
    )
    parser.add_argument(
        "--quiet",
        type=float,
        default=1.0,
        help="before each run, wait up to 1 min for the 1-min load average to drop below this (0: don't)",
    )
    parser.add_argument("--out", type=Path, help="work and results folder (default: a temporary folder)")
    parser.add_argument(
        "--qido-instances", type=int, default=100_000, help="index size for QIDO (default 100k)"
    )
    parser.add_argument("--qido-queries", type=int, default=200, help="QIDO queries to time (default 200)")
    parser.add_argument("--skip-ingest", action="store_true", help="only the QIDO part")
    parser.add_argument("--skip-qido", action="store_true", help="only the ingest part")
    parser.add_argument(
        "--orthanc", default=shutil.which("Orthanc") or "/usr/sbin/Orthanc", help="Orthanc binary"
    )
    args = parser.parse_args()

    out: Path = args.out or Path(tempfile.mkdtemp(prefix="archipel-bench-"))
    out.mkdir(parents=True, exist_ok=True)
    logs = out / "logs"
    logs.mkdir(exist_ok=True)
    print(
        f"event=bench_start out={out} cpus={os.cpu_count()} python={platform.python_version()} "
        f"machine={platform.machine()}"
    )
    results: dict[str, object] = {"cpus": os.cpu_count(), "instances": args.instances}

    if not args.skip_ingest:
        if shutil.which("storescu") is None:
            sys.exit("storescu (dcmtk) is not installed")
        files = generate(out / "instances", args.instances, args.series_size, args.size, args.size)
        wanted = [t.strip() for t in args.targets.split(",") if t.strip()]
        targets: list[Target] = []
        for name in wanted:
            if name == "archipel":
                targets.append(ArchipelTarget(out / "targets"))
            elif name.startswith("archipel-") and name.endswith("proc") and name[9:-4].isdigit():
                targets.append(ArchipelTarget(out / "targets", listeners=int(name[9:-4])))
            elif name.startswith("archipel-") and name.endswith("listeners") and name[9:-9].isdigit():
                targets.append(ArchipelTarget(out / "targets", listeners=int(name[9:-9]), one_port=True))
            elif name in ("orthanc", "orthanc-nagle"):
                targets.append(OrthancTarget(out / "targets", args.orthanc, nodelay=name == "orthanc"))
            elif name == "bare":
                targets.append(BareScpTarget(out / "targets"))
            else:
                sys.exit(f"unknown target {name!r} (choose from {', '.join(TARGETS)})")
        runs = [
            run_target(target, files, associations, logs, args.quiet)
            # Targets take turns, so that each mode's figures come from the same stretch of time.
            for _ in range(args.repeat)
            for associations in (1, args.parallel)
            for target in targets
        ]
        results["runs"] = [{**asdict(r), "rate": round(r.rate, 1)} for r in runs]
        results["ratios"] = {k: round(v, 2) for k, v in report(runs).items()}

    if not args.skip_qido:
        qido = run_qido(out, args.qido_instances, args.qido_queries)
        results["qido"] = qido.as_dict()
        print()
        if qido.skipped:
            print(f"QIDO-RS skipped: {qido.skipped}")
        else:
            print(
                f"QIDO-RS at {qido.instances} instances, {qido.queries} queries: "
                f"p50 {qido.p50_ms:.1f} ms, p95 {qido.p95_ms:.1f} ms, max {qido.max_ms:.1f} ms"
            )
            for kind, (p50, p95) in qido.per_kind.items():
                matches = qido.matches.get(kind, 0.0)
                print(f"  {kind:<24} p50 {p50:6.1f} ms  p95 {p95:6.1f} ms  matches {matches:6.1f}")

    (out / "results.json").write_text(json.dumps(results, indent=2))
    print(f"event=bench_done results={out / 'results.json'}")


if __name__ == "__main__":
    main()
