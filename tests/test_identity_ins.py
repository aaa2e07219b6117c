"""INS statuses (RNIV): every status x event pair, and what a qualified INS allows."""

from __future__ import annotations

import itertools

import pytest

from archipel.platform.identity.ins import (
    InsError,
    InsEvent,
    InsStatus,
    apply,
    can_move,
    ins_key,
    normalize_ins,
    outgoing_ins,
    parse_status,
    usable_for_linking,
)

P, R, V, Q = InsStatus.PROV, InsStatus.RECUP, InsStatus.VALI, InsStatus.QUAL
E = InsEvent
#: The expected result of every (status, event) pair; None: refused.
EXPECTED: dict[tuple[InsStatus, InsEvent], InsStatus | None] = {
    (P, E.INSI_RETRIEVED): R,
    (P, E.DOCUMENT_CHECKED): V,
    (P, E.INS_INVALIDATED): None,
    (P, E.DOCUMENT_REVOKED): None,
    (P, E.DOUBT_RAISED): None,
    (R, E.INSI_RETRIEVED): None,
    (R, E.DOCUMENT_CHECKED): Q,
    (R, E.INS_INVALIDATED): P,
    (R, E.DOCUMENT_REVOKED): None,
    (R, E.DOUBT_RAISED): P,
    (V, E.INSI_RETRIEVED): Q,
    (V, E.DOCUMENT_CHECKED): None,
    (V, E.INS_INVALIDATED): None,
    (V, E.DOCUMENT_REVOKED): P,
    (V, E.DOUBT_RAISED): P,
    (Q, E.INSI_RETRIEVED): None,
    (Q, E.DOCUMENT_CHECKED): None,
    (Q, E.INS_INVALIDATED): V,
    (Q, E.DOCUMENT_REVOKED): R,
    (Q, E.DOUBT_RAISED): P,
}


def test_expected_table_covers_every_status_and_event() -> None:
    assert set(EXPECTED) == set(itertools.product(InsStatus, InsEvent))


@pytest.mark.parametrize(("status", "event"), list(itertools.product(InsStatus, InsEvent)))
def test_each_status_event_pair_gives_the_rniv_result_or_is_refused(
    status: InsStatus, event: InsEvent
) -> None:
    expected = EXPECTED[(status, event)]
    if expected is None:
        with pytest.raises(InsError, match=f"{status.value} cannot change on event {event.value}"):
            apply(status, event)
    else:
        assert apply(status, event) is expected


@pytest.mark.parametrize(("old", "new"), list(itertools.product(InsStatus, InsStatus)))
def test_status_moves_exactly_along_the_allowed_transitions(old: InsStatus, new: InsStatus) -> None:
    allowed = old == new or any(EXPECTED[(old, e)] == new for e in InsEvent)
    assert can_move(old, new) is allowed


def test_qualified_is_reached_only_through_both_checks() -> None:
    assert apply(apply(P, E.INSI_RETRIEVED), E.DOCUMENT_CHECKED) is Q
    assert apply(apply(P, E.DOCUMENT_CHECKED), E.INSI_RETRIEVED) is Q
    assert not can_move(P, Q)


@pytest.mark.parametrize("status", list(InsStatus))
def test_only_a_qualified_ins_links_or_goes_into_outgoing_documents(status: InsStatus) -> None:
    ins = "2700375056123" + ins_key("2700375056123")
    assert usable_for_linking(ins, status) is (status is Q)
    assert outgoing_ins(ins, status) == (ins if status is Q else None)


def test_ins_control_key_is_checked() -> None:
    body = "1850299123456"
    good = body + ins_key(body)
    assert normalize_ins(good) == good
    assert normalize_ins(f"{good[:1]} {good[1:3]} {good[3:]}") == good
    bad = body + f"{(int(ins_key(body)) + 1) % 97:02d}"
    with pytest.raises(InsError, match="wrong control key"):
        normalize_ins(bad)
    with pytest.raises(InsError, match="15 characters"):
        normalize_ins("12345")
    corsica = "18502" + "2A" + "123456"
    assert normalize_ins(corsica + ins_key(corsica)) == corsica + ins_key(corsica)


def test_status_names_are_parsed_and_unknown_ones_refused() -> None:
    assert parse_status("") is P
    assert parse_status(" qual ") is Q
    with pytest.raises(InsError, match="unknown INS status"):
        parse_status("VALID")
