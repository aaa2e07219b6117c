"""Plan the output pyramid: factor-2 levels down to a single tile, each either stored in the source or generated.

A source rarely stores every factor-2 level: Aperio keeps 1, 1/4, 1/16; a generic TIFF may hold only 1 and 1/16.
The plan keeps the source levels that sit on the factor-2 ladder (their tiles can pass through) and marks the
others to be generated from the planned level just above, so that generation cascades in cheap 2x2 steps.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from archipel.tiles.pyramid import Level, Size

DEFAULT_TILE = 256


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
    t = level0.tile
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


def plan_pyramid(levels: Sequence[Level], tile: Size | None = None) -> PyramidPlan:
    """Plan factor-2 output levels for a source with ``levels`` (full resolution first).

    Level ``k`` is the source level whose size is level 0's divided by ``2**k`` when there is one, else generated
    with size ``ceil(previous / 2)``. Planning stops at the first level that fits in one tile.
    """
    if not levels:
        raise ValueError("a pyramid needs at least one level")
    base = levels[0]
    gen_tile = tile or default_tile(base)
    planned = [PlannedLevel(0, base.size, base.tile, 1.0, base.index)]
    step = 0
    while True:
        prev = planned[-1]
        if prev.size.width <= prev.tile.width and prev.size.height <= prev.tile.height:
            break
        if prev.size.width == 1 and prev.size.height == 1:
            break
        step += 1
        stored = next((lv for lv in levels[1:] if _on_ladder(lv, base.size, step)), None)
        if stored is not None:
            size, level_tile, source = stored.size, stored.tile, stored.index
        else:
            size = Size(math.ceil(prev.size.width / 2), math.ceil(prev.size.height / 2))
            level_tile, source = gen_tile, None
        downsample = base.size.width / size.width
        planned.append(PlannedLevel(step, size, level_tile, downsample, source))
    return PyramidPlan(tuple(planned))
