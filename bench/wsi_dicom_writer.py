"""DICOM WSI writer throughput: frames/s when tiles pass through, next to wsidicom's writer on the same frames.

Builds an in-memory pyramid of JPEG tiles (so the source costs nothing and the writer is what is timed), writes
it with Archipel's writer, then has wsidicom open that output and save it again (wsidicom also passes the frames
through, so both sides do the same work: header, frames, offset table). Prints frames/s, MB/s and the ratio.

    .venv/bin/python bench/wsi_dicom_writer.py [--width 8192 --height 6144 --tile 256]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from wsidicom import WsiDicom

from archipel.tiles.pyramid import Size
from archipel.wsi.dicom import WriteOptions, write_dicom_wsi
from tests.test_wsi_dicom import slide_meta
from tests.wsi_dicom_pyramids import ArrayPyramid, slide_image


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--width", type=int, default=8192)
    parser.add_argument("--height", type=int, default=6144)
    parser.add_argument("--tile", type=int, default=256)
    parser.add_argument("--repeat", type=int, default=3, help="best of N runs")
    args = parser.parse_args()

    image = slide_image(args.width, args.height)
    started = time.perf_counter()
    pyramid = ArrayPyramid(image, tile=Size(args.tile, args.tile), downsamples=(1, 4, 16))
    print(
        f"pyramid: {args.width}x{args.height}, tile {args.tile}, built in {time.perf_counter() - started:.1f}s"
    )
    frames = sum(level.tile_count for level in pyramid.levels)
    with tempfile.TemporaryDirectory(prefix="bench-wsi-dicom-") as tmp:
        root = Path(tmp)
        ours, theirs = [], []
        for _ in range(args.repeat):
            out = root / "archipel"
            shutil.rmtree(out, ignore_errors=True)
            t0 = time.perf_counter()
            report = write_dicom_wsi(pyramid, slide_meta(), out, options=WriteOptions())
            ours.append(time.perf_counter() - t0)
            assert report.frames == frames and all(not s.encoded for s in report.levels.values())
            peer = root / "wsidicom"
            shutil.rmtree(peer, ignore_errors=True)
            peer.mkdir()
            with WsiDicom.open(out) as slide:
                t0 = time.perf_counter()
                slide.save(peer, workers=1)
                theirs.append(time.perf_counter() - t0)
        size = sum(p.stat().st_size for p in (root / "archipel").glob("*.dcm")) / 1e6
    a, w = min(ours), min(theirs)
    print(f"frames: {frames}, output {size:.1f} MB")
    print(f"archipel  write_dicom_wsi   {a:7.3f}s  {frames / a:9.0f} frames/s  {size / a:7.0f} MB/s")
    print(f"wsidicom  WsiDicom.save     {w:7.3f}s  {frames / w:9.0f} frames/s  {size / w:7.0f} MB/s")
    print(f"ratio (wsidicom time / archipel time): {w / a:.1f}x")


if __name__ == "__main__":
    main()
