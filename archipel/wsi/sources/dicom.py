"""Existing DICOM WSI (VL Whole Slide Microscopy Image) through wsidicom; stored frames pass through."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import wsidicom

from archipel.tiles import codecs
from archipel.tiles.pyramid import Codec, Level, RawTile, Size
from archipel.wsi.sources.base import AssociatedImage, AssociatedKind, SlideError, SlideSource

_TRANSFER_SYNTAX_CODECS = {
    "1.2.840.10008.1.2.4.50": Codec.JPEG,  # JPEG Baseline
    "1.2.840.10008.1.2.4.51": Codec.JPEG,  # JPEG Extended
    "1.2.840.10008.1.2.4.90": Codec.JPEG2000,  # lossless only
    "1.2.840.10008.1.2.4.91": Codec.JPEG2000,
    "1.2.840.10008.1.2": Codec.NONE,
    "1.2.840.10008.1.2.1": Codec.NONE,
}
_PASS_THROUGH = (Codec.JPEG, Codec.JPEG2000)


class DicomSlide(SlideSource):
    """The volume pyramid of a DICOM WSI series: a folder of instances, a single instance file, or the fsspec URLs
    of its instances (``s3://...``, read by ranged GETs with ``file_options``, fsspec's storage options)."""

    vendor = "dicom"
    format_name = "DICOM WSI"

    def __init__(self, path: Path | Sequence[str], file_options: dict[str, Any] | None = None) -> None:
        if isinstance(path, Path):
            self.path = path
            files: Path | list[Path] | list[str] = path if path.is_dir() else [path]
        else:
            files = list(path)
            self.path = Path(files[0].rsplit("/", 1)[-1] if files else "series")
        try:
            self._wsi = wsidicom.WsiDicom.open(files, file_options=file_options)
        except Exception as exc:  # wsidicom raises its own errors, pydicom's, ValueError...
            raise SlideError(f"not a readable DICOM WSI: {exc}", self.path.name) from exc
        try:
            base = self._wsi.levels[0]
            levels = []
            for i, lv in enumerate(self._wsi.levels):
                data = lv.default_instance.image_data
                codec = _TRANSFER_SYNTAX_CODECS.get(str(data.transfer_syntax), Codec.OTHER)
                levels.append(
                    Level(
                        i,
                        Size(lv.size.width, lv.size.height),
                        Size(lv.tile_size.width, lv.tile_size.height),
                        base.size.width / lv.size.width,
                        codec,
                        str(data.photometric_interpretation),
                    )
                )
        except Exception as exc:
            self._wsi.close()
            raise SlideError(f"no tissue levels in the DICOM WSI: {exc}", self.path.name) from exc
        if not levels:
            self._wsi.close()
            raise SlideError("no tissue levels in the DICOM WSI", self.path.name)
        self._levels = tuple(levels)

    @property
    def levels(self) -> Sequence[Level]:
        return self._levels

    @property
    def mpp(self) -> tuple[float, float] | None:
        mpp = self._wsi.levels[0].mpp
        return (float(mpp.width), float(mpp.height)) if mpp is not None else None

    @property
    def associated(self) -> Mapping[AssociatedKind, AssociatedImage]:
        found: dict[AssociatedKind, AssociatedImage] = {}
        for kind, images, reader in (
            (AssociatedKind.LABEL, self._wsi.labels, self._wsi.read_label),
            (AssociatedKind.MACRO, self._wsi.overviews, self._wsi.read_overview),
        ):
            if not images:
                continue
            size = images[0].size

            def read(reader=reader) -> np.ndarray:  # type: ignore[no-untyped-def]
                return codecs.as_rgb(np.asarray(reader().convert("RGB")))

            found[kind] = AssociatedImage(kind, Size(size.width, size.height), Codec.OTHER, read)
        return found

    def can_pass_through(self, level: int) -> bool:
        return self._levels[level].codec in _PASS_THROUGH

    def read_raw_tile(self, level: int, col: int, row: int) -> RawTile | None:
        """The stored frame, unchanged (wsidicom gives a blank frame for tiles missing from a sparse level)."""
        lv = self._check_tile(level, col, row)
        if lv.codec not in _PASS_THROUGH:
            return None
        data = bytes(self._wsi.read_encoded_tile(level, (col, row), crop_to_image_boundary=False))
        # DICOM pads odd-length frames with one zero byte after the codestream's EOI; the codestream is without it.
        if data.endswith(b"\xff\xd9\x00"):
            data = data[:-1]
        return RawTile(data, lv.codec, lv.photometric)

    def read_tile(self, level: int, col: int, row: int) -> np.ndarray:
        lv = self._check_tile(level, col, row)
        try:
            raw = self.read_raw_tile(level, col, row)
            # Our decoder honours YBR_FULL JPEG 2000 frames (YCbCr coded without a transform), wsidicom's does not.
            if raw is not None and raw.codec in (Codec.JPEG, Codec.JPEG2000):
                pixels = codecs.decode_raw(raw)
            else:
                pixels = self._wsi.read_tile(level, (col, row), crop_to_image_boundary=False, as_array=True)
        except Exception as exc:
            raise SlideError(
                f"corrupt frame: level {level} tile ({col}, {row}): {exc}", self.path.name
            ) from exc
        valid = Size(lv.size.width - col * lv.tile.width, lv.size.height - row * lv.tile.height)
        return codecs.fit(codecs.as_rgb(np.asarray(pixels)), lv.tile, valid)

    def close(self) -> None:
        self._wsi.close()
