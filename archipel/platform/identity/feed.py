"""Identities that arrive with objects: every stored object creates or updates its local identity.

A source of objects (the archive: DIMSE C-STORE, STOW-RS, imports) calls :meth:`IdentityFeed.note` with the
identity each object names. A series is hundreds of objects of one patient, so the feed remembers what each
identity last said and goes to the database only when an identity is new or its demographics changed.

How a source's update is applied (what a source does not say never erases what the MPI knows):

* fields the source leaves empty keep their value; fields it fills replace it;
* a field the source sent malformed (an impossible birth date, an INS with a wrong key) is left out and logged
  by name, and the rest is registered: the object must still be linked;
* the INS: the same INS again never lowers the status the MPI holds (DICOM cannot state one, so it arrives
  ``PROV``); a different INS replaces it with the status the source states;
* an identity with neither name nor INS is accepted (it gets a master of its own);
* the issuer (the producing site) is registered the first time it appears.

The change is then linked by the MPI's rules (:mod:`archipel.platform.identity.service`): an identity that an
officer placed, or that shares its master with others, keeps its master.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import replace
from typing import Any

from sqlalchemy import bindparam, select, tuple_
from sqlalchemy.orm import Session

from archipel.platform import audit
from archipel.platform.db import Database
from archipel.platform.identity import store
from archipel.platform.identity.ins import InsError, InsStatus, normalize_ins, parse_status
from archipel.platform.identity.intake import (
    FIELD_NAMES,
    IdentityError,
    LinkOutcome,
    LocalIdentityInput,
    add_issuer,
    clean,
    known_issuers,
)
from archipel.platform.identity.models import LocalIdentity
from archipel.platform.identity.normalize import DateError, parse_birth_date, parse_sex
from archipel.platform.identity.service import LINKER, PURPOSE, register_clean

log = logging.getLogger("archipel.identity")

_COLUMNS = tuple(getattr(LocalIdentity, name) for name in FIELD_NAMES)
#: Fields validated on their own, and how: a source's malformed value is dropped, not the whole identity.
_CHECKS: tuple[tuple[str, Any], ...] = (
    ("birth_date", parse_birth_date),
    ("sex", parse_sex),
    ("ins", normalize_ins),
    ("ins_status", parse_status),
)


def source_values(inp: LocalIdentityInput) -> dict[str, str]:
    """The cleaned values of a source's identity, with any malformed field left out (logged by name).

    Raises :class:`IdentityError` only if what remains cannot be an identity (no issuer or local ID, text
    too long or with control characters).
    """
    try:
        return clean(inp, require_name=False)
    except IdentityError:
        pass
    dropped: dict[str, str] = {}
    for name, check in _CHECKS:
        try:
            check(getattr(inp, name))
        except (DateError, InsError, ValueError):
            dropped[name] = ""
    if dropped.get("ins") is not None:
        dropped["ins_status"] = ""
    values = clean(replace(inp, **dropped), require_name=False)
    if dropped:
        log.warning(
            "event=identity_fields_dropped issuer=%s fields=%s", inp.issuer, ",".join(sorted(dropped))
        )
    return values


def merged(current: dict[str, str], incoming: dict[str, str]) -> dict[str, str]:
    """``current`` updated by a source's ``incoming`` values, by the rules in this module's docstring."""
    out = dict(current)
    for name in FIELD_NAMES:
        if name != "ins_status" and incoming[name]:
            out[name] = incoming[name]
    if incoming["ins"]:
        same = incoming["ins"] == current["ins"]
        if not same or current["ins_status"] == InsStatus.PROV:
            out["ins_status"] = incoming["ins_status"] or InsStatus.PROV.value
    return out


_ONE = select(*_COLUMNS).where(
    LocalIdentity.issuer == bindparam("issuer"), LocalIdentity.local_id == bindparam("local_id")
)


def _current(s: Session, keys: list[tuple[str, str]]) -> dict[tuple[str, str], dict[str, str]]:
    found: dict[tuple[str, str], dict[str, str]] = {}
    if len(keys) == 1:  # the archive's case: one statement whose compiled form is cached
        row = s.execute(_ONE, {"issuer": keys[0][0], "local_id": keys[0][1]}).first()
        if row is not None:
            found[keys[0]] = {name: getattr(row, name) or "" for name in FIELD_NAMES}
        return found
    for start in range(0, len(keys), 500):
        part = keys[start : start + 500]
        rows = s.execute(
            select(*_COLUMNS).where(tuple_(LocalIdentity.issuer, LocalIdentity.local_id).in_(part))
        )
        for row in rows:
            values = {name: getattr(row, name) or "" for name in FIELD_NAMES}
            found[(values["issuer"], values["local_id"])] = values
    return found


def _changes(s: Session, incoming: list[dict[str, str]]) -> list[dict[str, str]]:
    """The identities to register: new ones, and known ones that ``incoming`` changes (merged)."""
    keyed: dict[tuple[str, str], dict[str, str]] = {}
    for values in incoming:
        key = (values["issuer"], values["local_id"])
        keyed[key] = merged(keyed[key], values) if key in keyed else values
    current = _current(s, list(keyed))
    out: list[dict[str, str]] = []
    for key, values in keyed.items():
        now = current.get(key)
        if now is None:
            out.append(values)
            continue
        update = merged(now, values)
        if update != now:
            out.append(update)
    return out


def update_identities(
    db: Database, inputs: Iterable[LocalIdentityInput], *, audited: bool = True
) -> list[LinkOutcome]:
    """Create or update the local identities a source describes, in one transaction; return the outcomes of
    those that were new or changed (unchanged ones are not written).

    Raises :class:`IdentityError` if one of them cannot be an identity at all (nothing written then).
    """
    incoming = [source_values(inp) for inp in inputs]
    if not incoming:
        return []
    with db.sessions() as s:
        if not _changes(s, incoming):
            return []
    with store.process_lock, db.write() as s:
        # Read again under the lock: another writer may have changed these identities meanwhile.
        changed = _changes(s, incoming)
        if not changed:
            return []
        for issuer in sorted({v["issuer"] for v in changed} - known_issuers(s)):
            add_issuer(s, issuer)
            log.info("event=issuer_registered issuer=%s by=source", issuer)
        outcomes = register_clean(s, changed, audited=audited)
        if not audited:
            audit.append(
                s,
                LINKER,
                audit.IMPORT,
                "identity-register",
                purpose=PURPOSE,
                detail=f"identities={len(outcomes)} source=recovery",
            )
        return outcomes


class IdentityFeed:
    """Keeps the MPI current with the identities named by stored objects, going to the database only when an
    identity is new or what its source says changed.

    The memory of what each identity last said is bounded (least recently seen forgotten first); forgetting
    only costs one more comparison with the database.
    """

    def __init__(self, limit: int = 100_000) -> None:
        self.limit = limit
        self._seen: OrderedDict[tuple[str, str], LocalIdentityInput] = OrderedDict()
        self._lock = threading.Lock()

    def knows(self, inp: LocalIdentityInput) -> bool:
        """Whether ``inp`` is exactly what this identity said last time (then :meth:`note` writes nothing)."""
        key, said = (inp.issuer, inp.local_id), inp  # frozen, all text: compared field by field
        with self._lock:
            if self._seen.get(key) == said:
                self._seen.move_to_end(key)
                return True
        return False

    def note(self, db: Database, inp: LocalIdentityInput) -> LinkOutcome | None:
        """Make sure the local identity ``inp`` describes is registered with these demographics; return the
        outcome when something was written, ``None`` when the MPI already knew it so.

        Raises :class:`IdentityError` when ``inp`` cannot be an identity (no issuer, no local ID...).
        """
        if self.knows(inp):
            return None
        key, said = (inp.issuer, inp.local_id), inp  # frozen, all text: compared field by field
        outcomes = update_identities(db, [inp])
        with self._lock:
            self._seen[key] = said
            self._seen.move_to_end(key)
            while len(self._seen) > self.limit:
                self._seen.popitem(last=False)
        return outcomes[0] if outcomes else None

    def forget(self) -> None:
        """Forget what every identity said (the next object of each is compared with the database again)."""
        with self._lock:
            self._seen.clear()


_feeds: dict[str, IdentityFeed] = {}
_feeds_lock = threading.Lock()


def feed_for(db: Database) -> IdentityFeed:
    """This process's feed for ``db`` (one per database, shared by every archive writer of the process)."""
    with _feeds_lock:
        feed = _feeds.get(db.url)
        if feed is None:
            feed = _feeds[db.url] = IdentityFeed()
        return feed


def forget_feeds() -> None:
    """Drop every feed's memory (tests)."""
    with _feeds_lock:
        _feeds.clear()
