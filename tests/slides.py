"""Synthetic slides for the WSI tests, written once per test module on demand.

Sizes are small and deliberately not multiples of the tile. Each property writes its file the first time it is
asked for, so a test module pays only for the slides it uses.
"""

from __future__ import annotations

import functools
import subprocess
from pathlib import Path

import numpy as np
import tifffile

from archipel.wsi import synthetic as syn

#: A level-0 tile of the JPEG SVS that is stored with zero bytes (Aperio quirk).
ZERO_LENGTH_TILE = (1, 1)


class SlideSet:
    """Paths to synthetic slides (and broken files) under ``root``."""

    def __init__(self, root: Path) -> None:
        self.root = root

    @functools.cached_property
    def svs_jpeg(self) -> Path:
        """Aperio SVS, YCbCr JPEG 240 px abbreviated tiles, levels 1 and 1/4, a zero-length tile, label/macro."""
        return syn.write_svs(
            self.root / "jpeg.svs",
            1000,
            700,
            tile=240,
            downsamples=(1, 4),
            zero_length_tiles={ZERO_LENGTH_TILE},
        )

    @functools.cached_property
    def svs_rgb(self) -> Path:
        """Aperio SVS with RGB JPEG 256 px tiles (no APP14 stored, component ids 1, 2, 3)."""
        return syn.write_svs(
            self.root / "rgb.svs", 900, 600, tile=256, downsamples=(1, 4), compression="jpeg-rgb"
        )

    @functools.cached_property
    def svs_j2k_ycbcr(self) -> Path:
        """Aperio SVS with JPEG 2000 tiles of YCbCr components without MCT (compression 33003)."""
        return syn.write_svs(self.root / "j2k-ycbcr.svs", 700, 500, downsamples=(1,), compression="j2k-ycbcr")

    @functools.cached_property
    def svs_j2k_rgb(self) -> Path:
        """Aperio SVS with JPEG 2000 tiles of RGB with the irreversible colour transform (compression 33005)."""
        return syn.write_svs(self.root / "j2k-rgb.svs", 700, 500, downsamples=(1,), compression="j2k-rgb")

    @functools.cached_property
    def pyramidal_tiff(self) -> Path:
        """Generic tiled TIFF with levels 1 and 1/4 only: 1/2 and 1/8 are missing."""
        return syn.write_pyramidal_tiff(self.root / "generic.tiff", 1600, 1200, tile=256, downsamples=(1, 4))

    @functools.cached_property
    def ome_tiff(self) -> Path:
        """OME-TIFF, JPEG tiles, three levels in SubIFDs, PhysicalSizeX/Y 0.25 µm."""
        return syn.write_ome_tiff(self.root / "slide.ome.tiff", 900, 700, levels=3)

    @functools.cached_property
    def ome_tiff_zlib(self) -> Path:
        """OME-TIFF with lossless zlib tiles: decoded pixels are exactly the painted ones."""
        return syn.write_ome_tiff(self.root / "zlib.ome.tiff", 600, 500, levels=2, compression="zlib")

    @functools.cached_property
    def dicom_folder(self) -> Path:
        """The generic TIFF converted to DICOM WSI by OrthancWSIDicomizer (an independent writer; its frames are
        the TIFF's tiles, passed through)."""
        out = self.root / "dicom"
        out.mkdir()
        dataset = self.root / "dataset.json"
        dataset.write_text('{"ImageType": "ORIGINAL\\\\PRIMARY\\\\VOLUME\\\\NONE"}')
        subprocess.run(
            [
                "OrthancWSIDicomizer",
                "--dataset",
                str(dataset),
                "--folder",
                str(out),
                str(self.pyramidal_tiff),
            ],
            check=True,
            capture_output=True,
            timeout=120,
        )
        return out

    @functools.cached_property
    def truncated(self) -> Path:
        """The JPEG SVS cut in the middle of its tile data."""
        data = self.svs_jpeg.read_bytes()
        path = self.root / "truncated.svs"
        path.write_bytes(data[: len(data) // 2])
        return path

    @functools.cached_property
    def text_file(self) -> Path:
        """Not an image at all."""
        path = self.root / "notes.svs"
        path.write_text("this is not a slide\n" * 20)
        return path

    @functools.cached_property
    def stripped_tiff(self) -> Path:
        """A plain stripped RGB TIFF: no tiled level, so no tissue pyramid."""
        path = self.root / "photo.tif"
        tifffile.imwrite(path, np.full((64, 80, 3), 200, np.uint8), photometric="rgb")
        return path

    @functools.cached_property
    def empty_file(self) -> Path:
        """Zero bytes."""
        path = self.root / "empty.svs"
        path.write_bytes(b"")
        return path
