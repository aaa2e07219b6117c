"""A person's record across the platform, as the portals show it: one list of dated items (studies, slides,
reports, frozen-section verdicts, screening episodes) drawn from every module.

The portal lives in ``platform`` but the data it shows lives in the modules above it, so it defines the
shape of an item and a registry of sources, and each module registers the source for its own kind of item
(``register_source("document", documents_source)``) at start-up. A source is handed the caller, the master
patient and the policy's facts (already checked: the caller may read this master's record) and must itself
keep to the policy's read scope (sites, consent, confidentiality), as every read does: the portal filters
nothing after the fact.

The professional timeline ("ligne de vie") takes every item; the patient portal takes only those a source
marks ``released`` (a final report, a signed verdict, a sent screening letter).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

from archipel.platform import access
from archipel.platform.authn import Principal
from archipel.platform.db import Database

log = logging.getLogger("archipel.portal")


@dataclass(frozen=True)
class RecordItem:
    """One dated entry of a person's record.

    ``kind``: what it is (``study``, ``slide``, ``document``, ``frozen-section``, ``screening-episode``...);
    ``ident``: its identifier within that kind (a Study Instance UID, a slide or document id); ``site``: the
    producing site; ``when``: its date, for ordering; ``title`` and ``status``: what a reader sees in a list;
    ``released``: whether the patient may see it in the patient portal; ``links``: pages or API routes that
    open it (``{"viewer": "/app/viewer.html?slide=3"}``); ``detail``: kind-specific fields for the page.
    """

    kind: str
    ident: str
    site: str
    when: datetime | date | None
    title: str
    status: str = ""
    released: bool = False
    links: Mapping[str, str] = field(default_factory=dict)
    detail: Mapping[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """The item as JSON-ready values (dates in ISO 8601)."""
        return {
            "kind": self.kind,
            "id": self.ident,
            "site": self.site,
            "date": self.when.isoformat() if self.when is not None else None,
            "title": self.title,
            "status": self.status,
            "released": self.released,
            "links": dict(self.links),
            "detail": dict(self.detail),
        }


#: ``source(db, principal, master_id, facts)``: the items of one kind for the master (merges followed by the
#: caller), within the principal's read scope.
RecordSource = Callable[[Database, Principal, int, access.Facts], Iterable[RecordItem]]
_sources: dict[str, RecordSource] = {}


def register_source(kind: str, source: RecordSource) -> None:
    """Make ``source`` the provider of ``kind`` items; registering a kind again replaces its source."""
    _sources[kind] = source


def registered_kinds() -> list[str]:
    """The kinds of item some module provides."""
    return sorted(_sources)


def _sort_key(item: RecordItem) -> tuple[str, str, str]:
    when = item.when.isoformat() if item.when is not None else ""
    return (when, item.kind, item.ident)


def record(
    db: Database,
    principal: Principal,
    master_id: int,
    facts: access.Facts,
    *,
    released_only: bool = False,
    kinds: Iterable[str] | None = None,
) -> list[RecordItem]:
    """Every item of the master's record the caller may see, newest first; only released ones when
    ``released_only`` (the patient portal). The caller has run the policy on the master's record already."""
    wanted = set(kinds) if kinds is not None else None
    items: list[RecordItem] = []
    for kind, source in sorted(_sources.items()):
        if wanted is not None and kind not in wanted:
            continue
        items.extend(i for i in source(db, principal, master_id, facts) if i.released or not released_only)
    items.sort(key=_sort_key, reverse=True)
    return items
