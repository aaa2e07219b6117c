"""OME-Zarr output: NGFF 0.4 on zarr v2, read back with the ome-zarr reader and compared with the source."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import zarr
from ome_zarr.io import parse_url
from ome_zarr.reader import Multiscales, Reader

from archipel.tiles.planned import PlannedPyramid
from archipel.tiles.region import read_region
from archipel.wsi.sources import open_slide
from archipel.wsi.zarr_writer import tiles_to_write, write_ome_zarr
from tests.slides import ZERO_LENGTH_TILE, SlideSet


@pytest.fixture(scope="module")
def slides(tmp_path_factory: pytest.TempPathFactory) -> SlideSet:
    return SlideSet(tmp_path_factory.mktemp("zarr-slides"))


def test_ome_zarr_opens_with_ome_zarr_and_every_level_matches_the_source(
    slides: SlideSet, tmp_path: Path
) -> None:
    out = tmp_path / "slide.zarr"
    with open_slide(slides.svs_jpeg) as source, PlannedPyramid(source, workers=2) as pyramid:
        done: list[int] = []
        result = write_ome_zarr(pyramid, out, name="case-1", workers=2, progress=done.append)
        assert sum(done) == tiles_to_write(pyramid)
        assert result.levels == 4 and result.chunks_blank == 1  # the zero-length tile stays unwritten

        nodes = list(Reader(parse_url(str(out)))())
        image = nodes[0]
        assert any(isinstance(spec, Multiscales) for spec in image.specs)
        axes = image.metadata["axes"]
        assert [(a["name"], a["type"]) for a in axes] == [("c", "channel"), ("y", "space"), ("x", "space")]
        assert axes[1]["unit"] == "micrometer"
        assert len(image.data) == len(pyramid.levels)
        for level, (data, transforms) in enumerate(
            zip(image.data, image.metadata["coordinateTransformations"], strict=True)
        ):
            lv = pyramid.levels[level]
            expected = read_region(pyramid, level, 0, 0, lv.size.width, lv.size.height).transpose(2, 0, 1)
            assert np.array_equal(np.asarray(data), expected), f"level {level}"
            scale = transforms[0]["scale"]
            assert scale[1] == pytest.approx(0.499 * 700 / lv.size.height)
            assert scale[2] == pytest.approx(0.499 * 1000 / lv.size.width)


def test_chunks_align_to_tiles_and_omero_metadata_renders_rgb(slides: SlideSet, tmp_path: Path) -> None:
    out = tmp_path / "rgb.zarr"
    with open_slide(slides.svs_rgb) as source, PlannedPyramid(source) as pyramid:
        write_ome_zarr(pyramid, out)
    root = zarr.open_group(str(out), mode="r")
    assert root["0"].chunks == (3, 256, 256) and root["0"].shape == (3, 600, 900)
    assert root["0"].metadata.zarr_format == 2
    attrs = json.loads((out / ".zattrs").read_text())
    assert attrs["multiscales"][0]["version"] == "0.4"
    assert [c["color"] for c in attrs["omero"]["channels"]] == ["FF0000", "00FF00", "0000FF"]
    assert attrs["omero"]["rdefs"]["model"] == "color"
    assert json.loads((out / "0" / ".zarray").read_text())["dimension_separator"] == "/"


def test_blank_tiles_are_not_stored_and_read_back_white(slides: SlideSet, tmp_path: Path) -> None:
    out = tmp_path / "blank.zarr"
    col, row = ZERO_LENGTH_TILE
    with open_slide(slides.svs_jpeg) as source:
        write_ome_zarr(source, out)  # the source as is: two levels, no generation
    assert not (out / "0" / "0" / str(row) / str(col)).exists()
    assert (out / "0" / "0" / "0" / "0").exists()
    level0 = zarr.open_array(str(out / "0"), mode="r")
    assert (np.asarray(level0[:, row * 240 : (row + 1) * 240, col * 240 : (col + 1) * 240]) == 255).all()


def test_existing_output_is_refused_and_a_crashed_run_is_cleaned_up(slides: SlideSet, tmp_path: Path) -> None:
    out = tmp_path / "again.zarr"
    stale = tmp_path / "again.zarr.partial"
    (stale / "0").mkdir(parents=True)
    (stale / "0" / "junk").write_bytes(b"left by a crash")
    with open_slide(slides.ome_tiff_zlib) as source:
        write_ome_zarr(source, out)
        assert not stale.exists() and not (out / "0" / "junk").exists()
        with pytest.raises(FileExistsError):
            write_ome_zarr(source, out)
        write_ome_zarr(source, out, overwrite=True)
    # Lossless source, lossless store: the decoded pixels come back exactly.
    with open_slide(slides.ome_tiff_zlib) as source:
        level0 = np.asarray(zarr.open_array(str(out / "0"), mode="r")[:])
        assert np.array_equal(level0, read_region(source, 0, 0, 0, 600, 500).transpose(2, 0, 1))
