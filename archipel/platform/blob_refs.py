"""Who references stored blobs: a registry that the modules owning blob references fill in.

The platform keeps the storage lifecycle (tiers, replica, fixity) but must not import the modules whose rows
name blobs (radiology's instances and documents, wsi's slide sources). Each of them registers a
:class:`ReferenceSource` at import: a SELECT giving, per referencing row, the blob's key, its expected SHA-256, its
size and the time the data was last active (a study's last received instance). The lifecycle works on the union
of these SELECTs in SQL, so a region's millions of rows never pass through Python at once.

Blob stores are named: ``blobs`` is the runtime's store (the archive's instances and documents); a module with a
store of its own registers how to open it (``slide-sources``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Select, Subquery, literal, union_all

from archipel.platform.settings import Settings
from archipel.platform.storage import BlobStore

#: What a source's ``select()`` returns: rows of (key, sha256, size, last_active).
ReferenceSelect = Select[str, str, int, datetime]

#: The runtime's blob store: the only one with hot and archive tiers.
MAIN_STORE = "blobs"


@dataclass(frozen=True)
class ReferenceSource:
    """Rows of one kind that name blobs of ``store``.

    ``select()`` returns a SELECT with the labelled columns ``key``, ``sha256``, ``size`` and ``last_active``
    (a timezone-naive UTC datetime, the column type the index uses).
    """

    name: str
    store: str
    select: Callable[[], ReferenceSelect]


_sources: dict[str, ReferenceSource] = {}
_stores: dict[str, Callable[[Settings], BlobStore]] = {}


def register_source(name: str, store: str, select: Callable[[], ReferenceSelect]) -> None:
    """Declare that the rows ``select()`` returns reference blobs of ``store``; registering ``name`` again
    replaces the earlier entry (modules are imported more than once under tests)."""
    _sources[name] = ReferenceSource(name, store, select)


def register_store(name: str, opener: Callable[[Settings], BlobStore]) -> None:
    """Declare how to open the blob store named ``name`` (other than :data:`MAIN_STORE`)."""
    if name == MAIN_STORE:
        raise ValueError(f"the store {MAIN_STORE!r} is the runtime's own")
    _stores[name] = opener


def sources(store: str | None = None) -> list[ReferenceSource]:
    """The registered sources, by name; with ``store``, only those of that store."""
    return [_sources[n] for n in sorted(_sources) if store is None or _sources[n].store == store]


def store_names() -> list[str]:
    """Every store that some registered source references, :data:`MAIN_STORE` first."""
    names = {s.store for s in _sources.values()} | {MAIN_STORE}
    return [MAIN_STORE, *sorted(names - {MAIN_STORE})]


def store_opener(name: str) -> Callable[[Settings], BlobStore]:
    """How to open the store ``name``; raises :class:`KeyError` when no module registered it."""
    try:
        return _stores[name]
    except KeyError:
        raise KeyError(f"no blob store registered under the name {name!r}") from None


def references(store: str) -> Subquery | None:
    """Every reference to a blob of ``store`` as one subquery (columns ``key``, ``sha256``, ``size``,
    ``last_active``, ``source``), or ``None`` when no source references that store."""
    parts = [s.select().add_columns(literal(s.name).label("source")) for s in sources(store)]
    if not parts:
        return None
    if len(parts) == 1:
        return parts[0].subquery("refs")
    return union_all(*parts).subquery("refs")
