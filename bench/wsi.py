"""Slide conversion beside its peers, on the same generated slides in one run.

Two Aperio-style SVS slides are generated with the synthetic generator (streamed, never whole in memory): a
20,000 x 16,000 one and an 80,000 x 60,000 one (``--quick``: the small one only), both with JPEG tiles and levels
1, 1/4, 1/16 as a scanner stores them. Then, for each slide, wall time and peak RSS of:

- DICOM WSI: ``archipel wsi convert --format dicom`` against ``OrthancWSIDicomizer`` (Debian orthanc-wsi,
  ``--threads`` = cores; as is, and with ``--pyramid=1`` which rebuilds the full pyramid) and against
  ``wsidicomizer`` (PyPI; as is, and with ``--add-missing-levels``);
- OME-Zarr: ``archipel wsi convert --format zarr`` against ``vips dzsave`` (libvips-tools), which decodes and
  re-encodes the whole pyramid as a Deep Zoom tile tree.

Each tool runs as a child process; peak RSS is the child's ``ru_maxrss`` from ``wait4``, CPU is its user + system
time (a steadier figure than wall time on a shared machine), and the load average is read before each run. Ratios
are peer / Archipel (time: above 1 means Archipel is faster; memory: above 1 means Archipel uses less). Figures go
in ``docs/performance.md``.

``--memory`` adds the issue's memory case: a 100,000 x 100,000 slide converted by Archipel alone to both formats
(goal: under 1.5 GB peak RSS).

    python bench/wsi.py [--quick] [--memory] [--keep DIR] [--workers N]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from archipel.tiles.bands import default_workers  # noqa: E402
from archipel.wsi.synthetic import write_svs  # noqa: E402

CASES = {"20k x 16k": (20_000, 16_000), "80k x 60k": (80_000, 60_000)}
MEMORY_CASE = ("100k x 100k", (100_000, 100_000))


@dataclass
class Run:
    """One tool on one slide."""

    case: str
    target: str
    tool: str
    seconds: float
    rss_mb: float
    ok: bool
    note: str = ""
    cpu: float = 0.0
    load: float = 0.0


def measure(cmd: list[str], out: Path) -> tuple[float, float, bool, str, float]:
    """Run ``cmd`` with a fresh ``out``; wall seconds, peak RSS (MiB), success, last line of its errors, CPU
    seconds (user + system)."""
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    started = time.perf_counter()
    with tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - started
        proc.returncode = os.waitstatus_to_exitcode(status)
        err.seek(0)
        lines = err.read().decode("utf-8", "replace").strip().splitlines()
    ok = proc.returncode == 0
    return (
        seconds,
        usage.ru_maxrss / 1024,
        ok,
        "" if ok else (lines[-1] if lines else f"exit {proc.returncode}"),
        usage.ru_utime + usage.ru_stime,
    )


def tools(src: Path, out: Path, workers: int) -> list[tuple[str, str, list[str]]]:
    """(target, tool, command) for every tool measured on ``src``."""
    archipel = [sys.executable, "-m", "archipel.cli", "wsi", "convert", str(src), "--workers", str(workers)]
    runs = [
        ("dicom", "archipel", [*archipel, "--out", str(out), "--format", "dicom"]),
        (
            "dicom",
            "OrthancWSIDicomizer",
            ["OrthancWSIDicomizer", f"--threads={workers}", f"--folder={out}", str(src)],
        ),
        (
            "dicom",
            "OrthancWSIDicomizer --pyramid=1",
            ["OrthancWSIDicomizer", f"--threads={workers}", "--pyramid=1", f"--folder={out}", str(src)],
        ),
    ]
    # wsidicomizer pins an older wsidicom than Archipel's, so it lives in a venv of its own (make bench makes it).
    candidates = [ROOT / ".venv-peers" / "bin" / "wsidicomizer", Path(sys.executable).parent / "wsidicomizer"]
    wsidicomizer = next((str(p) for p in candidates if p.exists()), shutil.which("wsidicomizer") or "")
    if wsidicomizer:
        base = [wsidicomizer, "-i", str(src), "-o", str(out), "--workers", str(workers)]
        runs += [
            ("dicom", "wsidicomizer", base),
            ("dicom", "wsidicomizer --add-missing-levels", [*base, "--add-missing-levels"]),
        ]
    runs += [
        ("zarr", "archipel", [*archipel, "--out", str(out), "--format", "zarr"]),
        (
            "zarr",
            "vips dzsave",
            ["vips", "dzsave", str(src), str(out / "slide"), "--tile-size", "256", "--overlap", "0"],
        ),
    ]
    return runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="Only the 20,000 x 16,000 slide.")
    parser.add_argument(
        "--memory",
        action="store_true",
        help="Also convert a 100,000 x 100,000 slide (Archipel only, both formats).",
    )
    parser.add_argument(
        "--keep", type=Path, help="Keep the generated slides in this folder (reused when present)."
    )
    parser.add_argument(
        "--workers", type=int, default=default_workers(), help="Threads for every tool (cores)."
    )
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="archipel-bench-wsi-"))
    slides = args.keep or work
    slides.mkdir(parents=True, exist_ok=True)
    results: list[Run] = []
    try:
        cases = [(case, size) for case, size in CASES.items() if not (args.quick and size[0] > 20_000)]
        if args.memory:
            cases.append(MEMORY_CASE)
        for case, (width, height) in cases:
            src = slides / f"bench-{width}x{height}.svs"
            if not src.exists():
                started = time.perf_counter()
                write_svs(src, width, height, tile=256, quality=80, seed=11)
                print(
                    f"generated {src.name} ({src.stat().st_size >> 20} MiB) in {time.perf_counter() - started:.0f} s"
                )
            runs = tools(src, work / "out", args.workers)
            if (case, (width, height)) == MEMORY_CASE:
                archipel = runs[0][2][: runs[0][2].index("--format")]
                runs = [("both", "archipel", [*archipel, "--format", "both"])]
            for target, tool, cmd in runs:
                load = os.getloadavg()[0]
                seconds, rss, ok, note, cpu = measure(cmd, work / "out")
                results.append(Run(case, target, tool, seconds, rss, ok, note, cpu, load))
                state = "" if ok else f"  FAILED: {note}"
                print(
                    f"{case:11} {target:6} {tool:34} {seconds:8.1f} s {cpu:8.1f} cpu-s {rss:8.0f} MiB"
                    f"  load {load:4.1f}{state}",
                    flush=True,
                )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    report(results, args.workers)


def report(results: list[Run], workers: int) -> None:
    """The results as a Markdown table with ratios against Archipel's run on the same case and target."""
    print(f"\n{workers} threads per tool; ratio = peer / Archipel (above 1: Archipel faster / leaner)\n")
    print("| slide | output | tool | wall s | CPU s | peak RSS MiB | time ratio | memory ratio | load |")
    print("|---|---|---|---:|---:|---:|---:|---:|---:|")
    for run in results:
        ours = next(
            (r for r in results if (r.case, r.target, r.tool) == (run.case, run.target, "archipel")), None
        )
        if ours is None or not run.ok:
            ratio_t = ratio_m = "-"
        else:
            ratio_t = f"{run.seconds / ours.seconds:.2f}"
            ratio_m = f"{run.rss_mb / ours.rss_mb:.2f}"
        wall = f"{run.seconds:.1f}" if run.ok else f"failed ({run.note[:60]})"
        print(
            f"| {run.case} | {run.target} | {run.tool} | {wall} | {run.cpu:.1f} | {run.rss_mb:.0f} | {ratio_t} "
            f"| {ratio_m} | {run.load:.1f} |"
        )


if __name__ == "__main__":
    main()
