"""The screening worklist narrowed to one clinic's batch, and the L1 form of an unqualified radiologist refused
and audited, through the HTTP API in process (the fixtures of ``test_mammo_api``)."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from archipel.platform.runtime import Runtime
from archipel.radiology.archive import Archive
from archipel.radiology.samples import mammo_study, to_bytes
from tests.access_support import ensure_master
from tests.auth_helpers import Clock, client, make_account
from tests.test_mammo_api import CENTRE, EXAM, NORMAL_READ, Programme, l1_form, sqlite_only, woman

pytestmark = sqlite_only


@pytest.fixture
def p(runtime: Runtime) -> Iterator[Programme]:
    clock = Clock(datetime(2026, 3, 6, 9, 0, tzinfo=UTC))
    runtime.clock = clock
    with client() as http:
        yield Programme(runtime, http, clock, {}, {})


def _episode_with_images(p: Programme, n: int, batch: str) -> int:
    mg = woman(n)
    ensure_master(p.rt.db, CENTRE, mg.patient_id, f"MAMMO{mg.patient_id}", "19600101")
    body = {"programme": "eu", "issuer": CENTRE, "patient_id": mg.patient_id, "site": CENTRE,
            "round": "first", "screen_date": EXAM, "batch": batch}  # fmt: skip
    r = p.post("centre", "/api/mammo/episodes", body)
    assert r.status_code == 201, r.text
    archive = Archive(p.rt.db, p.rt.blobs)
    for ds in mammo_study(mg, key=f"batch-{n}"):
        archive.store(to_bytes(ds))
    return int(r.json()["id"])


def test_the_worklist_shows_one_clinics_batch_when_asked(p: Programme) -> None:
    p.setup("eu", "eu-blinded")
    a = _episode_with_images(p, 40, "clinic-12")
    b = _episode_with_images(p, 41, "clinic-13")
    c = _episode_with_images(p, 42, "clinic-12")

    def listed(query: str) -> list[tuple[int, str]]:
        r = p.get("r1", f"/api/mammo/worklist{query}")
        assert r.status_code == 200, r.text
        return [(w["episode_id"], w["batch"]) for w in r.json()]

    # Listing runs without SQLAlchemy's deprecation warnings (Result.tuples() was one).
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        everything = listed("")
    assert not [w for w in caught if issubclass(w.category, DeprecationWarning)], caught
    assert sorted({e for e, _ in everything}) == [a, b, c]

    assert {e for e, _ in listed("?batch=clinic-12")} == {a, c}
    assert {batch for _, batch in listed("?batch=clinic-12")} == {"clinic-12"}
    assert listed("?batch=clinic-13&role=first") == [(b, "clinic-13")]
    assert listed("?batch=clinic-99") == []


def test_an_unqualified_radiologists_l1_form_is_refused_and_audited(p: Programme) -> None:
    p.setup("fr", "fr-depistage")
    mg = woman(43)
    ensure_master(p.rt.db, CENTRE, mg.patient_id, f"MAMMO{mg.patient_id}", "19600101")
    # A radiologist of the centre who is not qualified as L1 reader in the programme.
    p.accounts["other"] = make_account(p.rt, "radio-autre", "radiologist", CENTRE)
    before = p.counts()
    r = p.post("other", "/api/mammo/l1-forms", l1_form(mg, NORMAL_READ))
    assert r.status_code == 403, r.text
    assert r.json()["detail"] == "radio-autre is not qualified as l1 reader in programme fr"
    assert p.counts() == before
    [event] = p.denied("create:screening-episode")
    assert event.actor == "radio-autre" and event.detail == r.json()["detail"]
    assert event.patient == f"{CENTRE}/{mg.patient_id}"
    # The qualified radiologist's form goes through, and nothing is denied for it.
    assert p.post("centre", "/api/mammo/l1-forms", l1_form(mg, NORMAL_READ)).status_code == 201
    assert len(p.denied("create:screening-episode")) == 1
