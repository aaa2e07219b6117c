"""The tile service's two in-process caches: encoded tiles, bounded in bytes, and access grants, bounded in time.

Both are per process (each uvicorn worker has its own); they hold nothing that cannot be recomputed.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass


@dataclass(frozen=True)
class CachedTile:
    """An encoded tile (or IIIF image) as it is sent: its bytes, media type and where it came from (``stored``:
    a stored tile sent unchanged; ``encoded``: rendered here)."""

    data: bytes
    media_type: str
    origin: str = "encoded"


class ByteLRU:
    """A least-recently-used map from keys to :class:`CachedTile` whose payloads total at most ``max_bytes``.

    An item larger than the whole bound is not kept. ``max_bytes`` 0 disables the cache.
    """

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.bytes = 0
        self.hits = self.misses = 0
        self._items: OrderedDict[Hashable, CachedTile] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: Hashable) -> CachedTile | None:
        """The cached item, marked as just used; ``None`` when absent.

        Without the lock: a dict read and ``move_to_end`` are each atomic under the GIL, and this runs on the
        event loop for every tile; only writers (which evict) take the lock."""
        item = self._items.get(key)
        if item is None:
            self.misses += 1
            return None
        with contextlib.suppress(KeyError):  # evicted by a writer in between: still a good answer
            self._items.move_to_end(key)
        self.hits += 1
        return item

    def put(self, key: Hashable, item: CachedTile) -> None:
        """Keep ``item``, evicting the least recently used until the total fits."""
        size = len(item.data)
        if size > self.max_bytes:
            return
        with self._lock:
            old = self._items.pop(key, None)
            if old is not None:
                self.bytes -= len(old.data)
            self._items[key] = item
            self.bytes += size
            while self.bytes > self.max_bytes:
                _, evicted = self._items.popitem(last=False)
                self.bytes -= len(evicted.data)

    def __len__(self) -> int:
        return len(self._items)

    def clear(self) -> None:
        """Forget everything."""
        with self._lock:
            self._items.clear()
            self.bytes = 0


class FreshMap:
    """Values remembered for ``ttl`` seconds from when they were (re)computed, with a refresh ahead of expiry.

    :meth:`lookup` gives the value while it is fresh and, once per half-life, says that it is due for a refresh:
    the one caller told so recomputes it (off the event loop) and :meth:`put` s it back, while every other caller
    goes on with the value it has. A steady stream of requests therefore never finds the value expired, and never
    piles up to recompute it at once; a value nobody asks for still ends ``ttl`` seconds after it was computed.
    Reads take no lock (one dict read under the GIL); writers do.
    """

    def __init__(
        self, ttl: float, capacity: int = 10_000, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.ttl, self.capacity = ttl, capacity
        self._clock = clock
        self._items: OrderedDict[Hashable, tuple[float, object]] = OrderedDict()
        self._refreshing: set[Hashable] = set()
        self._lock = threading.Lock()

    def lookup(self, key: Hashable) -> tuple[object | None, bool]:
        """``(value, due)``: the value computed less than ``ttl`` seconds ago (else ``None``), and whether the
        caller is the one to refresh it (true once, after half of ``ttl``, until the next :meth:`put`)."""
        found = self._items.get(key)
        if found is None:
            return None, False
        age = self._clock() - found[0]
        if age >= self.ttl:
            self.drop(key)
            return None, False
        if age < self.ttl / 2 or key in self._refreshing:
            return found[1], False
        with self._lock:
            if key in self._refreshing:
                return found[1], False
            self._refreshing.add(key)
        return found[1], True

    def get(self, key: Hashable) -> object | None:
        """The value computed less than ``ttl`` seconds ago, else ``None`` (no refresh asked)."""
        found = self._items.get(key)
        if found is None:
            return None
        if self._clock() - found[0] >= self.ttl:
            self.drop(key)
            return None
        return found[1]

    def put(self, key: Hashable, value: object) -> None:
        """Remember ``value`` as just computed (a refresh of ``key`` in progress is over)."""
        with self._lock:
            self._items.pop(key, None)
            self._items[key] = (self._clock(), value)
            self._refreshing.discard(key)
            while len(self._items) > self.capacity:
                evicted, _ = self._items.popitem(last=False)
                self._refreshing.discard(evicted)

    def drop(self, key: Hashable) -> None:
        """Forget ``key`` (a refresh of it in progress is over)."""
        with self._lock:
            self._items.pop(key, None)
            self._refreshing.discard(key)

    def clear(self) -> None:
        """Forget everything."""
        with self._lock:
            self._items.clear()
            self._refreshing.clear()


class GrantCache(FreshMap):
    """Access decisions for (session, slide), remembered for ``ttl`` seconds.

    Tiles come by the hundred per minute of viewing; asking the policy for each (a handful of queries) would
    dominate their latency. A decision is remembered briefly, so that a revoked care relationship or an ended
    break-the-glass takes effect within ``ttl`` seconds; while a slide is being viewed, an allowed decision is
    asked again in the background after half of ``ttl`` (:meth:`FreshMap.lookup`).
    """

    def __init__(
        self, ttl: float = 60.0, capacity: int = 10_000, clock: Callable[[], float] = time.monotonic
    ) -> None:
        super().__init__(ttl, capacity, clock)

    def decision(self, key: Hashable) -> tuple[tuple[bool, str] | None, bool]:
        """``((allowed, reason), due)`` when a fresh decision is cached (``due``: see :meth:`FreshMap.lookup`),
        else ``(None, False)``."""
        found, due = self.lookup(key)
        if found is None:
            return None, False
        return (found is True, "" if found is True else str(found)), due

    def get(self, key: Hashable) -> tuple[bool, str] | None:  # type: ignore[override]
        """``(allowed, reason)`` when a fresh decision is cached, else ``None``."""
        found = super().get(key)
        if found is None:
            return None
        return (found is True, "" if found is True else str(found))

    def put(self, key: Hashable, allowed: bool, reason: str = "") -> None:  # type: ignore[override]
        """Remember a decision (``reason`` is the refusal's)."""
        super().put(key, True if allowed else reason)


class RecentPrincipals(FreshMap):
    """Who sent a credential (bearer token or session cookie) that was verified less than ``ttl`` seconds ago.

    A viewer sends dozens of tiles a second with one credential; verifying it (signature, then the session row
    in the database) for each tile cost more than sending the tile. Only credentials that passed the full check
    are kept, so that a bad one is still refused and audited every time; a logout or an ended session reaches
    the tile route within ``ttl`` seconds. While tiles keep coming, the credential is verified again in the
    background after half of ``ttl`` (:meth:`FreshMap.lookup`), so that no tile waits for it.
    """

    def __init__(
        self, ttl: float = 2.0, capacity: int = 10_000, clock: Callable[[], float] = time.monotonic
    ) -> None:
        super().__init__(ttl, capacity, clock)
