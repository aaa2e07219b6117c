"""Plan the output pyramid: levels down to a single tile, each either stored in the source or generated.

A source rarely stores every factor-2 level: Aperio keeps 1, 1/4, 1/16; a generic TIFF may hold only 1 and 1/16.
Two modes (:class:`PyramidMode`):

- ``full``: every factor-2 level. The plan keeps the source levels that sit on the factor-2 ladder (their tiles
  can pass through) and marks the others to be generated from the planned level just above, so that generation
  cascades in cheap 2x2 steps. Building 1/2 means decoding the whole full-resolution level: most of the work.
- ``stored``: the source's levels as they are (all passed through), and factor-2 levels generated only below the
  smallest of them, down to one tile. Nothing above the smallest stored level is decoded; a viewer scales between
  the stored levels, as it does for the scanner's own file.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

from archipel.tiles.pyramid import Level, Size

DEFAULT_TILE = 256


class PyramidMode(StrEnum):
    """Which levels a conversion writes (see the module docstring)."""

    FULL = "full"
    STORED = "stored"


@dataclass(frozen=True)
class PlannedLevel:
    """One output level: its geometry, and where its tiles come from.

    ``source_level`` is the index of the source level that provides it as stored, or ``None`` when it is
    generated from planned level ``index - 1``.
    """

    index: int
    size: Size
    tile: Size
    downsample: float
    source_level: int | None

    @property
    def generated(self) -> bool:
        """Whether the level's tiles are computed rather than read from the source."""
        return self.source_level is None

    @property
    def grid(self) -> Size:
        """Columns and rows of tiles."""
        return self.size.tiles(self.tile)


@dataclass(frozen=True)
class PyramidPlan:
    """The output levels, full resolution first; the last one fits in a single tile."""

    levels: tuple[PlannedLevel, ...]

    @property
    def generated(self) -> tuple[PlannedLevel, ...]:
        """The levels to generate, in the order they must be generated."""
        return tuple(lv for lv in self.levels if lv.generated)

    @property
    def tiles_to_generate(self) -> int:
        """How many tiles generation encodes."""
        return sum(lv.grid.width * lv.grid.height for lv in self.generated)


def default_tile(level0: Level) -> Size:
    """The tile size for generated levels: level 0's when it is square and reasonable, else 256."""
    return _usable_tile(level0.tile)


def _usable_tile(t: Size) -> Size:
    if t.width == t.height and 64 <= t.width <= 2048:
        return t
    return Size(DEFAULT_TILE, DEFAULT_TILE)


def _on_ladder(candidate: Level, base: Size, step: int) -> bool:
    """Whether ``candidate`` is ``base`` downsampled by ``2**step`` (within a pixel, or 0.5 %)."""
    factor = 2**step
    for have, full in ((candidate.size.width, base.width), (candidate.size.height, base.height)):
        exact = full / factor
        if abs(have - exact) > 1 and abs(have - exact) / exact > 0.005:
            return False
    return True


def plan_pyramid(
    levels: Sequence[Level], tile: Size | None = None, mode: PyramidMode = PyramidMode.FULL
) -> PyramidPlan:
    """Plan the output levels for a source with ``levels`` (full resolution first), in ``mode``.

    ``full``: level ``k`` is the source level whose size is level 0's divided by ``2**k`` when there is one, else
    generated with size ``ceil(previous / 2)``. ``stored``: every source level (each smaller than the one before),
    then generated levels of ``ceil(previous / 2)``. Planning stops at the first level that fits in one tile.
    """
    if not levels:
        raise ValueError("a pyramid needs at least one level")
    base = levels[0]
    planned = [PlannedLevel(0, base.size, base.tile, 1.0, base.index)]
    if mode is PyramidMode.STORED:
        for lv in levels[1:]:
            prev = planned[-1]
            if _fits(prev) or lv.size.width >= prev.size.width or lv.size.height >= prev.size.height:
                continue  # not a smaller level (or nothing left to reduce): it adds nothing to the pyramid
            downsample = base.size.width / lv.size.width
            planned.append(PlannedLevel(len(planned), lv.size, lv.tile, downsample, lv.index))
        # Generated levels continue from the smallest stored one, in its tiles, so that each generated tile is
        # 2 x 2 tiles of the level above (the cheap aligned path).
        _extend(planned, base.size, tile or _usable_tile(planned[-1].tile), None)
    else:
        _extend(planned, base.size, tile or default_tile(base), levels)
    return PyramidPlan(tuple(planned))


def _fits(level: PlannedLevel) -> bool:
    """Whether ``level`` is a single tile (or a single pixel): the pyramid's apex."""
    size, tile = level.size, level.tile
    return (size.width <= tile.width and size.height <= tile.height) or (size.width == 1 and size.height == 1)


def _extend(planned: list[PlannedLevel], base: Size, gen_tile: Size, stored: Sequence[Level] | None) -> None:
    """Append factor-2 levels to ``planned`` until one fits in a tile, taking each from ``stored`` when one of
    them sits on the ladder (``full`` mode), else generated."""
    while not _fits(planned[-1]):
        prev = planned[-1]
        step = len(planned)  # in full mode, level k is level 0 / 2**k
        found = next((lv for lv in stored[1:] if _on_ladder(lv, base, step)), None) if stored else None
        if found is not None:
            size, level_tile, source = found.size, found.tile, found.index
        else:
            size = Size(math.ceil(prev.size.width / 2), math.ceil(prev.size.height / 2))
            level_tile, source = gen_tile, None
        planned.append(PlannedLevel(len(planned), size, level_tile, base.width / size.width, source))
