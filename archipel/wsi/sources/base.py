"""What every slide source offers: the tile pyramid, plus the slide's vendor, optics and associated images."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum

import numpy as np

from archipel.tiles.pyramid import Codec, Level, RawTile, Size


class SlideError(Exception):
    """A slide cannot be read: truncated or corrupt file, unsupported format, no tissue levels.

    ``reason`` is a short sentence for the user; the message adds the file name.
    """

    def __init__(self, reason: str, path: object | None = None) -> None:
        self.reason = reason
        self.path = path
        super().__init__(f"{reason} ({path})" if path is not None else reason)


class AssociatedKind(StrEnum):
    """The non-pyramid images a scanner stores beside the tissue."""

    LABEL = "label"
    MACRO = "macro"  # the whole glass slide photographed (DICOM OVERVIEW)
    THUMBNAIL = "thumbnail"


@dataclass(frozen=True)
class AssociatedImage:
    """A label, macro or thumbnail image, read on demand.

    ``codec`` is how it is stored; ``read_raw`` gives its complete codestream when it can be kept as is (a
    single JPEG strip), else ``None``.
    """

    kind: AssociatedKind
    size: Size
    codec: Codec
    _read: Callable[[], np.ndarray] = field(repr=False)
    _read_raw: Callable[[], RawTile | None] = field(repr=False, default=lambda: None)

    def read(self) -> np.ndarray:
        """The image as ``uint8`` RGB (height, width, 3)."""
        return self._read()

    def read_raw(self) -> RawTile | None:
        """The stored codestream, when it is one complete JPEG (or JPEG 2000) image; else ``None``."""
        return self._read_raw()


class SlideSource(ABC):
    """A whole-slide image opened for reading; implements :class:`archipel.tiles.pyramid.Pyramid`.

    Sources are safe to read from several threads at once. Close them (or use ``with``) to release the file.
    """

    #: Short machine name of the vendor or format family (``aperio``, ``ome``, ``generic-tiff``, ``hamamatsu``...).
    vendor: str = ""
    #: Human name of the file format.
    format_name: str = ""

    @property
    @abstractmethod
    def levels(self) -> Sequence[Level]:
        """The stored tissue levels, full resolution first."""

    @property
    @abstractmethod
    def mpp(self) -> tuple[float, float] | None:
        """Microns per pixel of level 0, (x, y), when known."""

    @property
    def objective_power(self) -> float | None:
        """The scanning objective's magnification (20, 40...), when known."""
        return None

    @property
    def associated(self) -> Mapping[AssociatedKind, AssociatedImage]:
        """The label, macro and thumbnail images the file holds."""
        return {}

    @property
    def properties(self) -> Mapping[str, str]:
        """Vendor metadata as text key/values (for the record; never shown with patient data)."""
        return {}

    @abstractmethod
    def read_tile(self, level: int, col: int, row: int) -> np.ndarray:
        """The decoded tile as ``uint8`` RGB (tile height, tile width, 3), edge tiles padded white."""

    def read_raw_tile(self, level: int, col: int, row: int) -> RawTile | None:
        """The stored tile as a complete codestream, or ``None`` when it cannot pass through."""
        return None

    def can_pass_through(self, level: int) -> bool:
        """Whether the level's tiles come out of :meth:`read_raw_tile` (as JPEG or JPEG 2000)."""
        return False

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release the file."""

    def __enter__(self) -> SlideSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _check_tile(self, level: int, col: int, row: int) -> Level:
        if not 0 <= level < len(self.levels):
            raise IndexError(f"level {level} out of range 0-{len(self.levels) - 1}")
        lv = self.levels[level]
        if not (0 <= col < lv.grid.width and 0 <= row < lv.grid.height):
            raise IndexError(
                f"tile ({col}, {row}) outside level {level}'s {lv.grid.width}x{lv.grid.height} grid"
            )
        return lv
