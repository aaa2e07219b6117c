"""Listeners told of every object the archive has stored: how higher layers (screening intake) react to a study
arriving by C-STORE or STOW without the archive importing them.

A listener runs after the object is durable and its index row committed, in the storing thread. It must be
quick and must not raise: the store has already succeeded, so an error is logged and the next listener runs.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
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


class RecentStudies:
    """The studies a listener looked at in the last ``seconds``: a study's next instances skip the look.

    A listener that links an arriving study to what waits for it (an order, a report) needs to look once per
    study, not once per instance: 200 CT slices asked the same question 200 times, a tenth of the store's work.
    It looks again once ``seconds`` have passed, so that what starts waiting while the study is still arriving
    is found by a later instance, as before. Bounded to the ``size`` studies seen last; one per process.
    """

    def __init__(self, seconds: float = 1.0, size: int = 4096) -> None:
        self.seconds = seconds
        self.size = size
        self._seen: OrderedDict[str, float] = OrderedDict()
        self._lock = threading.Lock()

    def due(self, study_uid: str) -> bool:
        """Whether to look at ``study_uid`` now (and if so, it counts as looked at)."""
        now = time.monotonic()
        with self._lock:
            last = self._seen.get(study_uid)
            if last is not None and now - last < self.seconds:
                return False
            self._seen[study_uid] = now
            self._seen.move_to_end(study_uid)
            while len(self._seen) > self.size:
                self._seen.popitem(last=False)
            return True

    def forget(self) -> None:
        """Look at every study again (tests, and a process that knows something changed)."""
        with self._lock:
            self._seen.clear()
