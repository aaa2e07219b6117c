"""Slide conversion beside its peers, on the same generated slides in one run, like compared with like.

Two Aperio-style SVS slides are generated with the synthetic generator (streamed, never whole in memory): a
20,000 x 16,000 one and an 80,000 x 60,000 one (``--quick``: the small one only), both with JPEG tiles and levels
1, 1/4, 1/16 as a scanner stores them. Then, for each slide, wall time and peak RSS of:

- DICOM WSI, copying the stored levels: ``archipel wsi convert --format dicom --pyramid stored`` (the stored
  levels pass through, only the levels below 1/16 are generated) against ``OrthancWSIDicomizer`` and
  ``wsidicomizer`` as they are (both copy the stored levels, and add nothing or only small levels);
- DICOM WSI, building every factor-2 level: ``archipel wsi convert --format dicom --pyramid full`` (1/2, 1/8,
  1/32... generated from the level above, the stored ones passed through) against ``OrthancWSIDicomizer
  --pyramid=1`` (Debian orthanc-wsi, ``--threads`` = cores) and ``wsidicomizer --add-missing-levels`` (PyPI);
- OME-Zarr: ``archipel wsi convert --format zarr`` (full pyramid) against ``vips dzsave`` (libvips-tools), which
  decodes and re-encodes the whole pyramid as a Deep Zoom tile tree.

Each peer's ratios are against the Archipel run that does the same work (column "against"). Each tool runs as a
child process; peak RSS is the child's ``ru_maxrss`` from ``wait4`` or, when larger, the peak of the summed RSS of
its process tree (sampled every 100 ms: Archipel's level generation uses worker processes; PSS too, which counts
pages the forked workers share with their parent once), CPU is its user +
system time with its children's (a steadier figure than wall time on a shared machine), and the load average is
read before each run. Ratios are
peer / Archipel (time: above 1 means Archipel is faster; memory: above 1 means Archipel uses less). Figures go in
``docs/performance.md``.

``--memory`` adds the issue's memory case: a 100,000 x 100,000 slide converted by Archipel alone to both formats,
full pyramid (goal: under 1.5 GB peak RSS).

    python bench/wsi.py [--quick] [--memory] [--keep DIR] [--workers N] [--tools NAME,...]
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
    #: The Archipel tool this one is compared with (empty for Archipel's own runs).
    against: str = ""
    pss_mb: float = 0.0


def tree_memory_mb(root: int) -> tuple[float, float]:
    """Resident memory of ``root`` and all its descendants, summed (MiB): RSS, and PSS (pages shared between them,
    e.g. a forked worker's copy-on-write pages, counted once), from ``/proc``."""
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        # Descendants start after their ancestor: reading only later pids keeps sampling cheap beside the tool.
        if not entry.name.isdigit() or int(entry.name) < root:
            continue
        try:
            with open(f"/proc/{entry.name}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue  # ended meanwhile
        children.setdefault(ppid, []).append(int(entry.name))
    rss = pss = 0
    todo = [root]
    while todo:
        pid = todo.pop()
        todo += children.get(pid, [])
        try:
            with open(f"/proc/{pid}/smaps_rollup") as f:
                for line in f:
                    if line.startswith("Rss:"):
                        rss += int(line.split()[1])
                    elif line.startswith("Pss:"):
                        pss += int(line.split()[1])
        except OSError:
            continue
    return rss / 1024, pss / 1024


def measure(cmd: list[str], out: Path) -> tuple[float, float, bool, str, float, float]:
    """Run ``cmd`` with a fresh ``out``; wall seconds, peak RSS (MiB), success, last line of its errors, CPU
    seconds (user + system, its worker processes included), peak PSS (MiB, summed over its processes).

    Peak RSS is the larger of the process's own ``ru_maxrss`` and the peak of its process tree's summed RSS,
    sampled every 100 ms (a tool with worker processes uses the memory of all of them).
    """
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    started = time.perf_counter()
    tree_peak = pss_peak = 0.0
    with tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err)
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            rss, pss = tree_memory_mb(proc.pid)
            tree_peak, pss_peak = max(tree_peak, rss), max(pss_peak, pss)
            time.sleep(0.1)
        seconds = time.perf_counter() - started
        proc.returncode = os.waitstatus_to_exitcode(status)
        err.seek(0)
        lines = err.read().decode("utf-8", "replace").strip().splitlines()
    ok = proc.returncode == 0
    return (
        seconds,
        max(usage.ru_maxrss / 1024, tree_peak),
        ok,
        "" if ok else (lines[-1] if lines else f"exit {proc.returncode}"),
        usage.ru_utime + usage.ru_stime,
        pss_peak,
    )


#: The Archipel runs, by the peers' work they match.
FULL, STORED = "archipel --pyramid full", "archipel --pyramid stored"

#: (target, tool, command, the Archipel tool it is compared with)
Tool = tuple[str, str, list[str], str]


def tools(src: Path, out: Path, workers: int) -> list[Tool]:
    """Every tool measured on ``src``, each with the Archipel run that does the same work."""
    archipel = [sys.executable, "-m", "archipel.cli", "wsi", "convert", str(src), "--workers", str(workers)]
    orthanc = ["OrthancWSIDicomizer", f"--threads={workers}", f"--folder={out}"]
    runs: list[Tool] = [
        ("dicom", STORED, [*archipel, "--out", str(out), "--format", "dicom", "--pyramid", "stored"], ""),
        ("dicom", "OrthancWSIDicomizer", [*orthanc, str(src)], STORED),
        ("dicom", FULL, [*archipel, "--out", str(out), "--format", "dicom", "--pyramid", "full"], ""),
        ("dicom", "OrthancWSIDicomizer --pyramid=1", [*orthanc, "--pyramid=1", str(src)], FULL),
    ]
    # wsidicomizer pins an older wsidicom than Archipel's, so it lives in a venv of its own (make bench makes it).
    candidates = [ROOT / ".venv-peers" / "bin" / "wsidicomizer", Path(sys.executable).parent / "wsidicomizer"]
    wsidicomizer = next((str(p) for p in candidates if p.exists()), shutil.which("wsidicomizer") or "")
    if wsidicomizer:
        base = [wsidicomizer, "-i", str(src), "-o", str(out), "--workers", str(workers)]
        runs += [
            ("dicom", "wsidicomizer", base, STORED),
            ("dicom", "wsidicomizer --add-missing-levels", [*base, "--add-missing-levels"], FULL),
        ]
    runs += [
        ("zarr", FULL, [*archipel, "--out", str(out), "--format", "zarr", "--pyramid", "full"], ""),
        (
            "zarr",
            "vips dzsave",
            ["vips", "dzsave", str(src), str(out / "slide"), "--tile-size", "256", "--overlap", "0"],
            FULL,
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
    parser.add_argument(
        "--tools",
        default="",
        help="Only the tools whose name contains one of these comma-separated words (e.g. archipel,vips).",
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
                runs = [("both", FULL, [*archipel, "--format", "both", "--pyramid", "full"], "")]
            wanted = [w for w in args.tools.split(",") if w]
            runs = [r for r in runs if not wanted or any(w in r[1] for w in wanted)]
            for target, tool, cmd, against in runs:
                load = os.getloadavg()[0]
                seconds, rss, ok, note, cpu, pss = measure(cmd, work / "out")
                results.append(Run(case, target, tool, seconds, rss, ok, note, cpu, load, against, pss))
                state = "" if ok else f"  FAILED: {note}"
                print(
                    f"{case:11} {target:6} {tool:35} {seconds:8.1f} s {cpu:8.1f} cpu-s {rss:8.0f} MiB (PSS {pss:.0f})"
                    f"  load {load:4.1f}{state}",
                    flush=True,
                )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    report(results, args.workers)


def report(results: list[Run], workers: int) -> None:
    """The results as a Markdown table, each peer with its ratios against the Archipel run doing the same work."""
    print(f"\n{workers} threads per tool; ratio = peer / Archipel (above 1: Archipel faster / leaner)\n")
    print(
        "| slide | output | tool | wall s | CPU s | peak RSS MiB | peak PSS MiB | against "
        "| time ratio | CPU ratio | memory ratio | load |"
    )
    print("|---|---|---|---:|---:|---:|---:|---|---:|---:|---:|---:|")
    for run in results:
        ours = next(
            (r for r in results if (r.case, r.target, r.tool) == (run.case, run.target, run.against)), None
        )
        if ours is None or not (run.ok and ours.ok):
            ratio_t = ratio_c = ratio_m = "-"
        else:
            ratio_t = f"{run.seconds / ours.seconds:.2f}"
            ratio_c = f"{run.cpu / ours.cpu:.2f}" if ours.cpu else "-"
            ratio_m = f"{run.rss_mb / ours.rss_mb:.2f}"
        wall = f"{run.seconds:.1f}" if run.ok else f"failed ({run.note[:60]})"
        against = run.against.removeprefix("archipel ") if run.against else ""
        print(
            f"| {run.case} | {run.target} | {run.tool} | {wall} | {run.cpu:.1f} | {run.rss_mb:.0f} | {run.pss_mb:.0f} "
            f"| {against} "
            f"| {ratio_t} | {ratio_c} | {ratio_m} | {run.load:.1f} |"
        )


if __name__ == "__main__":
    main()
