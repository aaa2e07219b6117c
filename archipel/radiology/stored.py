"""Listeners told of every object the archive has stored: how higher layers (screening intake) react to a study
arriving by C-STORE or STOW without the archive importing them.

A listener runs after the object is durable and its index row committed, in the storing thread. It must be
quick and must not raise: the store has already succeeded, so an error is logged and the next listener runs.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from archipel.platform.db import Database
from archipel.radiology.dicomfile import ParsedInstance

log = logging.getLogger("archipel.radiology.stored")


@dataclass(frozen=True)
class StoredObject:
    """One object just stored: its index facts, its bytes as received, and the store's status."""

    parsed: ParsedInstance
    data: bytes
    status: str


StoredListener = Callable[[Database, StoredObject], None]
_listeners: dict[str, StoredListener] = {}


def on_stored(name: str, listener: StoredListener) -> None:
    """Call ``listener(db, stored)`` after each store; registering a ``name`` again replaces its listener."""
    _listeners[name] = listener


def announce(db: Database, stored: StoredObject) -> None:
    """Tell every listener about ``stored``; a failing listener is logged and does not stop the others."""
    for name, listener in list(_listeners.items()):
        try:
            listener(db, stored)
        except Exception:
            log.exception("event=stored_listener_failed listener=%s sop_uid=%s", name, stored.parsed.sop_uid)
