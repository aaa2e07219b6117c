"""Which pyramid serves a slide right now: the registry ``wsi`` fills in, and the cache of opened pyramids.

``tiles`` does not know what a slide is (that is ``wsi``'s business). It asks a :class:`SlideResolver`, which
``wsi`` registers at import, two questions: :meth:`~SlideResolver.describe` (cheap: a database row) says who owns
the slide, which pyramid currently serves it and its version; :meth:`~SlideResolver.open` opens that pyramid.
A slide is served from its source file until its conversion ends, then from the converted pyramid: the version
changes, so :class:`ViewCache` opens the new pyramid and closes the old one.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from archipel.platform import access
from archipel.platform.runtime import Runtime
from archipel.tiles.pyramid import Pyramid

log = logging.getLogger("archipel.tiles")


@dataclass(frozen=True)
class SlideRef:
    """What the tile service needs to know about a slide before opening it.

    ``resource`` is what the access policy weighs; ``version`` names the pyramid serving it now (it changes when
    the slide switches from its source to the converted pyramid) and goes into ETags; ``final`` says whether
    that pyramid will never change (converted), so its tiles may be cached for good.
    """

    slide_id: str
    resource: access.Resource
    version: str
    final: bool
    #: Opaque to ``tiles``: what :meth:`SlideResolver.open` needs (a path, a series UID...).
    locator: Any = None


class SlideUnavailable(Exception):
    """The slide exists but its pixels cannot be read now (corrupt source, missing blob); ``reason`` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class SlideResolver(Protocol):
    """Finds and opens slides for the tile service; ``wsi`` provides it."""

    def describe(self, rt: Runtime, slide_id: str) -> SlideRef | None:
        """The slide's owner, version and serving pyramid, or ``None`` when there is no such slide."""
        ...

    def open(self, rt: Runtime, ref: SlideRef) -> Pyramid:
        """Open the pyramid ``ref`` names; raises :class:`SlideUnavailable` when it cannot be read."""
        ...


_resolver: SlideResolver | None = None
#: Seconds a replaced pyramid stays open for the requests still reading it.
RETIRED_GRACE = 30.0


def register_resolver(resolver: SlideResolver) -> None:
    """Install the resolver (``wsi`` calls this when imported)."""
    global _resolver
    _resolver = resolver


def resolver() -> SlideResolver:
    """The installed resolver; a clear error when no module provides slides."""
    if _resolver is None:
        raise RuntimeError("no slide resolver is registered (import archipel.wsi.tile_source)")
    return _resolver


@dataclass
class _Entry:
    ref: SlideRef
    pyramid: Pyramid
    checked: float


class ViewCache:
    """Opened pyramids by slide, each re-described at most every ``recheck`` seconds while it is not final.

    Describing costs a database read and opening a pyramid much more, so a viewer's burst of tiles reuses one
    open pyramid; a slide still served from its source is re-described every ``recheck`` seconds so that it
    switches to the converted pyramid soon after the conversion ends. Final pyramids are re-described every
    ``final_recheck`` seconds (a deleted slide disappears). At most ``capacity`` pyramids stay open.
    """

    def __init__(
        self,
        recheck: float = 1.0,
        final_recheck: float = 60.0,
        capacity: int = 64,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.recheck, self.final_recheck, self.capacity = recheck, final_recheck, capacity
        self._clock = clock
        self._entries: dict[str, _Entry] = {}
        self._lock = threading.Lock()
        self._opening: dict[str, threading.Lock] = {}
        self._refreshing: set[str] = set()
        self._retired: list[_Entry] = []

    def peek(self, slide_id: str) -> tuple[SlideRef, Pyramid] | None:
        """The slide's reference and open pyramid when they were described recently enough to be used as they
        are (no database read, no file opened: safe on the event loop); ``None`` when :meth:`get` must run."""
        return self.peek_due(slide_id)[0]

    def peek_due(self, slide_id: str) -> tuple[tuple[SlideRef, Pyramid] | None, bool]:
        """:meth:`peek`, and whether the caller is the one to re-describe the slide ahead of time
        (``get(rt, slide_id, refresh=True)``, off the event loop): true once, after half of the recheck
        period, so that a slide being viewed is re-described before its tiles find it stale. Lock-free: one
        dict read."""
        entry = self._entries.get(slide_id)
        if entry is None:
            return None, False
        limit = self.final_recheck if entry.ref.final else self.recheck
        age = self._clock() - entry.checked
        if age >= limit:
            return None, False
        if age < limit / 2 or slide_id in self._refreshing:
            return (entry.ref, entry.pyramid), False
        with self._lock:
            if slide_id in self._refreshing:
                return (entry.ref, entry.pyramid), False
            self._refreshing.add(slide_id)
        return (entry.ref, entry.pyramid), True

    def get(self, rt: Runtime, slide_id: str, *, refresh: bool = False) -> tuple[SlideRef, Pyramid] | None:
        """The slide's current reference and open pyramid, or ``None`` when the slide does not exist;
        ``refresh``: described again even when it was described recently."""
        try:
            return self._get(rt, slide_id, refresh)
        finally:
            if refresh:
                with self._lock:
                    self._refreshing.discard(slide_id)

    def _get(self, rt: Runtime, slide_id: str, refresh: bool) -> tuple[SlideRef, Pyramid] | None:
        now = float("inf") if refresh else self._clock()
        with self._lock:
            entry = self._entries.get(slide_id)
            if entry is not None and now - entry.checked < (
                self.final_recheck if entry.ref.final else self.recheck
            ):
                return entry.ref, entry.pyramid
            opening = self._opening.setdefault(slide_id, threading.Lock())
        with opening:  # one thread opens a slide; the others wait for it rather than open it too
            with self._lock:
                entry = self._entries.get(slide_id)
                if entry is not None and now - entry.checked < (
                    self.final_recheck if entry.ref.final else self.recheck
                ):
                    return entry.ref, entry.pyramid
            ref = resolver().describe(rt, slide_id)
            if ref is None:
                self._drop(slide_id)
                return None
            if entry is not None and entry.ref.version == ref.version:
                with self._lock:
                    entry.ref, entry.checked = ref, self._clock()
                return ref, entry.pyramid
            pyramid = resolver().open(rt, ref)
            with self._lock:
                old = self._entries.pop(slide_id, None)
                self._entries[slide_id] = _Entry(ref, pyramid, self._clock())
                if old is not None:
                    self._retire(old)
                while len(self._entries) > self.capacity:
                    self._retire(self._entries.pop(next(iter(self._entries))))
            if old is not None:
                log.info(
                    "event=slide_view_switched slide=%s from=%s to=%s", slide_id, old.ref.version, ref.version
                )
            self._close_retired()
            return ref, pyramid

    def _retire(self, entry: _Entry) -> None:
        # Requests that got this pyramid a moment ago may still be reading it: it is closed a while later.
        entry.checked = self._clock()
        self._retired.append(entry)

    def _close_retired(self) -> None:
        with self._lock:
            due = [e for e in self._retired if self._clock() - e.checked > RETIRED_GRACE]
            self._retired = [e for e in self._retired if e not in due]
        for entry in due:
            self._close(entry)

    def _drop(self, slide_id: str) -> None:
        with self._lock:
            old = self._entries.pop(slide_id, None)
            if old is not None:
                self._retire(old)

    @staticmethod
    def _close(entry: _Entry) -> None:
        close = getattr(entry.pyramid, "close", None)
        if close is not None:
            try:
                close()
            except Exception:  # a pyramid failing to close must not fail the request that replaced it
                log.exception("event=slide_view_close_failed slide=%s", entry.ref.slide_id)

    def clear(self) -> None:
        """Close every open pyramid."""
        with self._lock:
            entries = [*self._entries.values(), *self._retired]
            self._entries.clear()
            self._retired.clear()
        for entry in entries:
            self._close(entry)
