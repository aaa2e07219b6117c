"""What an identity officer does with doubts: link, unlink, declare two identities different, merge, unmerge.

Every action needs a reason, is kept in the link history, is audited (purpose ``identity-management``) and marks
the identities it places as decided by a human, so that automatic matching never moves them again. An unlink or
a "different people" decision records no-link pairs; an unmerge restores the moved identities' link fields
exactly as they were before the merge.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from archipel.platform import audit
from archipel.platform.authn import Principal
from archipel.platform.db import Database, utcnow
from archipel.platform.identity import store
from archipel.platform.identity.linker import LinkIndex
from archipel.platform.identity.models import (
    MANUAL,
    LinkDecision,
    LocalIdentity,
    MasterMerge,
    MasterPatient,
    NoLink,
    ReviewItem,
)
from archipel.platform.identity.service import PURPOSE, IdentityConflict, IdentityError, IdentityNotFound

_RESTORED = ("master_id", "status", "score", "contributions", "decided_by")


@dataclass(frozen=True)
class ReviewEntry:
    """One open doubt, as the queue lists it."""

    id: int
    issuer: str
    local_id: str
    master_id: int
    candidate_master_id: int
    score: float | None
    reason: str
    contributions: dict[str, float]
    created_at: datetime


def review_queue(db: Database, limit: int = 1000) -> list[ReviewEntry]:
    """The open review items, oldest first."""
    with db.sessions() as s:
        rows = s.execute(
            select(ReviewItem, LocalIdentity.issuer, LocalIdentity.local_id, LocalIdentity.master_id)
            .join(LocalIdentity, LocalIdentity.id == ReviewItem.local_pk)
            .where(ReviewItem.state == "open")
            .order_by(ReviewItem.id)
            .limit(limit)
        ).all()
        return [
            ReviewEntry(
                item.id,
                issuer,
                local_id,
                master_id,
                item.candidate_master_id,
                item.score,
                item.reason,
                json.loads(item.contributions),
                item.created_at,
            )
            for item, issuer, local_id, master_id in rows
        ]


def history(db: Database, issuer: str, local_id: str) -> list[LinkDecision]:
    """Every link decision about one local identity, oldest first."""
    with db.sessions() as s:
        pk = _local_pk(s, issuer, local_id)
        return list(
            s.execute(
                select(LinkDecision).where(LinkDecision.local_pk == pk).order_by(LinkDecision.id)
            ).scalars()
        )


@contextmanager
def _officer(db: Database, reason: str) -> Iterator[tuple[Session, LinkIndex, int]]:
    if not reason or not reason.strip():
        raise IdentityError("a reason is required for every identity decision")
    with store.process_lock, db.write() as s:
        store.lock_mpi(s)
        index = store.index_for(s)
        store.forget_on_rollback(s, index)
        try:
            yield s, index, store.bump(s, index)
        except BaseException:
            store.invalidate(index)
            raise


def _local_pk(s: Session, issuer: str, local_id: str) -> int:
    pk = s.execute(
        select(LocalIdentity.id).where(LocalIdentity.issuer == issuer, LocalIdentity.local_id == local_id)
    ).scalar_one_or_none()
    if pk is None:
        raise IdentityNotFound(f"no local identity {local_id!r} of issuer {issuer!r}")
    return pk


def _open_item(s: Session, review_id: int) -> ReviewItem:
    item = s.get(ReviewItem, review_id)
    if item is None:
        raise IdentityNotFound(f"no review item {review_id}")
    if item.state != "open":
        raise IdentityConflict(f"review item {review_id} was already resolved ({item.resolution})")
    return item


def _active_master(s: Session, master_id: int) -> MasterPatient:
    master = s.get(MasterPatient, master_id)
    if master is None:
        raise IdentityNotFound(f"no master patient {master_id}")
    if not master.active:
        raise IdentityConflict(f"master patient {master_id} was merged into {master.merged_into}")
    return master


def _members(s: Session, master_id: int) -> list[LocalIdentity]:
    return list(
        s.execute(
            select(LocalIdentity).where(LocalIdentity.master_id == master_id).order_by(LocalIdentity.id)
        ).scalars()
    )


def _qualified_ins(rows: list[LocalIdentity]) -> set[str]:
    return {r.ins for r in rows if r.ins and r.ins_status == "QUAL"}


def _history(
    s: Session, row: LocalIdentity, previous: int | None, action: str, actor: str, reason: str
) -> None:
    s.add(
        LinkDecision(
            local_pk=row.id,
            master_id=row.master_id,
            previous_master_id=previous,
            action=action,
            status=row.status,
            score=row.score,
            contributions=row.contributions,
            reason=reason,
            actor=actor,
            at=utcnow(),
        )
    )


def _retire_if_empty(s: Session, index: LinkIndex, master_id: int, into: int | None, gen: int) -> None:
    if not index.members.get(master_id):
        s.execute(
            update(MasterPatient)
            .where(MasterPatient.id == master_id)
            .values(active=False, merged_into=into, gen=gen)
        )


def _close_reviews(s: Session, local_pk: int, resolution: str, actor: str) -> None:
    s.execute(
        update(ReviewItem)
        .where(ReviewItem.local_pk == local_pk, ReviewItem.state == "open")
        .values(state="resolved", resolution=resolution, resolved_by=actor, resolved_at=utcnow())
    )


def _audit(
    s: Session, who: Principal, action: str, master_id: int, reason: str, *, patient: str = "", obj: str = ""
) -> None:
    """One audit event of an officer's decision: ``patient`` names a local identity as ``issuer/PatientID``
    (like every other event), ``obj`` what else it is about (masters of a merge)."""
    audit.append(
        s,
        who,
        audit.PATIENT_RECORD,
        action,
        purpose=PURPOSE,
        patient=patient,
        obj=obj,
        detail=reason,
        master=master_id,
    )


def link(db: Database, who: Principal, issuer: str, local_id: str, master_id: int, reason: str) -> None:
    """Put a local identity on ``master_id`` by hand (resolving its open review items)."""
    with _officer(db, reason) as (s, index, gen):
        row = s.get(LocalIdentity, _local_pk(s, issuer, local_id))
        assert row is not None
        _active_master(s, master_id)
        if row.master_id == master_id:
            raise IdentityConflict(f"{issuer}/{local_id} is already on master {master_id}")
        others = [r for r in _members(s, master_id)]
        if row.ins and row.ins_status == "QUAL" and _qualified_ins(others) - {row.ins}:
            raise IdentityConflict(f"master {master_id} has another qualified INS: two INS are two people")
        forbidden = index.no_link.get(row.id, set())
        if any(o.id in forbidden for o in others):
            raise IdentityConflict(
                f"{issuer}/{local_id} was declared a different person from master {master_id}; "
                "remove that decision first"
            )
        previous = row.master_id
        row.master_id, row.status, row.decided_by, row.gen = master_id, MANUAL, who.subject, gen
        row.updated_at = utcnow()
        _history(s, row, previous, "link", who.subject, reason)
        _close_reviews(s, row.id, "linked", who.subject)
        index.move(row.id, master_id)
        _retire_if_empty(s, index, previous, master_id, gen)
        _audit(s, who, "identity-link", master_id, reason, patient=f"{issuer}/{local_id}")


def unlink(db: Database, who: Principal, issuer: str, local_id: str, reason: str) -> int:
    """Take a local identity off its master onto a new one; it is never linked to those identities again.
    Returns the new master's id."""
    with _officer(db, reason) as (s, index, gen):
        row = s.get(LocalIdentity, _local_pk(s, issuer, local_id))
        assert row is not None
        others = [r for r in _members(s, row.master_id) if r.id != row.id]
        if not others:
            raise IdentityConflict(
                f"{issuer}/{local_id} is alone on master {row.master_id}: it is linked to nothing to unlink from"
            )
        new_master = index.next_master
        index.next_master += 1
        s.add(MasterPatient(id=new_master, active=True, merged_into=None, gen=gen, created_at=utcnow()))
        s.flush()
        for o in others:
            _forbid(s, index, row.id, o.id, who.subject, reason, gen)
        previous = row.master_id
        row.master_id, row.status, row.decided_by, row.gen = new_master, MANUAL, who.subject, gen
        row.score, row.contributions, row.updated_at = None, "{}", utcnow()
        _history(s, row, previous, "unlink", who.subject, reason)
        _close_reviews(s, row.id, "unlinked", who.subject)
        index.move(row.id, new_master)
        _audit(s, who, "identity-unlink", previous, reason, patient=f"{issuer}/{local_id}")
        return new_master


def _forbid(s: Session, index: LinkIndex, a: int, b: int, actor: str, reason: str, gen: int) -> None:
    lo, hi = min(a, b), max(a, b)
    exists = s.execute(select(NoLink.id).where(NoLink.a_pk == lo, NoLink.b_pk == hi)).scalar_one_or_none()
    if exists is None:
        s.add(NoLink(a_pk=lo, b_pk=hi, reason=reason, actor=actor, gen=gen, at=utcnow()))
    index.forbid(lo, hi)


def different(db: Database, who: Principal, review_id: int, reason: str) -> None:
    """Resolve a review item as "different people": the identity stays on its own master for good."""
    with _officer(db, reason) as (s, index, gen):
        item = _open_item(s, review_id)
        row = s.get(LocalIdentity, item.local_pk)
        assert row is not None
        for o in _members(s, item.candidate_master_id):
            _forbid(s, index, row.id, o.id, who.subject, reason, gen)
        row.status, row.decided_by, row.gen, row.updated_at = MANUAL, who.subject, gen, utcnow()
        _history(s, row, row.master_id, "no-link", who.subject, reason)
        item.state, item.resolution, item.resolved_by, item.resolved_at = (
            "resolved",
            "different",
            who.subject,
            utcnow(),
        )
        _audit(s, who, "identity-no-link", row.master_id, reason, patient=f"{row.issuer}/{row.local_id}")


def accept(db: Database, who: Principal, review_id: int, reason: str) -> None:
    """Resolve a review item as "same person": the identity joins the candidate master."""
    with db.sessions() as s:
        item = _open_item(s, review_id)
        row = s.get(LocalIdentity, item.local_pk)
        assert row is not None
        issuer, local_id, candidate = row.issuer, row.local_id, item.candidate_master_id
    link(db, who, issuer, local_id, candidate, reason)


def merge(db: Database, who: Principal, source_id: int, target_id: int, reason: str) -> int:
    """Merge master ``source_id`` into ``target_id``; returns the merge's id (for :func:`unmerge`)."""
    if source_id == target_id:
        raise IdentityError(f"cannot merge master {source_id} into itself")
    with _officer(db, reason) as (s, index, gen):
        source, _ = _active_master(s, source_id), _active_master(s, target_id)
        moving, staying = _members(s, source_id), _members(s, target_id)
        a, b = _qualified_ins(moving), _qualified_ins(staying)
        if a and b and a != b:
            raise IdentityConflict(f"masters {source_id} and {target_id} have different qualified INS")
        forbidden = {(x.id, y.id) for x in moving for y in staying if y.id in index.no_link.get(x.id, set())}
        if forbidden:
            raise IdentityConflict(
                f"identities of masters {source_id} and {target_id} were declared different people"
            )
        saved = [{"id": r.id, **{k: getattr(r, k) for k in _RESTORED}} for r in moving]
        merge_row = MasterMerge(
            source_id=source_id,
            target_id=target_id,
            moved=json.dumps(saved),
            reason=reason,
            actor=who.subject,
            at=utcnow(),
        )
        s.add(merge_row)
        for r in moving:
            r.master_id, r.status, r.decided_by, r.gen, r.updated_at = (
                target_id,
                MANUAL,
                who.subject,
                gen,
                utcnow(),
            )
            _history(s, r, source_id, "merge", who.subject, reason)
            _close_reviews(s, r.id, "merged", who.subject)
            index.move(r.id, target_id)
        source.active, source.merged_into, source.gen = False, target_id, gen
        s.flush()
        _audit(s, who, "identity-merge", target_id, reason, obj=f"master {source_id} into {target_id}")
        return merge_row.id


def unmerge(db: Database, who: Principal, merge_id: int, reason: str) -> None:
    """Undo a merge: the source master and its identities' links are restored exactly, and the two sets of
    identities are recorded as different people."""
    with _officer(db, reason) as (s, index, gen):
        m = s.get(MasterMerge, merge_id)
        if m is None:
            raise IdentityNotFound(f"no merge {merge_id}")
        if m.undone_by:
            raise IdentityConflict(f"merge {merge_id} was already undone")
        saved = json.loads(m.moved)
        rows = {r.id: r for r in _members(s, m.target_id)}
        missing = [e["id"] for e in saved if e["id"] not in rows]
        if missing:
            raise IdentityConflict(
                f"identities {missing} have left master {m.target_id} since the merge; "
                "undo those changes first"
            )
        source = s.get(MasterPatient, m.source_id)
        assert source is not None
        source.active, source.merged_into, source.gen = True, None, gen
        moved_ids = {e["id"] for e in saved}
        for e in saved:
            r = rows[e["id"]]
            for k in _RESTORED:
                setattr(r, k, e[k])
            r.gen, r.updated_at = gen, utcnow()
            _history(s, r, m.target_id, "unmerge", who.subject, reason)
            index.move(r.id, r.master_id)
        for r in rows.values():
            if r.id not in moved_ids:
                for e in saved:
                    _forbid(s, index, e["id"], r.id, who.subject, reason, gen)
        m.undone_by, m.undone_at = who.subject, utcnow()
        _audit(
            s, who, "identity-unmerge", m.target_id, reason, obj=f"master {m.source_id} from {m.target_id}"
        )
