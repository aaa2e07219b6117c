"""C-MOVE and C-GET SCP: send matching instances as stored, to a registered node or back on the association."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from pynetdicom import evt

from archipel.platform.runtime import Runtime
from archipel.radiology.dimse.nodes import NodeRegistry


def handle_move(event: evt.Event, rt: Runtime, nodes: NodeRegistry) -> Iterator[Any]:
    """EVT_C_MOVE: yield the destination, the number of sub-operations, then each instance."""
    yield None, None


def handle_get(event: evt.Event, rt: Runtime, nodes: NodeRegistry) -> Iterator[Any]:
    """EVT_C_GET: yield the number of sub-operations, then each instance."""
    yield 0
