"""The MPI's API for other modules: register a local identity, find its master, list a master's identities.

``register`` is what the archive calls when a study arrives; ``register_many`` is the same for a batch (CSV
imports, benchmarks), writing each chunk with one statement per table.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from archipel.platform import audit
from archipel.platform.authn import Principal
from archipel.platform.db import Database, utcnow
from archipel.platform.identity import store, training
from archipel.platform.identity.intake import (
    FIELD_NAMES,
    IdentityConflict,
    IdentityError,
    IdentityNotFound,
    LinkOutcome,
    LocalIdentityInput,
    UnknownIssuer,
    add_issuer,
    clean,
    known_issuers,
    to_traits,
    traits_of_input,
)
from archipel.platform.identity.linker import LinkIndex, blocking_keys
from archipel.platform.identity.models import LINKED, NEW, REVIEW, LocalIdentity
from archipel.platform.identity.normalize import Traits

__all__ = [
    "PURPOSE",
    "IdentityConflict",
    "IdentityError",
    "IdentityNotFound",
    "LinkOutcome",
    "LocalIdentityInput",
    "UnknownIssuer",
    "add_issuer",
    "clean",
    "known_issuers",
    "locals_of",
    "master_of",
    "prepare",
    "register",
    "register_clean",
    "register_many",
    "rematch",
    "traits_of_input",
]

log = logging.getLogger("archipel.identity")

PURPOSE = "identity-management"
LINKER = Principal(subject="mpi-linker", role="system", kind="system")


def register(target: Database | Session, inp: LocalIdentityInput) -> LinkOutcome:
    """Create or update the local identity ``(issuer, local_id)`` and link it; return where it stands.

    ``target`` is the database (one transaction of its own) or a session already in a write transaction.
    Raises :class:`IdentityError` (nothing written) for a malformed identity or an unknown issuer.
    """
    values = clean(inp)
    if isinstance(target, Database):
        # The process lock first, then the database's: the order every MPI writer takes them in.
        with store.process_lock, target.write() as s:
            return _register_in(s, [values], audited=True)[0]
    return _register_in(target, [values], audited=True)[0]


def register_clean(s: Session, batch: list[dict[str, str]], *, audited: bool) -> list[LinkOutcome]:
    """Register values already through :func:`clean` inside ``s``'s write transaction (the caller holds
    :data:`store.process_lock`); one audit event per identity if ``audited``."""
    return _register_in(s, batch, audited=audited)


def register_many(
    db: Database,
    rows: Iterable[LocalIdentityInput | tuple[int, LocalIdentityInput]],
    *,
    chunk: int = 5000,
    on_item: Callable[[int, LinkOutcome | None, str], None] | None = None,
) -> list[LinkOutcome | IdentityError]:
    """Register many identities, ``chunk`` per transaction; a bad one is reported and skipped.

    ``on_item(number, outcome, error)`` is called for each (``number`` from the tuple, else the position).
    """
    results: list[LinkOutcome | IdentityError] = []
    parts = _chunks(rows, chunk)
    for prepared in _prepared(parts):
        good: list[dict[str, str]] = []
        traits: list[Traits] = []
        numbers: list[int] = []
        for number, values, t, error in prepared:
            if values is None or t is None:
                results.append(IdentityError(error))
                if on_item:
                    on_item(number, None, error)
                continue
            good.append(values)
            traits.append(t)
            numbers.append(number)
        if not good:
            continue
        with store.process_lock, db.write() as s:
            try:
                outcomes = _register_in(s, good, audited=False, traits=traits)
            except UnknownIssuer as exc:
                outcomes = []
                for number in numbers:
                    results.append(exc)
                    if on_item:
                        on_item(number, None, str(exc))
            else:
                counts = {LINKED: 0, REVIEW: 0, NEW: 0}
                for o in outcomes:
                    counts[o.status] = counts.get(o.status, 0) + 1
                audit.append(
                    s,
                    LINKER,
                    audit.IMPORT,
                    "identity-register",
                    purpose=PURPOSE,
                    detail=" ".join(f"{k}={v}" for k, v in counts.items()),
                )
        for number, outcome in zip(numbers, outcomes, strict=False):
            results.append(outcome)
            if on_item:
                on_item(number, outcome, "")
    return results


Prepared = list[tuple[int, dict[str, str] | None, Traits | None, str]]


def prepare(part: list[tuple[int, LocalIdentityInput]]) -> Prepared:
    """Validate and normalise a chunk: ``(number, values, traits, "")`` or ``(number, None, None, error)``."""
    out: Prepared = []
    for number, inp in part:
        try:
            values = clean(inp)
        except IdentityError as exc:
            out.append((number, None, None, str(exc)))
        else:
            out.append((number, values, to_traits(values), ""))
    return out


def _prepared(parts: Iterator[list[tuple[int, LocalIdentityInput]]]) -> Iterator[Prepared]:
    # Preparing in a helper process was tried: pickling the results back costs as much as preparing them.
    return map(prepare, parts)


def _chunks(rows: Iterable[Any], size: int) -> Iterator[list[tuple[int, LocalIdentityInput]]]:
    part: list[tuple[int, LocalIdentityInput]] = []
    for position, row in enumerate(rows, 1):
        part.append(row if isinstance(row, tuple) else (position, row))
        if len(part) >= size:
            yield part
            part = []
    if part:
        yield part


def _register_in(
    s: Session, batch: list[dict[str, str]], *, audited: bool, traits: list[Traits] | None = None
) -> list[LinkOutcome]:
    with store.process_lock:
        store.lock_mpi(s)
        index = store.index_for(s)
        store.forget_on_rollback(s, index)
        try:
            return _link_batch(s, index, batch, audited, traits)
        except BaseException:
            store.invalidate(index)
            raise


def _link_batch(
    s: Session, index: LinkIndex, batch: list[dict[str, str]], audited: bool, traits: list[Traits] | None
) -> list[LinkOutcome]:
    issuers = {v["issuer"] for v in batch}
    unknown = issuers - known_issuers(s)
    if unknown:
        raise UnknownIssuer(
            f"unknown issuer {', '.join(sorted(unknown))}: register it with "
            "`archipel identity issuers add` first"
        )
    incoming = traits if traits is not None else [to_traits(v) for v in batch]
    _maybe_estimate(s, index, incoming)
    gen = store.bump(s, index)
    out = store.Batch(gen)
    outcomes: list[LinkOutcome] = []
    now = utcnow()
    for v, t in zip(batch, incoming, strict=True):
        pk = index.by_local.get(index.local_key(t.issuer, t.local_id))
        row = {**v, "gen": gen, "updated_at": now}
        if pk is None:
            outcomes.append(_link_new(index, out, t, row))
        else:
            outcomes.append(_relink(s, index, out, pk, t, row))
    out.flush(s)
    if audited:
        for o in outcomes:
            audit.append(
                s,
                LINKER,
                audit.PATIENT_RECORD,
                f"identity-{o.status}",
                purpose=PURPOSE,
                patient=f"{o.issuer}/{o.local_id}",
                master=o.master_id,
            )
    log.info("event=identity_batch size=%d gen=%d", len(batch), gen)
    return outcomes


_AUTO = {LINKED: "auto-linked", REVIEW: "auto-review", NEW: "auto-new"}


def _link_new(index: LinkIndex, out: store.Batch, t: Any, row: dict[str, Any]) -> LinkOutcome:
    keys = blocking_keys(t)
    decision = index.decide(t, keys=keys)
    pk = index.next_local
    index.next_local += 1
    if decision.status == LINKED and decision.master_id is not None:
        master_id = decision.master_id
    else:
        master_id = index.next_master
        index.next_master += 1
        out.new_master(master_id)
    contributions = store._dumps(decision.contributions)
    row.update(
        id=pk,
        master_id=master_id,
        status=decision.status,
        score=decision.score,
        contributions=contributions,
        decided_by="",
    )
    out.new_locals.append(row)
    out.decision(
        pk,
        master_id,
        None,
        _AUTO[decision.status],
        decision.status,
        decision.score,
        contributions,
        decision.reason,
    )
    if decision.status == REVIEW and decision.candidate_master_id is not None:
        out.review(pk, decision.candidate_master_id, decision.score, contributions, decision.reason)
    index.put(pk, t, master_id, keys)
    return LinkOutcome(t.issuer, t.local_id, master_id, decision.status, decision.score, True)


def _relink(
    s: Session, index: LinkIndex, out: store.Batch, pk: int, t: Any, row: dict[str, Any]
) -> LinkOutcome:
    """An update of a known identity: new traits; its link changes only if nobody placed it by hand and it is
    alone on its master (moving an identity away from others would split a person on a guess)."""
    current = s.execute(
        select(
            LocalIdentity.master_id, LocalIdentity.status, LocalIdentity.score, LocalIdentity.decided_by
        ).where(LocalIdentity.id == pk)
    ).one()
    master_id, status, score = current.master_id, current.status, current.score
    row["id"] = pk
    alone = len(index.members.get(master_id, ())) <= 1
    if not current.decided_by and alone and status != LINKED:
        decision = index.decide(t, self_pk=pk)
        if decision.status == LINKED and decision.master_id is not None and decision.master_id != master_id:
            out.decision(
                pk,
                decision.master_id,
                master_id,
                "auto-linked",
                LINKED,
                decision.score,
                decision.contributions,
                decision.reason,
            )
            master_id, status, score = decision.master_id, LINKED, decision.score
            row.update(contributions=store._dumps(decision.contributions))
        elif decision.status == REVIEW and decision.candidate_master_id is not None and status != REVIEW:
            out.review(
                pk, decision.candidate_master_id, decision.score, decision.contributions, decision.reason
            )
            status, score = REVIEW, decision.score
    row.update(master_id=master_id, status=status, score=score)
    out.changed_locals.append(row)
    index.put(pk, t, master_id)
    return LinkOutcome(t.issuer, t.local_id, master_id, status, score, False)


def _maybe_estimate(s: Session, index: LinkIndex, incoming: list[Any]) -> None:
    """Re-estimate the model when the identities known have grown fourfold since the last estimate, or by
    half since an attempt that failed (a single site's identities hold too few matches for EM)."""
    total = index.freq.total + len(incoming)
    estimated = store.model_records(s)
    if total < training.MIN_RECORDS or estimated >= training.STABLE_RECORDS:
        return
    if total < 4 * estimated or total < 1.5 * index.estimated_at:
        return
    index.estimated_at = total
    model = training.estimate_from([*index.traits.values(), *incoming])
    if model is None:
        log.info("event=identity_model_not_estimated records=%d", total)
        return
    store.save_model(s, index, model)
    log.info(
        "event=identity_model_estimated records=%d pairs=%d iterations=%d match_share=%.4f",
        model.n_records,
        model.n_pairs,
        model.iterations,
        model.match_share,
    )


def master_of(db: Database, issuer: str, local_id: str) -> int | None:
    """The master patient of ``(issuer, local_id)``, or ``None`` if the MPI does not know it."""
    with db.sessions() as s:
        return s.execute(
            select(LocalIdentity.master_id).where(
                LocalIdentity.issuer == issuer, LocalIdentity.local_id == local_id
            )
        ).scalar_one_or_none()


def locals_of(db: Database, master_id: int) -> list[tuple[str, str]]:
    """Every ``(issuer, local_id)`` linked to ``master_id``, sorted."""
    with db.sessions() as s:
        rows = s.execute(
            select(LocalIdentity.issuer, LocalIdentity.local_id)
            .where(LocalIdentity.master_id == master_id)
            .order_by(LocalIdentity.issuer, LocalIdentity.local_id)
        )
        return [(r.issuer, r.local_id) for r in rows]


def rematch(db: Database) -> int:
    """Re-run automatic matching on every identity that is alone on its master and was never placed by hand
    (e.g. after a model re-estimate); returns how many moved. Human decisions are never touched."""
    with store.process_lock, db.write() as s:
        store.lock_mpi(s)
        index = store.index_for(s)
        store.forget_on_rollback(s, index)
        try:
            gen = store.bump(s, index)
            out = store.Batch(gen)
            rows = (
                s.execute(
                    select(LocalIdentity).where(
                        LocalIdentity.decided_by == "", LocalIdentity.status != LINKED
                    )
                )
                .scalars()
                .all()
            )
            moved = 0
            for row in rows:
                before = row.master_id
                values = {c: getattr(row, c) for c in FIELD_NAMES}
                outcome = _relink(
                    s, index, out, row.id, to_traits(values), {**values, "gen": gen, "updated_at": utcnow()}
                )
                moved += outcome.master_id != before
            out.flush(s)
            return moved
        except BaseException:
            store.invalidate(index)
            raise
