"""Tile service benchmark: Archipel's Deep Zoom tiles under wrk, beside Orthanc's WSI plugin and nginx, in one run.

    .venv/bin/python bench/tiles.py [--width 40000 --height 30000] [--duration 10] [--connections 1,8,32]
                                    [--targets archipel,orthanc,nginx,nginx-signed] [--keep DIR]

One synthetic Aperio-style SVS (JPEG tiles of 256 px, levels 1, 1/4, 1/16) is generated, then:

- **archipel**: ``archipel serve`` (fresh data dir); the slide is uploaded through ``POST /api/slides`` and the
  time from the upload's answer to the first tile (``.dzi`` then a level-0 tile, polled as soon as the upload
  returns) is measured; once converted, ``/tiles/{slide}_files/{level}/{col}_{row}.jpeg`` is loaded with the
  bearer token of a pathologist (every tile passes the access check through the cached grant);
- **archipel-2w**: the same server restarted with ``--http-workers 2`` (``--workers``);
- **orthanc**: Orthanc with its WSI plugin, serving the same slide converted by ``OrthancWSIDicomizer``
  (``/wsi/tiles/{series}/{level}/{x}/{y}``);
- **nginx**: the tiles exported by ``archipel tiles export`` sent as static files (the ceiling);
- **nginx-signed**: the same files behind ``archipel tiles nginx-config`` (``secure_link`` checks the signed
  URL of every tile) at the address ``GET /tiles/{slide}/signed-url`` hands out: the production fast path.

Load comes from ``wrk`` with **one thread** (``-t1``: the machine has 2 cores and wrk shares them with the server)
and a Lua script picking random tiles from a list: ``level0`` (interior full-resolution tiles) and ``mix`` (a
level drawn uniformly among full, 1/4 and 1/16 — the levels every server stores — then a random interior tile).
All servers get the same (level, col, row) lists. Each server is first asked once for every distinct tile of
the lists (the warm state a viewed slide is in), then each (workload, connections) runs ``--duration`` seconds
after a 1 s warm-up; tiles/s, p50 and p99 latency (wrk's distribution) and the one-minute load average are printed, with
the ratios archipel/orthanc and archipel/nginx. Results go to ``OUT/results.json``. See docs/performance.md.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from archipel.wsi.synthetic import write_svs  # noqa: E402
from bench.ingest import wait_for_quiet  # noqa: E402
from bench.tile_peers import Nginx, OrthancWsi  # noqa: E402
from tests.support import ArchipelServer, wait_until  # noqa: E402

SITE = "BENCH-SITE"
TILE = 256
#: Downsamples of the levels the SVS stores (and every server serves from stored tiles).
STORED = (1, 4, 16)
SAMPLES = 20_000

LUA = """
local paths = {}
for line in io.lines(os.getenv("BENCH_PATHS")) do paths[#paths + 1] = line end
math.randomseed(tonumber(os.getenv("BENCH_SEED") or "1"))
request = function()
  return wrk.format("GET", paths[math.random(#paths)])
end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'RESULT {"requests": %d, "duration_us": %d, "p50_us": %d, "p99_us": %d, "max_us": %d, ' ..
    '"errors": %d, "non2xx": %d}\\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99), latency.max,
    e.connect + e.read + e.write + e.timeout, e.status))
end
"""


@dataclass
class LoadRun:
    """One wrk run against one server."""

    target: str
    workload: str
    connections: int
    tiles_per_s: float
    p50_ms: float
    p99_ms: float
    errors: int
    load1: float
    #: Runs of one phase were made side by side (interleaved); ratios compare runs of the same phase.
    phase: int = 1


Address = tuple[int, int, int]  # Deep Zoom level, col, row
PathOf = Callable[[int, int, int], str]


def workloads(width: int, height: int, seed: int = 7) -> dict[str, list[Address]]:
    """The random interior tiles every server is asked for: level 0 only, and a mix of the stored levels."""
    rnd = random.Random(seed)
    max_level = (max(width, height) - 1).bit_length()  # Deep Zoom: ceil(log2(longest side))

    def pick(ds: int) -> Address:
        level = max_level - (ds.bit_length() - 1)
        cols, rows = (width // ds) // TILE, (height // ds) // TILE  # full tiles only: no edge tile
        return level, rnd.randrange(cols), rnd.randrange(rows)

    return {
        "level0": [pick(1) for _ in range(SAMPLES)],
        "mix": [pick(rnd.choice(STORED)) for _ in range(SAMPLES)],
    }


def warm(url: str, paths: list[str], headers: dict[str, str]) -> float:
    """Ask once for every distinct tile of ``paths`` (8 connections), so that each server's caches and the page
    cache hold what the measured runs ask for; returns the seconds it took. (wrk cannot stop after a number of
    requests: a stopped thread still waits for the whole duration.)"""
    distinct = sorted(set(paths))
    started = time.perf_counter()
    limits = httpx.Limits(max_connections=8, max_keepalive_connections=8)
    with httpx.Client(base_url=url, headers=headers, limits=limits, timeout=60) as client:

        def fetch(path: str) -> None:
            client.get(path).raise_for_status()

        with ThreadPoolExecutor(8) as pool:
            list(pool.map(fetch, distinct))
    return time.perf_counter() - started


def run_wrk(
    url: str, paths: list[str], connections: int, duration: int, headers: dict[str, str], work: Path
) -> dict[str, float]:
    """wrk with one thread and ``connections`` connections for ``duration`` s on random ``paths`` of ``url``."""
    work.mkdir(parents=True, exist_ok=True)
    (work / "paths.txt").write_text("\n".join(paths) + "\n")
    (work / "random.lua").write_text(LUA)
    cmd = [
        "wrk",
        "-t1",
        f"-c{connections}",
        f"-d{duration}s",
        "--timeout",
        "5s",
        "-s",
        str(work / "random.lua"),
    ]
    for name, value in headers.items():
        cmd += ["-H", f"{name}: {value}"]
    env = {**os.environ, "BENCH_PATHS": str(work / "paths.txt"), "BENCH_SEED": str(connections)}
    done = subprocess.run([*cmd, url], capture_output=True, text=True, env=env, check=True)
    line = next(x for x in done.stdout.splitlines() if x.startswith("RESULT "))
    return dict(json.loads(line.removeprefix("RESULT ")))


class Bench:
    """The servers, the slide and the measurements of one run."""

    def __init__(self, root: Path, args: argparse.Namespace) -> None:
        self.root, self.args = root, args
        self.runs: list[LoadRun] = []
        self.work = workloads(args.width, args.height)
        self.first_tile: dict[str, float] = {}
        self.servers: dict[str, tuple[str, PathOf, dict[str, str]]] = {}

    def add(self, target: str, base: str, path_of: PathOf, headers: dict[str, str]) -> None:
        """Register a running server: ``base`` is its scheme, host and port (wrk ignores a path there),
        ``path_of(level, col, row)`` a tile's absolute path. One tile of each workload is checked, then every
        distinct tile is asked once (warm-up)."""
        # A tile that is not 200 here would make the whole run meaningless.
        with httpx.Client(headers=headers, timeout=30) as client:
            for addresses in self.work.values():
                r = client.get(base + path_of(*addresses[0]))
                if r.status_code != 200 or not r.content.startswith(b"\xff\xd8"):
                    raise RuntimeError(f"{target}: {base + path_of(*addresses[0])} -> {r.status_code}")
        every = [path_of(*a) for addresses in self.work.values() for a in addresses]
        seconds = warm(base, every, headers)
        print(
            f"{target}: {len(set(every))} distinct tiles asked once (warm-up) in {seconds:.1f} s", flush=True
        )
        self.servers[target] = (base, path_of, headers)

    def measure(self, targets: list[str], phase: int) -> None:
        """Every workload at every connection count, the ``targets`` one after the other at each step, so that
        the machine's other work weighs on all of them alike."""
        for workload, addresses in self.work.items():
            for connections in self.args.connections:
                for target in targets:
                    base, path_of, headers = self.servers[target]
                    paths = [path_of(*a) for a in addresses]
                    if self.args.quiet > 0:
                        wait_for_quiet(self.args.quiet)
                    work = self.root / "wrk" / target / f"{workload}-{connections}"
                    run_wrk(base, paths, connections, 1, headers, work)  # warm-up: connections
                    got = run_wrk(base, paths, connections, self.args.duration, headers, work)
                    run = LoadRun(
                        target,
                        workload,
                        connections,
                        got["requests"] / (got["duration_us"] / 1e6),
                        got["p50_us"] / 1000,
                        got["p99_us"] / 1000,
                        int(got["errors"] + got["non2xx"]),
                        os.getloadavg()[0],
                        phase,
                    )
                    self.runs.append(run)
                    print(
                        f"{target:13} {workload:7} c={connections:<3} {run.tiles_per_s:8.0f} tiles/s  "
                        f"p50 {run.p50_ms:6.2f} ms  p99 {run.p99_ms:6.2f} ms  errors {run.errors}  "
                        f"load1 {run.load1:.2f}",
                        flush=True,
                    )

    def slide(self) -> Path:
        path = self.root / f"slide-{self.args.width}x{self.args.height}.svs"
        if not path.exists():
            started = time.perf_counter()
            write_svs(path, self.args.width, self.args.height, tile=TILE, downsamples=STORED, seed=5)
            print(
                f"slide generated: {path.stat().st_size / 1e6:.0f} MB in {time.perf_counter() - started:.0f} s"
            )
        return path


def upload_and_first_tile(
    srv: ArchipelServer, slide: Path, headers: dict[str, str]
) -> tuple[str, float, float]:
    """Upload ``slide`` (``POST /api/slides``), then ask for its ``.dzi`` and a level-0 tile until they come;
    (slide id, upload seconds, seconds from the upload's answer to the first tile)."""
    meta = {"patient_id": "BENCH0001", "issuer": SITE, "accession": "BENCH1", "stain": "HE"}
    started = time.perf_counter()
    with slide.open("rb") as f:
        r = httpx.post(
            srv.url + "/api/slides",
            headers=headers,
            data={"metadata": json.dumps(meta)},
            files={"file": (slide.name, f, "application/octet-stream")},
            timeout=600,
        )
    answered = time.perf_counter()
    r.raise_for_status()
    slide_id = str(r.json()["slide_id"])
    with httpx.Client(base_url=srv.url, headers=headers, timeout=30) as client:
        while True:
            dzi = client.get(f"/tiles/{slide_id}.dzi")
            if dzi.status_code == 200:
                width = int(dzi.text.split('Width="')[1].split('"')[0])
                height = int(dzi.text.split('Height="')[1].split('"')[0])
                level = (max(width, height) - 1).bit_length()
                tile = client.get(f"/tiles/{slide_id}_files/{level}/1_1.jpeg")
                if tile.status_code == 200:
                    break
            time.sleep(0.005)
    return slide_id, answered - started, time.perf_counter() - answered


def start_archipel(bench: Bench, slide: Path, key: str) -> tuple[ArchipelServer, str]:
    """Start Archipel, upload, time the first tile, wait for the conversion; the server and the slide id."""
    data = bench.root / "archipel"
    shutil.rmtree(data, ignore_errors=True)
    data.mkdir(parents=True)
    srv = ArchipelServer(
        data, env={"ARCHIPEL_TILES_SIGNING_KEY": key, "ARCHIPEL_TILES_SIGNED_SECONDS": "3600"}
    )
    srv.cli("identity", "issuers", "add", SITE)
    srv.add_user("pathologist", "pathologist", SITE)
    srv.start()
    headers = srv.headers("pathologist")
    slide_id, upload_s, first_s = upload_and_first_tile(srv, slide, headers)
    bench.first_tile = {"upload_s": upload_s, "first_tile_s": first_s, "load1": os.getloadavg()[0]}
    print(
        f"upload {upload_s:.2f} s; upload answered -> first tile {first_s * 1000:.0f} ms (goal < 1000 ms); "
        f"load1 {os.getloadavg()[0]:.2f}"
    )
    started = time.monotonic()

    def ready() -> bool:
        r = httpx.get(f"{srv.url}/api/slides/{slide_id}", headers=headers, timeout=30)
        status = r.json()["status"]
        if status == "failed":
            raise RuntimeError(f"conversion failed: {r.json()}")
        return bool(status == "ready")

    wait_until(ready, 1800, "the slide's conversion")
    print(f"converted in {time.monotonic() - started:.0f} s")
    return srv, slide_id


def add_archipel(bench: Bench, srv: ArchipelServer, slide_id: str, workers: int) -> str:
    """Serve with ``workers`` HTTP processes (restarting the server when it is not that many) and register it."""
    if workers != int(srv.env.get("ARCHIPEL_HTTP_WORKERS", "1")):
        srv.stop()
        srv.env["ARCHIPEL_HTTP_WORKERS"] = str(workers)
        srv.start()
    headers = srv.headers("pathologist")
    # Each worker process opens the slide (audited) and caches its own grant: open it as a viewer would, a few
    # times, so that every worker has.
    for _ in range(4 * workers):
        httpx.get(f"{srv.url}/tiles/{slide_id}.dzi", headers=headers).raise_for_status()
    name = "archipel" if workers == 1 else f"archipel-{workers}w"
    prefix = f"/tiles/{slide_id}_files"
    bench.add(name, srv.url, lambda lv, c, r: f"{prefix}/{lv}/{c}_{r}.jpeg", headers)
    return name


def start_nginx(bench: Bench, srv: ArchipelServer, slide_id: str, signed: bool) -> Nginx:
    """nginx on the exported tiles (exported first when they are not): plain static files, or behind the
    signed-URL check; registered with the bench."""
    export = srv.data / "tile-exports"
    if not (export / f"{slide_id}.dzi").exists():
        started = time.perf_counter()
        done = srv.cli("tiles", "export", slide_id)
        print(f"exported in {time.perf_counter() - started:.0f} s: {done.stdout.strip()}")
    if signed:
        headers = srv.headers("pathologist")
        urls = httpx.get(f"{srv.url}/tiles/{slide_id}/signed-url", headers=headers).raise_for_status().json()
        server = Nginx(bench.root / "nginx-signed", srv.cli("tiles", "nginx-config").stdout)
        server.start()
        prefix = urls["tiles"]
        bench.add("nginx-signed", server.url, lambda lv, c, r: f"{prefix}{lv}/{c}_{r}.jpeg", {})
        return server
    server = Nginx(bench.root / "nginx", f"location / {{ root {export}; }}")
    server.start()
    bench.add("nginx", server.url, lambda lv, c, r: f"/{slide_id}_files/{lv}/{c}_{r}.jpeg", {})
    return server


def start_orthanc(bench: Bench, slide: Path, max_level: int) -> OrthancWsi:
    """Orthanc WSI on the slide as OrthancWSIDicomizer converts it (stored levels copied); registered."""
    dicom = bench.root / "orthanc-dicom"
    if not dicom.exists() or not any(dicom.iterdir()):
        dicom.mkdir(parents=True, exist_ok=True)
        cmd = ["OrthancWSIDicomizer", f"--threads={os.cpu_count()}", f"--folder={dicom}", str(slide)]
        subprocess.run(cmd, check=True, capture_output=True)
    server = OrthancWsi(bench.root / "orthanc")
    shutil.rmtree(server.folder, ignore_errors=True)
    server.start()
    pyramid = server.load(dicom)
    # Orthanc numbers levels from the finest (0); Deep Zoom from the coarsest.
    resolutions = [round(float(x)) for x in pyramid["Resolutions"]]  # type: ignore[attr-defined]
    level_of = {max_level - (r.bit_length() - 1): k for k, r in enumerate(resolutions)}
    series = server.series
    bench.add("orthanc", server.url, lambda lv, c, r: f"/wsi/tiles/{series}/{level_of[lv]}/{c}/{r}", {})
    return server


def report(bench: Bench) -> None:
    """The table of every run and, within each phase (runs made side by side), the ratios of each Archipel run
    to Orthanc and nginx at the same load, and nginx-signed to Orthanc."""
    by = {(r.phase, r.target, r.workload, r.connections): r for r in bench.runs}
    print("\nphase workload  conns  target         tiles/s   p50 ms   p99 ms  errors  load1")
    for r in bench.runs:
        print(
            f"{r.phase:5} {r.workload:8} {r.connections:5}  {r.target:13} {r.tiles_per_s:8.0f} {r.p50_ms:8.2f} "
            f"{r.p99_ms:8.2f} {r.errors:7} {r.load1:6.2f}"
        )
    print("\nratios (tiles/s: mine / peer; p99: peer / mine; above 1 means the first is better)")
    pairs = [
        ("archipel", "orthanc"),
        ("archipel", "nginx"),
        ("archipel", "nginx-signed"),
        ("nginx-signed", "orthanc"),
    ]
    for (phase, target, workload, conns), mine in by.items():
        for first, peer in pairs:
            if not target.startswith(first) or (first == "archipel") != target.startswith("archipel"):
                continue
            other = by.get((phase, peer, workload, conns))
            if other is not None and other.tiles_per_s and mine.p99_ms:
                print(
                    f"{workload:8} c={conns:<3} {target + '/' + peer:24} "
                    f"tiles/s {mine.tiles_per_s / other.tiles_per_s:5.2f}   p99 {other.p99_ms / mine.p99_ms:5.2f}"
                )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--width", type=int, default=40_000)
    parser.add_argument("--height", type=int, default=30_000)
    parser.add_argument("--duration", type=int, default=10, help="seconds per (workload, connections)")
    parser.add_argument("--connections", default="1,8,32")
    parser.add_argument("--targets", default="archipel,orthanc,nginx,nginx-signed")
    parser.add_argument(
        "--workers",
        default="1,2",
        help="HTTP worker counts Archipel is measured with (archipel serve --http-workers)",
    )
    parser.add_argument("--keep", type=Path, help="work folder (kept; the slide and exports are reused)")
    parser.add_argument("--quiet", type=float, default=0.0, help="wait for load1 below this before each run")
    args = parser.parse_args()
    args.connections = [int(c) for c in args.connections.split(",")]
    args.workers = [int(w) for w in args.workers.split(",")]
    args.targets = targets = args.targets.split(",")
    for tool in ("wrk", "nginx", "Orthanc", "OrthancWSIDicomizer"):
        if shutil.which(tool) is None:
            sys.exit(f"{tool} is missing: make bench installs the Debian packages (BENCH_APT_PACKAGES)")
    root = args.keep or Path(tempfile.mkdtemp(prefix="archipel-bench-tiles-"))
    root.mkdir(parents=True, exist_ok=True)
    bench = Bench(root, args)
    print(f"work folder {root}; {os.cpu_count()} CPUs; wrk -t1; {args.duration} s per run")
    slide = bench.slide()
    max_level = (max(args.width, args.height) - 1).bit_length()
    srv, slide_id = start_archipel(bench, slide, secrets.token_urlsafe(24))
    peers: list[Nginx | OrthancWsi] = []
    try:
        first = [add_archipel(bench, srv, slide_id, args.workers[0])] if "archipel" in targets else []
        for target in ("nginx", "nginx-signed"):
            if target in targets:
                peers.append(start_nginx(bench, srv, slide_id, signed=target == "nginx-signed"))
                first.append(target)
        if "orthanc" in targets:
            peers.append(start_orthanc(bench, slide, max_level))
            first.append("orthanc")
        bench.measure(first, 1)
        if "archipel" in targets:
            # More HTTP workers: the same data dir served again, measured beside Orthanc (and nginx-signed).
            for phase, workers in enumerate(args.workers[1:], start=2):
                name = add_archipel(bench, srv, slide_id, workers)
                bench.measure([name, *(t for t in ("orthanc", "nginx-signed") if t in first)], phase)
    finally:
        for peer in peers:
            peer.stop()
        srv.stop()
    report(bench)
    results = {"first_tile": bench.first_tile, "runs": [asdict(r) for r in bench.runs], "args": vars(args)}
    (root / "results.json").write_text(json.dumps(results, indent=2, default=str))
    print(f"\nresults: {root / 'results.json'}")


if __name__ == "__main__":
    main()
