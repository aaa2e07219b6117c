"""When a screening file is *received* (where the programme's delays start): once it is complete, its exam's
four views in and, in the French programme, its L1 form; not at its first image. Through the HTTP API in
process, on a test clock, the images stored one by one through the archive (as C-STORE and STOW do)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest

from archipel.platform.runtime import Runtime
from archipel.radiology.archive import Archive
from archipel.radiology.samples import SyntheticPatient, mammo_study, to_bytes
from tests.access_support import ensure_master
from tests.auth_helpers import Clock, client
from tests.test_mammo_api import CENTRE, EXAM, NORMAL_READ, Programme, l1_form, sqlite_only, woman

pytestmark = sqlite_only
START = datetime(2026, 3, 6, 9, 0, tzinfo=UTC)
MIDNIGHT = datetime(2026, 3, 5, tzinfo=UTC)  # the exam's day, where the delays start


@pytest.fixture
def p(runtime: Runtime) -> Iterator[Programme]:
    clock = Clock(START)
    runtime.clock = clock
    with client() as http:
        yield Programme(runtime, http, clock, {}, {})


def days_since_exam(at: datetime) -> float:
    return round((at - MIDNIGHT).total_seconds() / 86400, 2)


def episode(p: Programme, eid: int) -> dict[str, Any]:
    r = p.get("centre", f"/api/mammo/episodes/{eid}")
    assert r.status_code == 200, r.text
    return dict(r.json())


def received(p: Programme, eid: int) -> float | None:
    value = episode(p, eid)["delays"]["exam_to_received_days"]
    return None if value is None else float(value)


def store(p: Programme, images: list[Any]) -> None:
    archive = Archive(p.rt.db, p.rt.blobs)
    for ds in images:
        archive.store(to_bytes(ds))


def registered(p: Programme, mg: SyntheticPatient, programme: str) -> int:
    ensure_master(p.rt.db, CENTRE, mg.patient_id, f"MAMMO{mg.patient_id}", "19600101")
    body = {"programme": programme, "issuer": CENTRE, "patient_id": mg.patient_id, "site": CENTRE,
            "round": "first", "screen_date": EXAM}  # fmt: skip
    r = p.post("centre", "/api/mammo/episodes", body)
    assert r.status_code == 201, r.text
    return int(r.json()["id"])


def test_a_french_file_is_received_with_its_last_view_after_the_l1_form(p: Programme) -> None:
    p.setup("fr", "fr-depistage")
    mg = woman(81)
    ensure_master(p.rt.db, CENTRE, mg.patient_id, f"MAMMO{mg.patient_id}", "19600101")
    r = p.post("centre", "/api/mammo/l1-forms", l1_form(mg, NORMAL_READ))
    assert r.status_code == 201, r.text
    eid = int(r.json()["id"])
    assert received(p, eid) is None  # the form alone is not the file

    images = mammo_study(mg, key="received-81")
    p.later(hours=1)
    store(p, images[:3])  # three of the four views
    assert episode(p, eid)["status"] == "incomplete" and received(p, eid) is None
    p.later(minutes=5)
    store(p, images[3:])
    ep = episode(p, eid)
    assert ep["status"] == "reading"
    assert received(p, eid) == days_since_exam(START.replace(hour=10, minute=5))


def test_a_french_file_whose_images_came_first_is_received_with_its_l1_form(p: Programme) -> None:
    p.setup("fr", "fr-depistage")
    mg = woman(82)
    eid = registered(p, mg, "fr")
    store(p, mammo_study(mg, key="received-82"))
    ep = episode(p, eid)
    assert ep["status"] == "awaiting-l1-form" and received(p, eid) is None

    p.later(days=2, hours=3)
    r = p.post("centre", "/api/mammo/l1-forms", l1_form(mg, NORMAL_READ))
    assert r.status_code == 201 and r.json()["id"] == eid, r.text
    assert received(p, eid) == days_since_exam(START.replace(day=8, hour=12))


def test_a_blinded_file_is_received_with_its_last_view(p: Programme) -> None:
    p.setup("eu", "eu-blinded")
    mg = woman(83)
    eid = registered(p, mg, "eu")
    images = mammo_study(mg, key="received-83")
    store(p, images[:1])
    assert received(p, eid) is None
    p.later(minutes=10)
    store(p, images[1:])
    assert episode(p, eid)["status"] == "reading"
    assert received(p, eid) == days_since_exam(START.replace(minute=10))
