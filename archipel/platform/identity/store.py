"""Keeping the in-memory :class:`LinkIndex` in step with the tables, and writing a batch of decisions.

One index per database URL lives in this process. Every MPI write transaction holds the MPI lock (SQLite's
single writer, or a PostgreSQL advisory lock), bumps ``identity_state.gen`` and stamps the rows it writes with
it; before deciding anything, a process loads the rows stamped after the generation it last saw.
"""

from __future__ import annotations

import json
import logging
import threading
from dataclasses import dataclass, field
from operator import itemgetter
from typing import Any

from sqlalchemy import Connection, event, func, insert, select, text, update
from sqlalchemy.orm import Session

from archipel.platform.db import utcnow
from archipel.platform.identity.ins import usable_for_linking
from archipel.platform.identity.linker import LinkIndex
from archipel.platform.identity.model import FellegiSunter
from archipel.platform.identity.models import (
    IdentityState,
    LinkDecision,
    LocalIdentity,
    MasterPatient,
    NoLink,
    ReviewItem,
)
from archipel.platform.identity.normalize import Traits, make_traits

log = logging.getLogger("archipel.identity")

_MPI_LOCK_KEY = 0x4D504931  # "MPI1"
_indexes: dict[str, LinkIndex] = {}
_indexes_lock = threading.Lock()
#: Serialises MPI work of this process's threads on one index (the database lock covers other processes).
process_lock = threading.RLock()


def traits_of(row: Any) -> Traits:
    """The comparison traits of a ``local_identities`` row (ORM object or result row)."""
    return make_traits(
        row.issuer,
        row.local_id,
        birth_name=row.birth_name,
        used_name=row.used_name,
        given_names=row.given_names,
        birth_date=row.birth_date,
        sex=row.sex,
        birth_place=row.birth_place,
        postcode=row.postcode,
        city=row.city,
        phone=row.phone,
        qualified_ins=row.ins if usable_for_linking(row.ins, row.ins_status) else "",
        any_ins=row.ins,
    )


def lock_mpi(s: Session) -> None:
    """Take the MPI write lock for this transaction (SQLite: the caller's ``db.write()`` holds it already)."""
    if s.get_bind().dialect.name == "postgresql":
        s.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _MPI_LOCK_KEY})


def index_for(s: Session) -> LinkIndex:
    """This process's index for the session's database, brought up to date (call with the MPI lock held)."""
    url = s.get_bind().engine.url.render_as_string(hide_password=False)
    with _indexes_lock:
        index = _indexes.get(url)
        if index is None:
            index = _indexes[url] = LinkIndex(FellegiSunter.prior())
    refresh(s, index)
    return index


def forget_on_rollback(s: Session, index: LinkIndex) -> None:
    """Invalidate ``index`` if the session's transaction rolls back (the index already holds its changes)."""
    if s.info.get("mpi_rollback_guard"):
        return
    s.info["mpi_rollback_guard"] = True

    def rolled_back(_session: Session) -> None:
        invalidate(index)

    event.listen(s, "after_rollback", rolled_back)


def forget_indexes() -> None:
    """Drop every in-memory index (tests; after a failed transaction the index is rebuilt from the tables)."""
    with _indexes_lock:
        _indexes.clear()


def invalidate(index: LinkIndex) -> None:
    """Mark ``index`` as unknown: the next use reloads it fully from the tables."""
    model, model_json = index.model, index.model_json
    index.__init__(model, index.link_at, index.review_at)  # type: ignore[misc]
    index.model_json = model_json


def _state(s: Session) -> IdentityState:
    state = s.get(IdentityState, 1)
    if state is None:
        state = IdentityState(id=1, gen=0, model="", model_records=0, updated_at=utcnow())
        s.add(state)
        s.flush()
    return state


_LOCAL_COLUMNS = (
    LocalIdentity.id,
    LocalIdentity.issuer,
    LocalIdentity.local_id,
    LocalIdentity.birth_name,
    LocalIdentity.used_name,
    LocalIdentity.given_names,
    LocalIdentity.birth_date,
    LocalIdentity.sex,
    LocalIdentity.birth_place,
    LocalIdentity.postcode,
    LocalIdentity.city,
    LocalIdentity.phone,
    LocalIdentity.ins,
    LocalIdentity.ins_status,
    LocalIdentity.master_id,
)


def refresh(s: Session, index: LinkIndex) -> None:
    """Load into ``index`` what other transactions wrote since it last looked."""
    state = _state(s)
    if state.model and state.model != index.model_json:
        index.model = FellegiSunter.from_json(state.model)
        index.model_json = state.model
    if index.gen == state.gen:
        return
    since = index.gen
    if since < 0:
        invalidate(index)
    rows = s.execute(select(*_LOCAL_COLUMNS).where(LocalIdentity.gen > since)).yield_per(20000)
    for row in rows:
        index.put(row.id, traits_of(row), row.master_id)
    for a, b in s.execute(select(NoLink.a_pk, NoLink.b_pk).where(NoLink.gen > since)):
        index.forbid(a, b)
    top_local = s.execute(select(func.max(LocalIdentity.id))).scalar() or 0
    top_master = s.execute(select(func.max(MasterPatient.id))).scalar() or 0
    index.next_local = max(index.next_local, top_local + 1)
    index.next_master = max(index.next_master, top_master + 1)
    index.gen = state.gen


def bump(s: Session, index: LinkIndex) -> int:
    """Start a new generation for this transaction's writes and return it."""
    state = _state(s)
    state.gen = state.gen + 1
    state.updated_at = utcnow()
    index.gen = state.gen
    return state.gen


def save_model(s: Session, index: LinkIndex, model: FellegiSunter) -> None:
    """Store a newly estimated model as the MPI's current one."""
    state = _state(s)
    state.model = index.model_json = model.to_json()
    state.model_records = model.n_records
    index.model = model


def model_records(s: Session) -> int:
    """How many identities the current model was estimated on (0: the priors)."""
    return _state(s).model_records


@dataclass
class Batch:
    """Rows to write for a run of decisions, flushed with one multi-row statement per table."""

    gen: int
    actor: str = "linker"
    masters: list[dict[str, Any]] = field(default_factory=list)
    new_locals: list[dict[str, Any]] = field(default_factory=list)
    changed_locals: list[dict[str, Any]] = field(default_factory=list)
    decisions: list[dict[str, Any]] = field(default_factory=list)
    reviews: list[dict[str, Any]] = field(default_factory=list)

    def new_master(self, master_id: int) -> None:
        """Create master ``master_id``."""
        self.masters.append(
            {"id": master_id, "active": True, "merged_into": None, "gen": self.gen, "created_at": utcnow()}
        )

    def decision(
        self,
        local_pk: int,
        master_id: int,
        previous: int | None,
        action: str,
        status: str,
        score: float | None,
        contributions: dict[str, float] | str,
        reason: str,
    ) -> None:
        """Record one link decision in the history (``contributions`` as a dict, or already as JSON)."""
        self.decisions.append(
            {
                "local_pk": local_pk,
                "master_id": master_id,
                "previous_master_id": previous,
                "action": action,
                "status": status,
                "score": score,
                "contributions": contributions if isinstance(contributions, str) else _dumps(contributions),
                "reason": reason,
                "actor": self.actor,
                "at": utcnow(),
            }
        )

    def review(
        self,
        local_pk: int,
        candidate: int,
        score: float | None,
        contributions: dict[str, float] | str,
        reason: str,
    ) -> None:
        """Open a review item."""
        self.reviews.append(
            {
                "local_pk": local_pk,
                "candidate_master_id": candidate,
                "score": score,
                "contributions": contributions if isinstance(contributions, str) else _dumps(contributions),
                "reason": reason,
                "state": "open",
                "resolution": "",
                "resolved_by": "",
                "created_at": utcnow(),
            }
        )

    def flush(self, s: Session) -> None:
        """Write everything collected so far."""
        conn = s.connection()
        if self.masters:
            insert_many(conn, MasterPatient.__table__, self.masters)
        if self.new_locals:
            insert_many(conn, LocalIdentity.__table__, self.new_locals)
        if self.changed_locals:
            for row in self.changed_locals:
                s.execute(
                    update(LocalIdentity).where(LocalIdentity.id == row["id"]),
                    {k: v for k, v in row.items() if k != "id"},
                )
        if self.decisions:
            insert_many(conn, LinkDecision.__table__, self.decisions)
        if self.reviews:
            insert_many(conn, ReviewItem.__table__, self.reviews)
        self.masters, self.new_locals, self.changed_locals = [], [], []
        self.decisions, self.reviews = [], []


def insert_many(conn: Connection, table: Any, rows: list[dict[str, Any]]) -> None:
    """Insert ``rows`` (dicts with the same keys) with one DB-API ``executemany``.

    SQLAlchemy's executemany builds and processes parameters per row and per column; here each column's bind
    processor runs once per distinct value (timestamps are shared by a whole batch), which is most of the cost
    of writing 10,000 identities a second.
    """
    dialect = conn.dialect
    keys = list(rows[0])
    compiled = _compiled_insert(dialect, table, tuple(keys))
    processors: list[tuple[str, Any]] = []
    for key in keys:
        proc = table.c[key].type._cached_bind_processor(dialect)
        if proc is not None:
            processors.append((key, proc))
    for key, proc in processors:
        cache: dict[Any, Any] = {}
        for row in rows:
            value = row[key]
            if value is None:
                continue
            done = cache.get(value, _UNSET)
            if done is _UNSET:
                done = cache[value] = proc(value)
            row[key] = done
    if compiled.positional:
        order = compiled.positiontup or []
        pick = itemgetter(*order)
        params: list[Any] = (
            [pick(row) for row in rows] if len(order) > 1 else [(row[order[0]],) for row in rows]
        )
    else:
        params = rows
    conn.exec_driver_sql(str(compiled), params)


_UNSET = object()
_inserts: dict[tuple[str, str, tuple[str, ...]], Any] = {}


def _compiled_insert(dialect: Any, table: Any, keys: tuple[str, ...]) -> Any:
    """The INSERT of ``keys`` into ``table``, compiled once per dialect: compiling costs more than writing one
    identity (the archive registers them one at a time)."""
    cache_key = (dialect.name, table.name, keys)
    compiled = _inserts.get(cache_key)
    if compiled is None:
        compiled = _inserts[cache_key] = insert(table).compile(dialect=dialect, column_keys=list(keys))
    return compiled


def _dumps(contributions: dict[str, float]) -> str:
    return json.dumps(contributions, separators=(",", ":"), allow_nan=False) if contributions else "{}"
