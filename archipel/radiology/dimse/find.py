"""C-FIND SCP: patient root and study root, all levels, over the shared query engine."""

from __future__ import annotations

from collections.abc import Iterator

from pydicom.dataset import Dataset
from pynetdicom import evt

from archipel.platform.runtime import Runtime
from archipel.radiology.dimse.nodes import NodeRegistry


def handle_find(event: evt.Event, rt: Runtime, nodes: NodeRegistry) -> Iterator[tuple[int, Dataset | None]]:
    """EVT_C_FIND: yield pending matches, then the final status."""
    yield 0xC000, None
