"""Describe a slide file: what ``archipel wsi probe`` prints, and what conversion plans from."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from archipel.tiles.plan import plan_pyramid
from archipel.wsi.sources import SlideSource, open_slide


@dataclass(frozen=True)
class LevelReport:
    """One stored level: geometry, how its tiles are compressed, and whether they can pass through."""

    index: int
    width: int
    height: int
    tile_width: int
    tile_height: int
    downsample: float
    compression: str
    photometric: str
    passthrough: bool


@dataclass(frozen=True)
class AssociatedReport:
    """A label, macro or thumbnail image."""

    kind: str
    width: int
    height: int
    compression: str


@dataclass(frozen=True)
class SlideReport:
    """What a slide file holds. ``planned_levels`` are the output levels conversion would write, each marked
    ``stored`` (from the source level given) or ``generated``."""

    file: str
    vendor: str
    format: str
    mpp: tuple[float, float] | None
    objective_power: float | None
    levels: list[LevelReport]
    associated: list[AssociatedReport]
    planned_levels: list[dict[str, Any]]

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dictionary."""
        return asdict(self)


def describe(source: SlideSource, name: str) -> SlideReport:
    """The report for an open source."""
    levels = [
        LevelReport(
            lv.index,
            lv.size.width,
            lv.size.height,
            lv.tile.width,
            lv.tile.height,
            round(lv.downsample, 4),
            lv.codec.value,
            lv.photometric,
            source.can_pass_through(lv.index),
        )
        for lv in source.levels
    ]
    associated = [
        AssociatedReport(img.kind.value, img.size.width, img.size.height, img.codec.value)
        for img in source.associated.values()
    ]
    plan = plan_pyramid(source.levels)
    planned = [
        {
            "index": p.index,
            "width": p.size.width,
            "height": p.size.height,
            "tile": p.tile.width,
            "from": "generated" if p.generated else f"source level {p.source_level}",
        }
        for p in plan.levels
    ]
    return SlideReport(
        name,
        source.vendor,
        source.format_name,
        source.mpp,
        source.objective_power,
        levels,
        associated,
        planned,
    )


def probe(path: Path) -> SlideReport:
    """Open ``path`` and describe it. Raises :class:`~archipel.wsi.sources.SlideError` when it is not a slide."""
    with open_slide(path) as source:
        return describe(source, path.name)
