"""An append-only scratch file for encoded tiles: generated levels live here, not in memory."""

from __future__ import annotations

import os
import tempfile
import threading
from pathlib import Path

TileKey = tuple[int, int, int]


class TileScratch:
    """Encoded tiles keyed by (level, col, row), stored in an anonymous temporary file.

    Appends are serialised; reads use ``pread`` and may run from any thread. The file disappears on
    :meth:`close` (or when the process ends, as it is unlinked from the start).
    """

    def __init__(self, directory: Path | None = None) -> None:
        self._file = tempfile.TemporaryFile(dir=directory, prefix="archipel-tiles-")  # noqa: SIM115 - lives with self
        self._fd = self._file.fileno()
        self._index: dict[TileKey, tuple[int, int]] = {}
        self._end = 0
        self._lock = threading.Lock()

    def put(self, key: TileKey, data: bytes) -> None:
        """Store ``data`` under ``key`` (a later put replaces it)."""
        with self._lock:
            offset = self._end
            os.pwrite(self._fd, data, offset)
            self._end += len(data)
            self._index[key] = (offset, len(data))

    def get(self, key: TileKey) -> bytes | None:
        """The bytes stored under ``key``, or ``None``."""
        where = self._index.get(key)
        if where is None:
            return None
        offset, length = where
        return os.pread(self._fd, length, offset)

    def __contains__(self, key: object) -> bool:
        return key in self._index

    @property
    def size(self) -> int:
        """Bytes stored so far."""
        return self._end

    def close(self) -> None:
        """Drop the scratch file."""
        self._file.close()
