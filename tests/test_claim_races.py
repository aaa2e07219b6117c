"""Two steps on the same request at the same moment, on PostgreSQL (READ COMMITTED, where a plain read takes no
lock): two teleradiologists claim one reading request, a preliminary report is saved twice, two experts take one
centre's question, an expert's answer is sent twice, two pathologists claim one frozen section. Through the API,
in process, in two threads: the first step is held just after it read the request, the second is let go, and the
first goes on once the second waits for the first's row lock (or has finished, which is the race these tests
catch). Exactly one step wins; the other is refused with its reason and leaves nothing behind."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select, text

from archipel.platform import care, inbox
from archipel.platform.db import Database
from archipel.platform.runtime import Runtime
from archipel.radiology import second_opinion, telerad, telerad_reports
from archipel.radiology.archive import Archive
from archipel.radiology.documents_models import Document
from archipel.radiology.telerad_models import ReadingReport, ReadingRequest, SecondOpinion
from archipel.wsi import frozen
from archipel.wsi.frozen import FrozenSectionRequest
from tests.support import wait_until
from tests.test_frozen_section import Ward, frozen_slide, ward  # noqa: F401  (the frozen-section fixtures)
from tests.test_telerad import PATIENT, Desk, open_desk
from tests.test_telerad_second_opinion import CENTRE, _ask, _claimed

pytestmark = pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)


class HoldFirst:
    """Wraps a workflow function: its first caller is held (inside its transaction, after reading the request)
    until :meth:`release`; later callers pass straight through."""

    def __init__(self, fn: Callable[..., Any]) -> None:
        self.fn, self.reached, self._go = fn, threading.Event(), threading.Event()
        self._first, self._lock = True, threading.Lock()

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        with self._lock:
            first, self._first = self._first, False
        if first:
            self.reached.set()
            assert self._go.wait(60), "never released"
        return self.fn(*args, **kwargs)

    def release(self) -> None:
        self._go.set()


def _lock_waiters(db: Database) -> int:
    """Sessions of this database waiting for a lock held by another transaction."""
    with db.engine.connect() as c:
        query = "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'"
        return int(c.execute(text(query)).scalar_one())


def _interleave(
    db: Database, hold: HoldFirst, first: Callable[[], httpx.Response], second: Callable[[], httpx.Response]
) -> tuple[httpx.Response, httpx.Response]:
    """Run ``first`` until ``hold`` holds it, then ``second`` until it waits for a lock or ends, then both."""
    answers: dict[str, httpx.Response] = {}

    def run(name: str, call: Callable[[], httpx.Response]) -> None:
        answers[name] = call()

    a = threading.Thread(target=run, args=("first", first))
    a.start()
    assert hold.reached.wait(60), "the first step never reached its hold"
    b = threading.Thread(target=run, args=("second", second))
    b.start()
    try:
        wait_until(lambda: not b.is_alive() or _lock_waiters(db) > 0, 60, "the second step to wait or end")
    finally:
        hold.release()
        a.join(60)
        b.join(60)
    assert not a.is_alive() and not b.is_alive()
    return answers["first"], answers["second"]


@pytest.fixture
def desk(runtime: Runtime, archive: Archive) -> Iterator[Desk]:
    with open_desk(runtime, archive) as d:
        yield d


def test_two_claims_at_once_give_one_holder_and_one_conflict(
    desk: Desk, monkeypatch: pytest.MonkeyPatch
) -> None:
    desk.store_study(PATIENT, "TR26-1")
    rid = desk.ask().json()["request_id"]
    desk.h("radio1"), desk.h("radio2")  # signed in before the threads start
    hold = HoldFirst(telerad.claim)
    monkeypatch.setattr(telerad, "claim", hold)

    first, second = _interleave(
        desk.rt.db,
        hold,
        lambda: desk.post("radio1", f"/requests/{rid}/claim"),
        lambda: desk.post("radio2", f"/requests/{rid}/claim"),
    )

    assert first.status_code == 200, first.text
    assert second.status_code == 409 and "claimed by radio-garde until" in second.json()["detail"]
    with desk.rt.db.sessions() as s:
        req = s.get(ReadingRequest, rid)
        assert req is not None and req.claim_holder == "radio-garde"
        readers = s.execute(
            select(care.CareRelationship.professional).where(
                care.CareRelationship.context == f"reading-request:{rid} reader"
            )
        ).scalars()
        assert list(readers) == ["radio-garde"]  # one reading assignment: the loser got none


def test_a_first_preliminary_report_saved_twice_at_once_makes_one_draft(
    desk: Desk, monkeypatch: pytest.MonkeyPatch
) -> None:
    desk.store_study(PATIENT, "TR26-1")
    rid = desk.ask().json()["request_id"]
    assert desk.post("radio1", f"/requests/{rid}/claim").status_code == 200
    hold = HoldFirst(telerad_reports._record)  # inside the document's transaction, after the locked re-check
    monkeypatch.setattr(telerad_reports, "_record", hold)

    def save(words: str) -> Callable[[], httpx.Response]:
        return lambda: desk.post("radio1", f"/requests/{rid}/report", {"text": words})

    first, second = _interleave(desk.rt.db, hold, save("No bleeding."), save("No bleeding (double click)."))

    assert first.status_code == 200, first.text
    assert second.status_code == 409 and "changed meanwhile" in second.json()["detail"]
    with desk.rt.db.sessions() as s:
        drafts = list(s.execute(select(ReadingReport).where(ReadingReport.request_id == rid)).scalars())
        titled = s.execute(
            select(func.count())
            .select_from(Document)
            .where(Document.title == f"Teleradiology report, request #{rid}")
        ).scalar_one()
    assert [(d.kind, d.text) for d in drafts] == [("preliminary", "No bleeding.")]
    assert titled == 1  # the refused save left no document


def test_two_experts_taking_a_centres_question_at_once_give_it_to_one(
    desk: Desk, monkeypatch: pytest.MonkeyPatch
) -> None:
    _desk, rid, study = _claimed(desk)
    oid = _ask(desk, study, rid, to_site=CENTRE)["opinion_id"]
    hold = HoldFirst(second_opinion.take)
    monkeypatch.setattr(second_opinion, "take", hold)

    first, second = _interleave(
        desk.rt.db,
        hold,
        lambda: desk.post("expert", f"/second-opinions/{oid}/take"),
        lambda: desk.post("expert2", f"/second-opinions/{oid}/take"),
    )

    assert first.status_code == 200 and first.json()["to_user"] == "pr-neuro", first.text
    assert second.status_code == 409 and "pr-neuro has this second-opinion request" in second.json()["detail"]
    with desk.rt.db.sessions() as s:
        experts = s.execute(
            select(care.CareRelationship.professional).where(
                care.CareRelationship.context == f"second-opinion:{oid} expert"
            )
        ).scalars()
        assert list(experts) == ["pr-neuro"]


def test_an_answer_sent_twice_at_once_is_registered_once(desk: Desk, monkeypatch: pytest.MonkeyPatch) -> None:
    _desk, rid, study = _claimed(desk)
    oid = _ask(desk, study, rid, to_user="pr-neuro")["opinion_id"]
    hold = HoldFirst(inbox.notify_user)  # the answer's last step inside its transaction, after the re-check
    monkeypatch.setattr(inbox, "notify_user", hold)

    def answer(words: str) -> Callable[[], httpx.Response]:
        return lambda: desk.post("expert", f"/second-opinions/{oid}/answer", {"text": words})

    first, second = _interleave(desk.rt.db, hold, answer("Yes: early ischaemia."), answer("Yes (again)."))

    assert first.status_code == 200, first.text
    assert second.status_code == 409 and "was answered by pr-neuro" in second.json()["detail"]
    with desk.rt.db.sessions() as s:
        answers = list(
            s.execute(select(Document).where(Document.title == f"Second opinion #{oid}")).scalars()
        )
        op = s.get(SecondOpinion, oid)
        told = s.execute(
            select(func.count())
            .select_from(inbox.Notification)
            .where(inbox.Notification.title.like(f"Second opinion #{oid} answered%"))
        ).scalar_one()
    assert len(answers) == 1, [d.id for d in answers]  # the losing answer left no document
    assert op is not None and op.answer_document_id == str(answers[0].id)
    assert op.answer_text == "Yes: early ischaemia."
    assert told == 1


def test_two_frozen_section_claims_at_once_give_one_holder(
    ward: Ward,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ward.log_in("surgeon", "patho1", "patho2")
    rid = ward.request().json()["request_id"]
    hold = HoldFirst(frozen.claim)
    monkeypatch.setattr(frozen, "claim", hold)

    def claim(who: str) -> Callable[[], httpx.Response]:
        return lambda: ward.http.post(f"/api/frozen-sections/{rid}/claim", headers=ward.h(who))

    first, second = _interleave(ward.rt.db, hold, claim("patho1"), claim("patho2"))

    assert first.status_code == 200, first.text
    assert second.status_code == 409 and "claimed by patho-garde until" in second.json()["detail"]
    with ward.rt.db.sessions() as s:
        req = s.get(FrozenSectionRequest, rid)
        assert req is not None and req.claim_holder == "patho-garde"
