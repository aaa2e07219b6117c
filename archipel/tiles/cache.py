"""The tile service's two in-process caches: encoded tiles, bounded in bytes, and access grants, bounded in time.

Both are per process (each uvicorn worker has its own); they hold nothing that cannot be recomputed.
"""

from __future__ import annotations

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
        """The cached item, marked as just used; ``None`` when absent."""
        with self._lock:
            item = self._items.get(key)
            if item is None:
                self.misses += 1
                return None
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


class GrantCache:
    """Access decisions for (session, slide), remembered for ``ttl`` seconds.

    Tiles come by the hundred per minute of viewing; asking the policy for each (a handful of queries) would
    dominate their latency. A decision is remembered briefly, so that a revoked care relationship or an ended
    break-the-glass takes effect within ``ttl`` seconds.
    """

    def __init__(
        self, ttl: float = 60.0, capacity: int = 10_000, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.ttl, self.capacity = ttl, capacity
        self._clock = clock
        self._items: OrderedDict[Hashable, tuple[float, str | None]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: Hashable) -> tuple[bool, str] | None:
        """``(allowed, reason)`` when a fresh decision is cached, else ``None``."""
        with self._lock:
            found = self._items.get(key)
            if found is None:
                return None
            when, refusal = found
            if self._clock() - when >= self.ttl:
                del self._items[key]
                return None
            return (refusal is None, refusal or "")

    def put(self, key: Hashable, allowed: bool, reason: str = "") -> None:
        """Remember a decision (``reason`` is the refusal's)."""
        with self._lock:
            self._items.pop(key, None)
            self._items[key] = (self._clock(), None if allowed else reason)
            while len(self._items) > self.capacity:
                self._items.popitem(last=False)

    def clear(self) -> None:
        """Forget every decision."""
        with self._lock:
            self._items.clear()


class RecentPrincipals:
    """Who sent a credential (bearer token or session cookie) that was verified less than ``ttl`` seconds ago.

    A viewer sends dozens of tiles a second with one credential; verifying it (signature, then the session row
    in the database) for each tile cost more than sending the tile. Only credentials that passed the full check
    are kept, so that a bad one is still refused and audited every time; a logout or an ended session reaches
    the tile route within ``ttl`` seconds.
    """

    def __init__(
        self, ttl: float = 2.0, capacity: int = 10_000, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.ttl, self.capacity = ttl, capacity
        self._clock = clock
        self._items: OrderedDict[Hashable, tuple[float, object]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: Hashable) -> object | None:
        """The principal verified for ``key`` less than ``ttl`` seconds ago, else ``None``."""
        with self._lock:
            found = self._items.get(key)
            if found is None:
                return None
            if self._clock() - found[0] >= self.ttl:
                del self._items[key]
                return None
            return found[1]

    def put(self, key: Hashable, principal: object) -> None:
        """Remember that ``key`` was just verified as ``principal``."""
        with self._lock:
            self._items.pop(key, None)
            self._items[key] = (self._clock(), principal)
            while len(self._items) > self.capacity:
                self._items.popitem(last=False)
