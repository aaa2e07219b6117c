"""Slide sources: probing, raw tiles that pass through, decoded tiles against OpenSlide, missing levels, bad input.

Decoded JPEG tiles are compared with OpenSlide pixel for pixel: both decode with libjpeg-turbo (OpenSlide 4's
bundled copy and imagecodecs'), so the pixels are identical. JPEG 2000 tiles with YCbCr components (Aperio 33003)
are converted to RGB by each side with its own arithmetic: they may differ by 1 level per sample.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import openslide
import pytest
import tifffile

from archipel.tiles import jpeg, jpeg2000
from archipel.tiles.downsample import halve
from archipel.tiles.planned import PlannedPyramid
from archipel.tiles.pyramid import Codec, Pyramid
from archipel.tiles.region import read_region
from archipel.wsi.probe import probe
from archipel.wsi.sources import AssociatedKind, SlideError, SlideSource, open_slide
from archipel.wsi.sources.openslide_source import OpenSlideSource, over_white
from archipel.wsi.synthetic_content import TilePainter, TissueField
from tests.slides import ZERO_LENGTH_TILE, SlideSet
from tests.support import archipel_cmd


@pytest.fixture(scope="module")
def slides(tmp_path_factory: pytest.TempPathFactory) -> SlideSet:
    return SlideSet(tmp_path_factory.mktemp("slides"))


def openslide_tile(path: Path, source: SlideSource, level: int, col: int, row: int) -> np.ndarray:
    """OpenSlide's reading of the same tile, composited over white."""
    lv = source.levels[level]
    with openslide.OpenSlide(str(path)) as slide:
        x, y = round(col * lv.tile.width * lv.downsample), round(row * lv.tile.height * lv.downsample)
        region = slide.read_region((x, y), level, (lv.tile.width, lv.tile.height))
    return over_white(np.asarray(region))


def stored_tile(path: Path, page: int, index: int) -> tuple[bytes, bytes | None]:
    """The bytes of a tile as stored in the TIFF, and the page's JPEGTables."""
    with tifffile.TiffFile(path) as tif:
        p = tif.pages[page]
        offset, count = int(p.dataoffsets[index]), int(p.databytecounts[index])
        tables = bytes(p.jpegtables) if p.jpegtables else None
    with path.open("rb") as f:
        f.seek(offset)
        return f.read(count), tables


# -- probe ---------------------------------------------------------------------------------------------------


def test_probe_of_an_svs_reports_vendor_levels_optics_associated_images_and_plan(slides: SlideSet) -> None:
    report = probe(slides.svs_jpeg)
    assert (report.vendor, report.format) == ("aperio", "Aperio SVS")
    assert report.mpp == pytest.approx((0.499, 0.499))
    assert report.objective_power == 20
    assert [(lv.width, lv.height, lv.tile_width) for lv in report.levels] == [
        (1000, 700, 240),
        (250, 175, 240),
    ]
    assert all(lv.compression == "jpeg" and lv.photometric == "YBR_FULL_422" for lv in report.levels)
    assert all(lv.passthrough for lv in report.levels)
    kinds = {a.kind: a for a in report.associated}
    assert set(kinds) == {"label", "macro", "thumbnail"}
    assert kinds["label"].compression == "lzw" and kinds["macro"].compression == "jpeg"
    assert [p["from"] for p in report.planned_levels] == [
        "source level 0",
        "generated",
        "source level 1",
        "generated",  # 250 x 175 is still wider than a 240 px tile
    ]


@pytest.mark.parametrize(
    ("name", "vendor", "levels", "compression", "photometric"),
    [
        ("svs_rgb", "aperio", 2, "jpeg", "RGB"),
        ("svs_j2k_ycbcr", "aperio", 1, "jpeg2000", "YBR_FULL"),
        ("svs_j2k_rgb", "aperio", 1, "jpeg2000", "YBR_ICT"),
        ("pyramidal_tiff", "generic-tiff", 2, "jpeg", "YBR_FULL_422"),
        ("ome_tiff", "ome", 3, "jpeg", "YBR_FULL_422"),
        ("ome_tiff_zlib", "ome", 2, "deflate", "RGB"),
    ],
)
def test_probe_names_format_compression_and_photometric_of_each_synthetic_slide(
    slides: SlideSet, name: str, vendor: str, levels: int, compression: str, photometric: str
) -> None:
    report = probe(getattr(slides, name))
    assert report.vendor == vendor
    assert len(report.levels) == levels
    assert {(lv.compression, lv.photometric) for lv in report.levels} == {(compression, photometric)}
    assert all(lv.passthrough == (compression != "deflate") for lv in report.levels)
    assert report.mpp is not None


def test_cli_probe_prints_a_table_and_json(slides: SlideSet, tmp_path: Path) -> None:
    text = archipel_cmd("wsi", "probe", str(slides.svs_jpeg), data=tmp_path)
    assert "Aperio SVS" in text.stdout and "1000 x 700" in text.stdout and "label" in text.stdout
    done = archipel_cmd("wsi", "probe", str(slides.ome_tiff), "--json", data=tmp_path)
    report = json.loads(done.stdout)
    assert report["format"] == "OME-TIFF" and report["mpp"] == [0.25, 0.25]
    assert [lv["passthrough"] for lv in report["levels"]] == [True, True, True]


def test_cli_probe_of_a_bad_file_exits_with_the_reason(slides: SlideSet, tmp_path: Path) -> None:
    done = archipel_cmd("wsi", "probe", str(slides.text_file), data=tmp_path, check=False)
    assert done.returncode == 2
    assert "unsupported format" in done.stderr


# -- raw tiles -----------------------------------------------------------------------------------------------


def test_abbreviated_jpeg_tile_comes_out_byte_identical_plus_its_tables(slides: SlideSet) -> None:
    with open_slide(slides.svs_jpeg) as source:
        lv = source.levels[0]
        col, row = 3, 1  # an inner tile: edge tiles are whitened beyond the level when decoded
        raw = source.read_raw_tile(0, col, row)
        stored, tables = stored_tile(slides.svs_jpeg, 0, row * lv.grid.width + col)
        assert raw is not None and tables is not None
        assert not jpeg.has_tables(stored)  # the file really stores abbreviated tiles
        assert raw.data == tables[:-2] + stored[2:]
        assert (raw.codec, raw.photometric) == (Codec.JPEG, "YBR_FULL_422")
        assert not jpeg.has_adobe_marker(raw.data)
        assert np.array_equal(jpeg.decode(raw.data)[:240, :240], source.read_tile(0, col, row))


def test_rgb_jpeg_tile_carries_the_adobe_marker_without_which_colours_are_wrong(slides: SlideSet) -> None:
    with open_slide(slides.svs_rgb) as source:
        raw = source.read_raw_tile(0, 1, 1)
        assert raw is not None and raw.photometric == "RGB"
        assert jpeg.has_adobe_marker(raw.data) and jpeg.photometric(raw.data) == "RGB"
        reference = openslide_tile(slides.svs_rgb, source, 0, 1, 1)
        assert np.array_equal(jpeg.decode(raw.data), reference)
        # The same stream without APP14 is taken for YCbCr by the decoder: visibly false colours.
        without = raw.data.replace(jpeg.ADOBE_RGB_APP14, b"")
        assert np.abs(jpeg.decode(without).astype(int) - reference).mean() > 20


def test_zero_length_tile_gives_a_blank_tile_encoded_like_the_others(slides: SlideSet) -> None:
    col, row = ZERO_LENGTH_TILE
    with open_slide(slides.svs_jpeg) as source:
        lv = source.levels[0]
        assert stored_tile(slides.svs_jpeg, 0, row * lv.grid.width + col)[0] == b""
        assert (source.read_tile(0, col, row) == 255).all()
        raw = source.read_raw_tile(0, col, row)
        assert raw is not None and (raw.codec, raw.photometric) == (Codec.JPEG, lv.photometric)
        assert jpeg.decode(raw.data).min() >= 250
        assert (
            openslide_tile(slides.svs_jpeg, source, 0, col, row) == 255
        ).all()  # OpenSlide agrees: no tissue


@pytest.mark.parametrize(
    ("name", "mct", "photometric"), [("svs_j2k_ycbcr", False, "YBR_FULL"), ("svs_j2k_rgb", True, "YBR_ICT")]
)
def test_jpeg2000_photometric_follows_the_codestream_colour_transform(
    slides: SlideSet, name: str, mct: bool, photometric: str
) -> None:
    path = getattr(slides, name)
    with open_slide(path) as source:
        raw = source.read_raw_tile(0, 1, 0)
        assert raw is not None
        assert raw.data == stored_tile(path, 0, 1)[0]
        header = jpeg2000.header(raw.data)
        assert header.mct is mct and not header.reversible
        assert raw.photometric == photometric
        diff = np.abs(source.read_tile(0, 1, 0).astype(int) - openslide_tile(path, source, 0, 1, 0))
        assert diff.max() <= 1  # YCbCr -> RGB rounding on each side


# -- decoded tiles -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["svs_jpeg", "svs_rgb", "svs_j2k_ycbcr", "pyramidal_tiff", "ome_tiff"])
def test_decoded_tiles_match_openslide(slides: SlideSet, name: str) -> None:
    path = getattr(slides, name)
    tolerance = 1 if name == "svs_j2k_ycbcr" else 0
    with open_slide(path) as source, openslide.OpenSlide(str(path)) as reference:
        # OpenSlide sees SubIFD levels of an OME-TIFF as one level only. Where a level-0 tile has zero length,
        # OpenSlide also re-renders the lower levels around it (a transparent hole, the rest of that lower tile
        # resampled); we keep the stored lower levels, so on that slide only level 0 is compared.
        levels = 1 if name == "svs_jpeg" else min(len(source.levels), reference.level_count)
        for level in range(levels):
            lv = source.levels[level]
            ours = read_region(source, level, 0, 0, lv.size.width, lv.size.height)
            theirs = over_white(
                np.asarray(reference.read_region((0, 0), level, (lv.size.width, lv.size.height)))
            )
            assert np.abs(ours.astype(int) - theirs).max() <= tolerance, f"level {level}"


def test_lossless_ome_tiff_decodes_to_the_painted_pixels_and_cannot_pass_through(slides: SlideSet) -> None:
    with open_slide(slides.ome_tiff_zlib) as source:
        painter = TilePainter(TissueField(600, 500, 2), 1.0, (600, 500), 256, lambda _: b"")
        for col, row in [(0, 0), (2, 1)]:  # an inner and an edge tile
            assert np.array_equal(source.read_tile(0, col, row), painter.pixels(col, row))
        assert source.read_raw_tile(0, 0, 0) is None and not source.can_pass_through(0)


def test_associated_images_decode_and_jpeg_ones_have_raw_bytes(slides: SlideSet) -> None:
    with open_slide(slides.svs_jpeg) as source, openslide.OpenSlide(str(slides.svs_jpeg)) as reference:
        for kind in AssociatedKind:
            image = source.associated[kind]
            pixels = image.read()
            assert pixels.shape == (image.size.height, image.size.width, 3)
            theirs = over_white(np.asarray(reference.associated_images[kind.value].convert("RGBA")))
            assert np.abs(pixels.astype(int) - theirs).max() <= 1
        assert source.associated[AssociatedKind.LABEL].read_raw() is None  # LZW
        macro = source.associated[AssociatedKind.MACRO]
        raw = macro.read_raw()
        assert raw is not None and jpeg.decode(raw.data).shape[:2] == (macro.size.height, macro.size.width)


def test_dicom_wsi_source_passes_frames_through(slides: SlideSet) -> None:
    with open_slide(slides.dicom_folder) as dicom, open_slide(slides.pyramidal_tiff) as tiff:
        assert (dicom.vendor, dicom.format_name) == ("dicom", "DICOM WSI")
        assert dicom.levels[0].size == tiff.levels[0].size
        assert dicom.can_pass_through(0)
        for col, row in [(0, 0), (6, 4)]:
            raw = dicom.read_raw_tile(0, col, row)
            assert raw is not None and raw.data == tiff.read_raw_tile(0, col, row).data  # type: ignore[union-attr]
            assert np.array_equal(dicom.read_tile(0, col, row), tiff.read_tile(0, col, row))


def test_openslide_source_reads_decoded_tiles_that_never_pass_through(slides: SlideSet) -> None:
    # No NDPI/MRXS writer exists here, so the OpenSlide source is exercised on the SVS it also reads.
    with OpenSlideSource(slides.svs_jpeg, tile=240) as generic, open_slide(slides.svs_jpeg) as tiff:
        assert generic.vendor == "aperio" and generic.mpp == pytest.approx((0.499, 0.499))
        assert generic.objective_power == 20
        assert set(generic.associated) == set(AssociatedKind)
        assert generic.read_raw_tile(0, 0, 0) is None and not generic.can_pass_through(0)
        for col, row in [(0, 0), (4, 2)]:  # (4, 2) is the bottom-right edge tile
            assert np.array_equal(generic.read_tile(0, col, row), tiff.read_tile(0, col, row))


# -- missing levels ------------------------------------------------------------------------------------------


def area_average_reference(image: np.ndarray) -> np.ndarray:
    """Independent reference: each output pixel is the rounded mean of the 1-4 input pixels of its 2x2 block."""
    h, w = image.shape[:2]
    out = np.zeros(((h + 1) // 2, (w + 1) // 2, image.shape[2]), np.uint8)
    for i in range(out.shape[0]):
        for j in range(out.shape[1]):
            block = image[2 * i : 2 * i + 2, 2 * j : 2 * j + 2].reshape(-1, image.shape[2]).astype(int)
            out[i, j] = (block.sum(axis=0) * 2 + len(block)) // (2 * len(block))
    return out


def test_halve_averages_the_pixels_that_exist_at_odd_edges() -> None:
    rng = np.random.default_rng(3)
    for shape in [(5, 7, 3), (4, 6, 3), (1, 1, 3), (3, 2, 3)]:
        image = rng.integers(0, 256, shape, dtype=np.uint8)
        assert np.array_equal(halve(image), area_average_reference(image)), shape


def test_missing_levels_are_generated_from_the_level_above_by_area_average(slides: SlideSet) -> None:
    with open_slide(slides.pyramidal_tiff) as source:
        # Lossless generated tiles (reversible JPEG 2000) so the comparison is exact.
        pyramid = PlannedPyramid(source, codec=Codec.JPEG2000, photometric="YBR_RCT", workers=2)
        plan = pyramid.plan
        assert [(p.size.width, p.size.height, p.source_level) for p in plan.levels] == [
            (1600, 1200, 0),
            (800, 600, None),
            (400, 300, 1),
            (200, 150, None),
        ]
        done: list[int] = []
        pyramid.generate(done.append)
        assert sum(done) == plan.tiles_to_generate == 12 + 1
        for level in (1, 3):
            above, lv = pyramid.levels[level - 1], pyramid.levels[level]
            expected = halve(read_region(pyramid, level - 1, 0, 0, above.size.width, above.size.height))
            assert np.array_equal(read_region(pyramid, level, 0, 0, lv.size.width, lv.size.height), expected)
            edge = pyramid.read_tile(level, lv.grid.width - 1, lv.grid.height - 1)
            assert (edge[lv.size.height % lv.tile.height or lv.tile.height :] == 255).all()  # white padding
        pyramid.close()


def test_generated_levels_are_jpeg_by_default_and_close_to_the_average(slides: SlideSet) -> None:
    with open_slide(slides.svs_jpeg) as source, PlannedPyramid(source, quality=90) as pyramid:
        assert [p.generated for p in pyramid.plan.levels] == [False, True, False, True]
        raw = pyramid.read_raw_tile(1, 0, 0)  # generated on first access
        assert raw is not None and (raw.codec, raw.photometric) == (Codec.JPEG, "YBR_FULL_422")
        assert jpeg.photometric(raw.data) == "YBR_FULL_422"
        full = read_region(source, 0, 0, 0, 1000, 700)
        got = read_region(pyramid, 1, 0, 0, 500, 350).astype(float)
        mse = np.mean((got - halve(full)) ** 2)
        assert 10 * np.log10(255**2 / mse) > 35  # PSNR of the JPEG q90 generated level
        stored = pyramid.read_raw_tile(2, 0, 0)
        assert stored == source.read_raw_tile(1, 0, 0)  # stored levels still pass through


def test_a_planned_pyramid_is_a_pyramid(slides: SlideSet) -> None:
    with open_slide(slides.ome_tiff) as source, PlannedPyramid(source) as pyramid:
        assert isinstance(pyramid, Pyramid) and isinstance(source, Pyramid)
        assert pyramid.mpp == pytest.approx((0.25, 0.25))


# -- bad input -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("truncated", "truncated"),
        ("text_file", "unsupported format"),
        ("stripped_tiff", "no tissue levels"),
        ("empty_file", "empty file"),
    ],
)
def test_bad_input_raises_slide_error_with_a_reason(slides: SlideSet, name: str, reason: str) -> None:
    with pytest.raises(SlideError) as caught:
        open_slide(getattr(slides, name)).close()
    assert reason in caught.value.reason


def test_a_missing_file_and_a_corrupt_tile_raise_slide_error(slides: SlideSet, tmp_path: Path) -> None:
    with pytest.raises(SlideError, match="no such file"):
        open_slide(tmp_path / "absent.svs")
    broken = tmp_path / "broken.svs"
    broken.write_bytes(slides.svs_jpeg.read_bytes())
    with tifffile.TiffFile(broken) as tif:  # tile (2, 0): not the first tile, which opening reads
        offset, count = int(tif.pages[0].dataoffsets[2]), int(tif.pages[0].databytecounts[2])
    with broken.open("r+b") as f:
        f.seek(offset + 2)
        f.write(os.urandom(count - 4))
    with open_slide(broken) as source, pytest.raises(SlideError, match="corrupt tile"):
        source.read_tile(0, 2, 0)
