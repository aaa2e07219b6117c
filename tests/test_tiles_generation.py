"""Missing-level generation: the plan in each pyramid mode, the per-tile (aligned) and region paths give the area
average, and a sink gets every decoded tile of the levels generation reads, once."""

from __future__ import annotations

import functools
import logging
import threading
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from archipel.tiles import codecs
from archipel.tiles.downsample import halve
from archipel.tiles.plan import PyramidMode, plan_pyramid
from archipel.tiles.planned import PlannedPyramid, complete
from archipel.tiles.pyramid import Codec, Level, RawTile, Size
from archipel.tiles.region import read_region
from archipel.wsi.sources import open_slide
from archipel.wsi.synthetic import write_svs


class ArrayPyramid:
    """A one-level pyramid over an RGB array, tiles cut on demand (no raw tiles)."""

    def __init__(self, image: np.ndarray, tile: Size) -> None:
        self.image = image
        h, w = image.shape[:2]
        self._levels = (Level(0, Size(w, h), tile, 1.0),)

    @property
    def levels(self) -> Sequence[Level]:
        return self._levels

    @property
    def mpp(self) -> tuple[float, float] | None:
        return (0.5, 0.5)

    def read_tile(self, level: int, col: int, row: int) -> np.ndarray:
        t = self._levels[0].tile
        part = self.image[row * t.height : (row + 1) * t.height, col * t.width : (col + 1) * t.width]
        return codecs.fit(part, t)

    def read_raw_tile(self, level: int, col: int, row: int) -> RawTile | None:
        return None


def _image(width: int, height: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def _whole(pyramid: object, level: int) -> np.ndarray:
    lv = pyramid.levels[level]  # type: ignore[attr-defined]
    return read_region(pyramid, level, 0, 0, lv.size.width, lv.size.height)  # type: ignore[arg-type]


def _aperio_levels() -> list[Level]:
    """Levels 1, 1/4, 1/16 of a 9,000 x 7,000 scan in 256 px tiles, as an Aperio scanner stores them."""
    sizes = [(9000, 7000), (2250, 1750), (562, 437)]
    return [Level(i, Size(w, h), Size(256, 256), 9000 / w) for i, (w, h) in enumerate(sizes)]


def test_full_mode_plans_every_factor_2_level_and_stored_mode_only_those_below_the_smallest_stored() -> None:
    levels = _aperio_levels()
    full = plan_pyramid(levels, mode=PyramidMode.FULL)
    assert [(lv.size.width, lv.source_level) for lv in full.levels] == [
        (9000, 0),
        (4500, None),
        (2250, 1),
        (1125, None),
        (562, 2),
        (281, None),
        (141, None),
    ]
    stored = plan_pyramid(levels, mode=PyramidMode.STORED)
    assert [(lv.index, lv.size.width, lv.source_level) for lv in stored.levels] == [
        (0, 9000, 0),
        (1, 2250, 1),
        (2, 562, 2),
        (3, 281, None),
        (4, 141, None),
    ]
    assert stored.levels[1].downsample == 4.0 and stored.levels[-1].tile == Size(256, 256)
    assert stored.tiles_to_generate == 2 + 1
    # A stored level that already fits in one tile ends the pyramid: nothing is generated below it.
    small = [Level(0, Size(1000, 800), Size(256, 256), 1.0), Level(1, Size(250, 200), Size(256, 256), 4.0)]
    assert plan_pyramid(small, mode=PyramidMode.STORED).generated == ()


def test_levels_generated_tile_by_tile_equal_the_area_average_of_the_level_above_at_odd_edges() -> None:
    source = ArrayPyramid(_image(1001, 699, seed=1), Size(128, 128))
    # Lossless generated tiles, so that each level is exactly the average of the one above.
    with complete(source, codec=Codec.JPEG2000, photometric="YBR_RCT", workers=2) as pyramid:
        assert [(lv.size.width, lv.size.height) for lv in pyramid.levels] == [
            (1001, 699),
            (501, 350),
            (251, 175),
            (126, 88),
        ]
        pyramid.generate()
        for level in range(1, len(pyramid.levels)):
            assert np.array_equal(_whole(pyramid, level), halve(_whole(pyramid, level - 1))), level
            lv = pyramid.levels[level]
            edge = pyramid.read_tile(level, lv.grid.width - 1, lv.grid.height - 1)
            assert (edge[lv.size.height - (lv.grid.height - 1) * lv.tile.height :] == 255).all()


def test_levels_whose_tiles_differ_from_the_level_above_are_averaged_over_regions() -> None:
    source = ArrayPyramid(_image(700, 500, seed=2), Size(128, 128))
    with complete(source, Size(96, 96), codec=Codec.JPEG2000, photometric="YBR_RCT") as pyramid:
        assert pyramid.levels[1].tile == Size(96, 96)  # not 2 x 2 source tiles: the region path
        pyramid.generate()
        for level in range(1, len(pyramid.levels)):
            assert np.array_equal(_whole(pyramid, level), halve(_whole(pyramid, level - 1))), level


def test_a_sink_gets_every_decoded_tile_of_the_levels_generation_reads_once() -> None:
    source = ArrayPyramid(_image(900, 650, seed=3), Size(128, 128))
    seen: Counter[tuple[int, int, int]] = Counter()
    pixels: dict[tuple[int, int, int], np.ndarray] = {}
    lock = threading.Lock()

    def sink(level: int, col: int, row: int, tile: np.ndarray) -> None:
        with lock:
            seen[(level, col, row)] += 1
            pixels[(level, col, row)] = tile.copy()

    with complete(source, codec=Codec.JPEG2000, photometric="YBR_RCT", workers=2) as pyramid:
        done: list[int] = []
        covered = pyramid.generate(done.append, sink=sink)
        last = len(pyramid.levels) - 1
        assert covered == frozenset(range(last))  # every level but the last feeds the next
        expected = {
            (lv.index, col, row)
            for lv in pyramid.levels[:last]
            for row in range(lv.grid.height)
            for col in range(lv.grid.width)
        }
        assert set(seen) == expected and set(seen.values()) == {1}
        assert sum(done) == pyramid.plan.tiles_to_generate + len(expected)
        for (level, col, row), tile in pixels.items():
            assert np.array_equal(tile, pyramid.read_tile(level, col, row))
        # Generated already: a second call has nothing to hand over.
        assert pyramid.generate(sink=sink) == frozenset()


@dataclass(frozen=True)
class SaveTile:
    """A sink's worker part: saves the tile as a file (a worker process's own output), counts one."""

    folder: Path

    def __call__(self, level: int, col: int, row: int, pixels: np.ndarray) -> tuple[int, ...]:
        np.save(self.folder / f"{level}-{col}-{row}.npy", pixels)
        return (1,)


class FileSink:
    """A :class:`~archipel.tiles.processes.SharedSink` that saves tiles as files, here or in worker processes."""

    def __init__(self, folder: Path) -> None:
        self.part = SaveTile(folder)
        self.merged = 0

    def __call__(self, level: int, col: int, row: int, pixels: np.ndarray) -> None:
        self.merge(self.part(level, col, row, pixels))

    def worker(self) -> SaveTile:
        return self.part

    def merge(self, counts: tuple[int, ...]) -> None:
        self.merged += counts[0]


def test_levels_made_in_worker_processes_are_the_same_tiles_as_made_in_threads(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Odd size: edge tiles on every level; 128 px tiles so that the stored levels are several tiles wide.
    svs = write_svs(tmp_path / "slide.svs", 1500, 1100, tile=128, seed=6)
    caplog.set_level(logging.INFO, logger="archipel.tiles.planned")
    with open_slide(svs) as source:
        by_threads = PlannedPyramid(source, workers=1)
        by_processes = PlannedPyramid(
            source, workers=2, reopen=functools.partial(open_slide, svs), process_min_tiles=1
        )
        with by_threads, by_processes:
            by_threads.generate()
            done: list[int] = []
            by_processes.generate(done.append)
            assert sum(done) == by_processes.plan.tiles_to_generate
            made = [r.getMessage() for r in caplog.records if "event=level_generate" in r.getMessage()]
            assert any("in=processes" in m for m in made) and any("in=threads" in m for m in made)
            for planned in by_threads.plan.generated:
                for row in range(planned.grid.height):
                    for col in range(planned.grid.width):
                        ours = by_processes.read_raw_tile(planned.index, col, row)
                        theirs = by_threads.read_raw_tile(planned.index, col, row)
                        assert ours is not None and theirs is not None
                        assert ours.data == theirs.data, (planned.index, col, row)

        # A sink that can work in the workers gets every decoded tile of the levels read, once, from wherever
        # they were decoded.
        folder = tmp_path / "sink"
        folder.mkdir()
        sink = FileSink(folder)
        with PlannedPyramid(
            source, workers=2, reopen=functools.partial(open_slide, svs), process_min_tiles=1
        ) as fed:
            covered = fed.generate(sink=sink)
            expected = {
                f"{lv.index}-{col}-{row}.npy"
                for lv in fed.levels
                if lv.index in covered
                for row in range(lv.grid.height)
                for col in range(lv.grid.width)
            }
            assert covered == frozenset({0, 2})  # the stored levels above the generated 1 and 3
            assert {p.name for p in folder.iterdir()} == expected and sink.merged == len(expected)
            for name in expected:
                level, col, row = map(int, name.removesuffix(".npy").split("-"))
                assert np.array_equal(np.load(folder / name), fed.read_tile(level, col, row)), name
