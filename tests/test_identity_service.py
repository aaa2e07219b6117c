"""The MPI over a real index (SQLite, then PostgreSQL): register, review actions, history and audit."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from sqlalchemy import func, select

from archipel.platform.audit import AuditEvent
from archipel.platform.authn import Principal
from archipel.platform.db import Database
from archipel.platform.identity import review, store
from archipel.platform.identity.models import (
    LINKED,
    MANUAL,
    NEW,
    REVIEW,
    LinkDecision,
    LocalIdentity,
    MasterPatient,
    NoLink,
)
from archipel.platform.identity.service import (
    IdentityError,
    LocalIdentityInput,
    UnknownIssuer,
    add_issuer,
    locals_of,
    master_of,
    register,
    register_many,
    rematch,
)
from archipel.platform.runtime import Runtime

OFFICER = Principal(subject="officer1", role="identity-officer")
BASE = {
    "birth_name": "Kervadouec",
    "given_names": "Aurélien",
    "birth_date": "1984-07-19",
    "sex": "M",
    "birth_place": "29232",
    "postcode": "29200",
    "phone": "0612345678",
}


@pytest.fixture
def db(runtime: Runtime) -> Iterator[Database]:
    """The test index with sites SITE-A, SITE-B and SITE-C registered as issuers."""
    store.forget_indexes()
    with runtime.db.write() as s:
        for code in ("SITE-A", "SITE-B", "SITE-C"):
            add_issuer(s, code)
    yield runtime.db
    store.forget_indexes()


def ident(issuer: str, local_id: str, **fields: str) -> LocalIdentityInput:
    return LocalIdentityInput(issuer=issuer, local_id=local_id, **{**BASE, **fields})


def snapshot(db: Database) -> list[tuple[object, ...]]:
    """Every local identity's link fields and every master's state."""
    with db.sessions() as s:
        locs = s.execute(
            select(
                LocalIdentity.id,
                LocalIdentity.master_id,
                LocalIdentity.status,
                LocalIdentity.score,
                LocalIdentity.contributions,
                LocalIdentity.decided_by,
            ).order_by(LocalIdentity.id)
        ).all()
        masters = s.execute(
            select(MasterPatient.id, MasterPatient.active, MasterPatient.merged_into).order_by(
                MasterPatient.id
            )
        ).all()
        return [tuple(r) for r in [*locs, *masters]]


def test_register_links_across_sites_and_reports_the_master(db: Database) -> None:
    a = register(db, ident("SITE-A", "A1"))
    b = register(db, ident("SITE-B", "B1", birth_name="KERVADOUËC", given_names="aurelien"))
    assert (a.status, a.created) == (NEW, True)
    assert (b.status, b.master_id) == (LINKED, a.master_id)
    assert master_of(db, "SITE-B", "B1") == a.master_id
    assert master_of(db, "SITE-B", "nobody") is None
    assert locals_of(db, a.master_id) == [("SITE-A", "A1"), ("SITE-B", "B1")]
    with db.sessions() as s:
        row = s.execute(select(LocalIdentity).where(LocalIdentity.local_id == "B1")).scalar_one()
        contributions = json.loads(row.contributions)
        assert row.score is not None and row.score > 0
        assert {"family", "given", "birth_date"} <= set(contributions)


def test_register_again_updates_the_identity_without_moving_it(db: Database) -> None:
    first = register(db, ident("SITE-A", "A1"))
    again = register(db, ident("SITE-A", "A1", phone="0699999999"))
    assert (again.master_id, again.created) == (first.master_id, False)
    with db.sessions() as s:
        assert s.execute(select(func.count()).select_from(LocalIdentity)).scalar() == 1
        assert s.execute(select(LocalIdentity.phone)).scalar() == "0699999999"


def test_two_local_ids_of_one_issuer_go_to_review(db: Database) -> None:
    a = register(db, ident("SITE-A", "A1"))
    dup = register(db, ident("SITE-A", "A2"))
    assert dup.status == REVIEW and dup.master_id != a.master_id
    queue = review.review_queue(db)
    assert [(e.local_id, e.candidate_master_id) for e in queue] == [("A2", a.master_id)]
    assert "same issuer" in queue[0].reason


def test_twins_go_to_review(db: Database) -> None:
    register(db, ident("SITE-A", "A1"))
    twin = register(db, ident("SITE-B", "B7", given_names="Mathurin"))
    assert twin.status == REVIEW
    assert "twins" in review.review_queue(db)[0].reason


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"birth_date": "1984-02-30"}, "does not exist"),
        ({"birth_date": "2999-01-01"}, "out of range"),
        ({"sex": "Q"}, "sex"),
        ({"ins": "123"}, "15 characters"),
        ({"ins_status": "QUAL"}, "requires an INS"),
        ({"birth_name": "", "given_names": "", "used_name": ""}, "at least a name"),
        ({"birth_name": "Ker\x00vadouec"}, "control characters"),
        ({"ins_status": "MAYBE"}, "unknown INS status"),
    ],
)
def test_malformed_identities_are_refused_and_nothing_changes(
    db: Database, fields: dict[str, str], message: str
) -> None:
    register(db, ident("SITE-A", "A1"))
    before = snapshot(db)
    with pytest.raises(IdentityError, match=message):
        register(db, ident("SITE-A", "A1", **fields))
    with pytest.raises(IdentityError, match=message):
        register(db, ident("SITE-B", "B1", **fields))
    assert snapshot(db) == before


def test_unknown_issuer_is_refused(db: Database) -> None:
    with pytest.raises(UnknownIssuer, match="SITE-Z"):
        register(db, ident("SITE-Z", "Z1"))
    assert snapshot(db) == []


def test_human_link_and_no_link_survive_rematching(db: Database) -> None:
    a = register(db, ident("SITE-A", "A1"))
    doubt = register(db, ident("SITE-B", "B1", given_names="Mathurin"))  # twins rule: review
    assert doubt.status == REVIEW
    item = review.review_queue(db)[0]
    review.different(db, OFFICER, item.id, "twins: checked the birth certificates")
    before = snapshot(db)
    store.forget_indexes()  # a fresh process rebuilds its index from the tables
    assert rematch(db) == 0
    assert snapshot(db) == before
    again = register(db, ident("SITE-B", "B1", given_names="Mathurin", phone="0600000000"))
    assert (again.master_id, again.status) == (doubt.master_id, MANUAL)
    # C1 is in doubt between the twins; the officer puts it with B1 by hand, and it stays there.
    other = register(db, ident("SITE-C", "C1", given_names="Mathurin"))
    assert other.status == REVIEW
    review.link(db, OFFICER, "SITE-C", "C1", doubt.master_id, "same person, confirmed by phone")
    assert rematch(db) == 0
    store.forget_indexes()
    assert rematch(db) == 0
    assert master_of(db, "SITE-C", "C1") == doubt.master_id != a.master_id
    assert register(db, ident("SITE-C", "C1", given_names="Mathurin")).status == MANUAL


def test_unlink_records_an_ignore_so_the_pair_is_never_linked_again(db: Database) -> None:
    a = register(db, ident("SITE-A", "A1"))
    assert register(db, ident("SITE-B", "B1")).master_id == a.master_id
    new_master = review.unlink(db, OFFICER, "SITE-B", "B1", "different people, same name")
    assert master_of(db, "SITE-B", "B1") == new_master != a.master_id
    with db.sessions() as s:
        assert s.execute(select(func.count()).select_from(NoLink)).scalar() == 1
    store.forget_indexes()
    again = register(db, ident("SITE-B", "B1", phone="0600000001"))
    assert again.master_id == new_master
    assert rematch(db) == 0
    with pytest.raises(IdentityError, match="declared a different person"):
        review.link(db, OFFICER, "SITE-B", "B1", a.master_id, "oops")
    with pytest.raises(IdentityError, match="alone"):
        review.unlink(db, OFFICER, "SITE-B", "B1", "again")


def test_merge_then_unmerge_restores_the_records_exactly(db: Database) -> None:
    a = register(db, ident("SITE-A", "A1"))
    register(db, ident("SITE-B", "B1"))
    c = register(
        db,
        ident("SITE-C", "C1", birth_name="Lagrenaud", given_names="Yvette", birth_date="1950-01-02", sex="F"),
    )
    register(
        db,
        ident(
            "SITE-A",
            "A9",
            birth_name="Lagrenaud",
            given_names="Yvette",
            birth_date="1950-01-02",
            sex="F",
            birth_place="",
            phone="",
        ),
    )
    before = snapshot(db)
    merge_id = review.merge(db, OFFICER, c.master_id, a.master_id, "same woman, maiden and married names")
    assert set(locals_of(db, a.master_id)) >= {("SITE-A", "A1"), ("SITE-B", "B1"), ("SITE-C", "C1")}
    assert locals_of(db, c.master_id) == []
    with pytest.raises(IdentityError, match="merged into"):
        review.link(db, OFFICER, "SITE-B", "B1", c.master_id, "to a merged master")
    review.unmerge(db, OFFICER, merge_id, "the documents belong to two women")
    assert snapshot(db) == before
    with pytest.raises(IdentityError, match="already undone"):
        review.unmerge(db, OFFICER, merge_id, "twice")
    with db.sessions() as s:
        actions = [d.action for d in s.execute(select(LinkDecision).order_by(LinkDecision.id)).scalars()]
        assert "merge" in actions and "unmerge" in actions


def test_bad_officer_actions_are_refused_and_change_nothing(db: Database) -> None:
    a = register(db, ident("SITE-A", "A1"))
    before = snapshot(db)
    with pytest.raises(IdentityError, match="into itself"):
        review.merge(db, OFFICER, a.master_id, a.master_id, "why not")
    with pytest.raises(IdentityError, match="no master patient 999"):
        review.merge(db, OFFICER, a.master_id, 999, "missing")
    with pytest.raises(IdentityError, match="reason is required"):
        review.merge(db, OFFICER, a.master_id, a.master_id + 1, " ")
    with pytest.raises(IdentityError, match="no local identity"):
        review.link(db, OFFICER, "SITE-B", "nobody", a.master_id, "missing")
    with pytest.raises(IdentityError, match="no merge"):
        review.unmerge(db, OFFICER, 42, "missing")
    assert snapshot(db) == before


def test_every_officer_change_is_audited_for_identity_management(db: Database) -> None:
    a = register(db, ident("SITE-A", "A1"))
    b = register(
        db,
        ident("SITE-B", "B1", birth_name="Lagrenaud", given_names="Yvette", sex="F", birth_date="1950-01-02"),
    )
    merge_id = review.merge(db, OFFICER, b.master_id, a.master_id, "checked")
    review.unmerge(db, OFFICER, merge_id, "checked again")
    with db.sessions() as s:
        events = s.execute(select(AuditEvent).where(AuditEvent.actor == "officer1")).scalars().all()
    assert [e.action for e in events] == ["identity-merge", "identity-unmerge"]
    assert {e.purpose for e in events} == {"identity-management"}
    assert all(e.detail for e in events)
    assert "Lagrenaud" not in " ".join(e.object + e.detail for e in events)


def test_register_many_reports_bad_rows_and_links_the_rest(db: Database) -> None:
    rows = [
        ident("SITE-A", f"A{i}", given_names=g, birth_date=d)
        for i, (g, d) in enumerate(
            [("Aurélien", "1984-07-19"), ("Bleuenn", "1984-13-01"), ("Corentin", "1990-03-04")]
        )
    ]
    results = register_many(db, rows)
    assert [type(r).__name__ for r in results] == ["IdentityError", "LinkOutcome", "LinkOutcome"] or [
        isinstance(r, IdentityError) for r in results
    ] == [False, True, False]
    assert master_of(db, "SITE-A", "A1") is None
    assert master_of(db, "SITE-A", "A2") is not None


def test_register_inside_the_callers_write_transaction(db: Database) -> None:
    a = register(db, ident("SITE-A", "A1"))
    with db.write() as s:
        outcome = register(s, ident("SITE-B", "B1"))
    assert (outcome.status, outcome.master_id) == (LINKED, a.master_id)
    with pytest.raises(RuntimeError), db.write() as s:
        register(s, ident("SITE-C", "C1"))
        raise RuntimeError("the caller's transaction fails after registering")
    assert master_of(db, "SITE-C", "C1") is None
    # The index forgot the rolled-back identity: registering it again creates it.
    assert register(db, ident("SITE-C", "C1")).created


def test_a_qualified_ins_arriving_later_links_a_lone_identity(db: Database) -> None:
    from archipel.platform.identity.ins import ins_key

    ins = "1840729232001" + ins_key("1840729232001")
    a = register(db, ident("SITE-A", "A1", ins=ins, ins_status="QUAL"))
    other = {"birth_name": "Kervadou", "given_names": "Aurel", "birth_date": "1985-01-01", "birth_place": ""}
    b = register(db, ident("SITE-B", "B1", **other))
    assert b.status == NEW
    later = register(db, ident("SITE-B", "B1", **other, ins=ins, ins_status="QUAL"))
    assert (later.status, later.master_id) == (LINKED, a.master_id)
