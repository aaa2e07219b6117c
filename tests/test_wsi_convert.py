"""``archipel wsi convert`` end to end, and conversions that survive a crash: a killed command run again, and a
platform killed mid-job that finishes the slide after its restart."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import numpy as np
import pytest
import wsidicom
import zarr
from ome_zarr.io import parse_url
from ome_zarr.reader import Multiscales, Reader

from archipel.wsi.sources import open_slide
from archipel.wsi.synthetic import write_svs
from tests.support import ArchipelServer, wait_until
from tests.test_wsi_dicom import frames_of, unpadded


def _convert(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "archipel.cli", "wsi", "convert", *args],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "COLUMNS": "200"},
    )


@pytest.fixture(scope="module")
def small_svs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An Aperio-style SVS (256 px JPEG tiles, levels 1, 1/4, 1/16; size not a multiple of the tile)."""
    return write_svs(tmp_path_factory.mktemp("svs") / "small.svs", 2100, 1500, tile=256, seed=3)


def _check_outputs(src: Path, out: Path) -> None:
    """DICOM WSI opens in wsidicom with every planned level; the OME-Zarr opens in ome-zarr with the same levels,
    and level 0 matches the source's pixels where tiles passed through (decoded from the same bytes)."""
    with wsidicom.WsiDicom.open(out / "dicom") as wsi:
        sizes = [(lv.size.width, lv.size.height) for lv in wsi.levels]
        assert wsi.size.width == 2100 and wsi.size.height == 1500
        assert wsi.read_label() is not None
        region = np.asarray(wsi.read_region((0, 0), 0, (256, 256)))[..., :3]
    [node] = [
        n
        for n in Reader(parse_url(str(out / "slide.zarr")))()
        if n.specs and isinstance(n.specs[0], Multiscales)
    ]
    arrays = node.data
    assert [(int(a.shape[-1]), int(a.shape[-2])) for a in arrays] == sizes
    root = zarr.open_group(str(out / "slide.zarr"), mode="r")
    zarr_tile = np.asarray(root["0"][:, :256, :256]).transpose(1, 2, 0)
    with open_slide(src) as source:
        tile = source.read_tile(0, 0, 0)
    assert np.array_equal(region, tile) and np.array_equal(zarr_tile, tile)


def test_convert_writes_dicom_wsi_and_ome_zarr_with_progress(small_svs: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    done = _convert(str(small_svs), "--out", str(out), "--format", "both", "--workers", "2", "--stain", "HE")
    assert done.returncode == 0, done.stderr
    assert "tiles/s" in done.stderr and "100%" in done.stderr
    assert "passed through" in done.stdout and "0 encoded" in done.stdout
    names = sorted(p.name for p in (out / "dicom").iterdir())
    assert {"label.dcm", "overview.dcm", "thumbnail.dcm", "level-0.dcm"} <= set(names)
    _check_outputs(small_svs, out)
    # Only one format when asked; a bad format or file is a clear error with a non-zero exit.
    only = tmp_path / "only"
    assert _convert(str(small_svs), "--out", str(only), "--format", "zarr").returncode == 0
    assert (only / "slide.zarr").is_dir() and not (only / "dicom").exists()
    bad = _convert(str(small_svs), "--out", str(tmp_path / "x"), "--format", "jpeg")
    assert bad.returncode == 2 and "--format must be dicom, zarr or both" in bad.stderr
    broken = tmp_path / "broken.svs"
    broken.write_bytes(small_svs.read_bytes()[:20000])
    failed = _convert(str(broken), "--out", str(tmp_path / "y"))
    assert failed.returncode == 2 and "truncated" in failed.stderr


def test_stored_pyramid_mode_passes_the_stored_levels_through_and_generates_only_below_them(
    tmp_path: Path,
) -> None:
    # 128 px tiles, so that the smallest stored level (1/16) still spans two tiles and one level is generated.
    src = write_svs(tmp_path / "slide.svs", 2600, 1800, tile=128, seed=5)
    out = tmp_path / "out"
    done = _convert(str(src), "--out", str(out), "--format", "both", "--pyramid", "stored")
    assert done.returncode == 0, done.stderr
    assert "4 levels (1 generated)" in done.stdout
    with open_slide(src) as source:
        stored = [(lv.size.width, lv.size.height) for lv in source.levels]
        assert len(stored) == 3
        for level in source.levels:
            frames = frames_of(out / "dicom" / f"level-{level.index}.dcm")
            assert len(frames) == level.tile_count
            for k, frame in enumerate(frames):
                raw = source.read_raw_tile(level.index, k % level.grid.width, k // level.grid.width)
                assert raw is not None and unpadded(frame, raw.data) == raw.data, (level.index, k)
    smallest = stored[-1]
    expected = [*stored, ((smallest[0] + 1) // 2, (smallest[1] + 1) // 2)]
    with wsidicom.WsiDicom.open(out / "dicom") as wsi:
        assert [(lv.size.width, lv.size.height) for lv in wsi.levels] == expected
        assert wsi.read_region((0, 0), len(expected) - 1, (64, 64)) is not None
    root = zarr.open_group(str(out / "slide.zarr"), mode="r")
    assert [root[str(i)].shape[1:] for i in range(len(expected))] == [(h, w) for w, h in expected]
    bad = _convert(str(src), "--out", str(tmp_path / "x"), "--pyramid", "some")
    assert bad.returncode == 2 and "--pyramid must be full or stored" in bad.stderr


def test_a_conversion_killed_mid_way_completes_when_run_again(tmp_path: Path) -> None:
    src = write_svs(tmp_path / "big.svs", 5000, 3800, tile=256, seed=4)
    out = tmp_path / "out"
    # A first run finished the DICOM; the next one, asked for both, is killed while the OME-Zarr store is being
    # written (it is under way from the start: it takes the tiles that level generation decodes).
    assert _convert(str(src), "--out", str(out), "--format", "dicom").returncode == 0
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "archipel.cli",
            "wsi",
            "convert",
            str(src),
            "--out",
            str(out),
            "--workers",
            "1",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        wait_until(lambda: (out / "slide.zarr.partial" / "0").exists(), 120, "the zarr store to be under way")
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert (out / "dicom").is_dir() and not (out / "slide.zarr").exists()
    again = _convert(str(src), "--out", str(out))
    assert again.returncode == 0, again.stderr
    assert "kept from an earlier run: dicom" in again.stdout
    assert not (out / "slide.zarr.partial").exists()
    with wsidicom.WsiDicom.open(out / "dicom") as wsi:
        assert wsi.size.width == 5000
    root = zarr.open_group(str(out / "slide.zarr"), mode="r")
    assert root["0"].shape == (3, 3800, 5000)


@pytest.mark.e2e
def test_a_platform_killed_during_a_conversion_job_finishes_the_slide_after_restart(tmp_path: Path) -> None:
    src = write_svs(tmp_path / "job.svs", 5000, 3800, tile=256, seed=5)
    srv = ArchipelServer(tmp_path / "data")
    srv.data.mkdir(parents=True)
    srv.cli("identity", "issuers", "add", "SITE-A")
    srv.add_user("pathologist", "pathologist", "SITE-A")
    srv.start()
    try:
        with src.open("rb") as f:
            r = httpx.post(
                srv.url + "/api/slides",
                headers=srv.headers("pathologist"),
                data={
                    "metadata": json.dumps({"patient_id": "CRASH1", "issuer": "SITE-A", "accession": "CR1"})
                },
                files={"file": ("job.svs", f)},
                timeout=60,
            )
        assert r.status_code == 202, r.text
        slide_id, job_id = r.json()["slide_id"], r.json()["job_id"]

        def job() -> dict[str, object]:
            return dict(httpx.get(f"{srv.url}/api/jobs/{job_id}", headers=srv.headers("pathologist")).json())

        wait_until(lambda: job()["state"] == "running" and int(str(job()["done"])) > 0, 120, "the job to run")
        srv.kill()
        srv.start()

        def ready() -> bool:
            body = httpx.get(f"{srv.url}/api/slides/{slide_id}", headers=srv.headers("pathologist")).json()
            assert body["status"] != "failed", body["error"]
            return bool(body["status"] == "ready")

        wait_until(ready, 240, "the slide to be ready after the restart")
        # The job records its own end after the slide is ready (annotations made meanwhile are written first).
        wait_until(lambda: job()["state"] != "running", 60, "the job to record its end")
        assert job()["state"] == "succeeded"
    finally:
        srv.stop()
