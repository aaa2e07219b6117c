"""The teleradiology worklist through the API, in process, on a test clock near real time: a site asks for a
reading, the study arrives and is linked by accession, a teleradiologist of another site claims it (exclusive,
the lock expires), lists the priors across sites, issues a preliminary report flagged critical (the requester
is told and acknowledges: a closed loop), signs the final report once, adds an addendum; the SLA sweep escalates
a request about to miss its due time once; every impossible step is refused with its reason."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from archipel.platform import inbox
from archipel.platform.authn import Principal
from archipel.platform.db import utcnow
from archipel.platform.notify import OutboxMessage
from archipel.platform.runtime import Runtime
from archipel.radiology import telerad, telerad_sla
from archipel.radiology.archive import Archive
from archipel.radiology.documents_models import Document
from archipel.radiology.samples import SyntheticPatient, ct_series, to_bytes, uid
from archipel.radiology.telerad_models import ReadingRequest
from tests.access_support import ensure_master
from tests.auth_helpers import Account, Clock, bearer, client, login, make_account

HOSPITAL, TELERAD, OTHER_SITE = "CH-NORD", "TELERAD-PACA", "CH-SUD"
PATIENT = SyntheticPatient("TR0001", "TELERADTEST^Alice", "19650505", "F", issuer=HOSPITAL)
#: The same woman at another site (an earlier CT there): a prior, found through the MPI.
PATIENT_ELSEWHERE = SyntheticPatient("SUD-77", "TELERADTEST^Alice", "19650505", "F", issuer=OTHER_SITE)
PEOPLE = {
    "requester": ("dr-urgentiste", "treating-doctor", HOSPITAL),
    "colleague": ("dr-collegue", "treating-doctor", HOSPITAL),
    "radio1": ("radio-garde", "radiologist", TELERAD),
    "radio2": ("radio-renfort", "radiologist", TELERAD),
    "outsider": ("dr-ailleurs", "treating-doctor", "CH-EST"),
}


@dataclass
class Desk:
    """The requesting hospital, the teleradiology pool, their tokens, and the archive."""

    rt: Runtime
    http: TestClient
    clock: Clock
    archive: Archive
    tokens: dict[str, str]
    accounts: dict[str, Account]

    def h(self, who: str) -> dict[str, str]:
        if who not in self.tokens:
            if who not in self.accounts:
                self.accounts[who] = make_account(self.rt, *PEOPLE[who])
            account = self.accounts[who]
            r = login(self.http, account, self.clock())
            assert r.status_code == 200, r.text
            self.tokens[who] = r.json()["access_token"]
        return bearer(self.tokens[who])

    def ask(self, **overrides: Any) -> httpx.Response:
        who = overrides.pop("_as", "requester")
        body = {
            "issuer": HOSPITAL,
            "patient_id": PATIENT.patient_id,
            "accession_number": "TR26-1",
            "clinical_info": "head trauma, on anticoagulants",
            "justification": "rule out intracranial bleeding",
            "priority": "stat",
            "subspecialty": "neuro",
            **overrides,
        }
        return self.http.post("/api/telerad/requests", json=body, headers=self.h(who))

    def later(self, **delta: float) -> None:
        """Move the clock on; sessions idle that long have expired, so everyone signs in again."""
        self.clock.advance(**delta)
        self.tokens.clear()

    def post(self, who: str, path: str, body: dict[str, Any] | None = None) -> httpx.Response:
        return self.http.post(f"/api/telerad{path}", json=body or {}, headers=self.h(who))

    def get(self, who: str, path: str, **params: Any) -> httpx.Response:
        return self.http.get(f"/api/telerad{path}", params=params, headers=self.h(who))

    def store_study(self, patient: SyntheticPatient, accession: str, date: str = "20261201") -> str:
        study = uid()
        for ds in ct_series(
            patient, 2, study_uid=study, accession=accession, rows=32, cols=32, study_date=date
        ):
            self.archive.store(to_bytes(ds))
        return study


@contextmanager
def open_desk(runtime: Runtime, archive: Archive) -> Iterator[Desk]:
    """The desk over a test runtime (shared with the other teleradiology test modules)."""
    # Two hours behind real time: the document registry weighs care relationships at the real time, and a
    # token issued at a clock ahead of it would not be valid yet; the tests move the clock by under an hour.
    clock = Clock(utcnow() - timedelta(hours=2))
    runtime.clock = clock
    runtime.settings.notify_url = ""
    ensure_master(runtime.db, HOSPITAL, PATIENT.patient_id, "TELERADTEST", PATIENT.birth_date)
    with client() as http:
        yield Desk(runtime, http, clock, archive, {}, {})


@pytest.fixture
def desk(runtime: Runtime, archive: Archive) -> Iterator[Desk]:
    with open_desk(runtime, archive) as d:
        yield d


def _outbox(rt: Runtime) -> list[OutboxMessage]:
    with rt.db.sessions() as s:
        return list(s.execute(select(OutboxMessage).order_by(OutboxMessage.id)).scalars())


def test_a_stat_request_waits_for_its_images_then_is_linked_when_the_study_arrives(desk: Desk) -> None:
    r = desk.ask()
    assert r.status_code == 201, r.text
    made = r.json()
    assert made["awaiting_images"] and made["study_uid"] == ""
    assert made["priority"] == "stat" and made["state"] == "requested"
    assert made["remaining_seconds"] == 30 * 60
    assert made["physician"]["username"] == "dr-urgentiste"

    study = desk.store_study(PATIENT, "TR26-1")
    linked = desk.get("radio1", f"/requests/{made['request_id']}").json()
    assert linked["study_uid"] == study
    assert linked["viewer_url"] == f"/app/study.html?study={study}"


def test_worklist_is_ordered_by_due_time_and_filtered_by_priority_subspecialty_and_site(desk: Desk) -> None:
    desk.store_study(PATIENT, "TR26-1")
    emergency = desk.ask(priority="emergency", accession_number="TR26-1", subspecialty="msk").json()
    stat = desk.ask(priority="stat", accession_number="TR26-1").json()
    urgent = desk.ask(priority="urgent", accession_number="TR26-1").json()
    items = desk.get("radio1", "/requests").json()["requests"]
    assert [i["request_id"] for i in items] == [
        stat["request_id"],
        urgent["request_id"],
        emergency["request_id"],
    ]
    assert [
        i["request_id"] for i in desk.get("radio1", "/requests", priority="urgent").json()["requests"]
    ] == [urgent["request_id"]]
    assert [
        i["request_id"] for i in desk.get("radio1", "/requests", subspecialty="msk").json()["requests"]
    ] == [emergency["request_id"]]
    assert desk.get("radio1", "/requests", site="CH-EST").json()["requests"] == []
    assert len(desk.get("radio1", "/requests", site=HOSPITAL).json()["requests"]) == 3
    # A professional of another site sees none of them; the requester sees their own.
    assert desk.get("outsider", "/requests").json()["requests"] == []
    assert len(desk.get("requester", "/requests").json()["requests"]) == 3


def test_wrong_priority_and_unknown_patient_are_refused_with_their_reason(desk: Desk) -> None:
    r = desk.ask(priority="whenever")
    assert r.status_code == 422 and "unknown priority 'whenever'" in r.json()["detail"]
    r = desk.ask(patient_id="NOBODY")
    assert r.status_code == 422 and "unknown to the master patient index" in r.json()["detail"]
    r = desk.ask(accession_number="")
    assert r.status_code == 422 and "accession number is required" in r.json()["detail"]
    assert desk.get("radio1", "/requests", priority="soon").status_code == 422
    r = desk.ask(_as="outsider")
    assert r.status_code == 403
    with desk.rt.db.sessions() as s:
        assert s.execute(select(func.count()).select_from(ReadingRequest)).scalar_one() == 0


def test_an_order_sent_twice_by_the_ris_makes_one_request_and_can_be_cancelled_by_placer_order(
    desk: Desk,
) -> None:
    ris = Principal("ris-ch-nord", "", HOSPITAL, kind="node")
    common: dict[str, Any] = dict(
        issuer=HOSPITAL, patient_id=PATIENT.patient_id, accession_number="TR26-9", requesting_site=HOSPITAL,
        physician={"name": "DR^Invented", "phone": "+33 4 00 00 00 01"}, clinical_info="fall",
        justification="fracture?", priority="urgent", placer_order="ORD-42",
    )  # fmt: skip
    first = telerad.create_request(desk.rt.db, ris, **common)
    again = telerad.create_request(desk.rt.db, ris, **common)
    assert again.id == first.id
    assert again.due_at - again.requested_at == timedelta(hours=1)
    done = telerad.cancel_request(
        desk.rt.db, ris, requesting_site=HOSPITAL, placer_order="ORD-42", reason="dup"
    )
    assert done.state == "cancelled"
    assert desk.get("radio1", "/requests").json()["requests"] == []


def test_claim_is_exclusive_and_an_expired_lock_is_taken_over(desk: Desk) -> None:
    desk.store_study(PATIENT, "TR26-1")
    rid = desk.ask().json()["request_id"]
    r = desk.post("radio1", f"/requests/{rid}/claim")
    assert r.status_code == 200, r.text
    assert r.json()["claim"]["holder"] == "radio-garde" and r.json()["state"] == "claimed"

    r = desk.post("radio2", f"/requests/{rid}/claim")
    assert r.status_code == 409 and "claimed by radio-garde until" in r.json()["detail"]
    assert desk.post("radio2", f"/requests/{rid}/release").status_code == 409
    assert desk.post("requester", f"/requests/{rid}/claim").status_code == 403

    desk.later(minutes=telerad.CLAIM_MINUTES + 1)
    assert desk.get("radio1", f"/requests/{rid}").json()["state"] == "requested"
    r = desk.post("radio2", f"/requests/{rid}/claim")
    assert r.status_code == 200 and r.json()["claim"]["holder"] == "radio-renfort"
    assert desk.post("radio2", f"/requests/{rid}/release").json()["state"] == "requested"


def test_priors_are_listed_across_sites_through_the_mpi_once_claimed(desk: Desk) -> None:
    current = desk.store_study(PATIENT, "TR26-1")
    prior = desk.store_study(PATIENT_ELSEWHERE, "SUD-2019", date="20190301")
    master = ensure_master(desk.rt.db, HOSPITAL, PATIENT.patient_id)
    assert ensure_master(desk.rt.db, OTHER_SITE, PATIENT_ELSEWHERE.patient_id) == master
    rid = desk.ask().json()["request_id"]
    # Before the claim, the teleradiologist has no relationship with the patient: no priors are visible.
    assert desk.get("radio1", f"/requests/{rid}/priors").json()["priors"] == []
    desk.post("radio1", f"/requests/{rid}/claim")
    found = desk.get("radio1", f"/requests/{rid}/priors").json()["priors"]
    assert [p["study_uid"] for p in found] == [prior]
    assert found[0]["site"] == OTHER_SITE and found[0]["status"] == "listed"
    assert current not in {p["study_uid"] for p in found}


def test_report_preliminary_then_final_signed_once_and_an_addendum(desk: Desk) -> None:
    desk.store_study(PATIENT, "TR26-1")
    rid = desk.ask().json()["request_id"]
    r = desk.post("radio1", f"/requests/{rid}/report", {"text": "No bleeding seen."})
    assert r.status_code == 409 and "claim the request" in r.json()["detail"]
    desk.post("radio1", f"/requests/{rid}/claim")
    assert desk.post("radio2", f"/requests/{rid}/report", {"text": "x"}).status_code == 403

    r = desk.post("radio1", f"/requests/{rid}/report", {"text": "No bleeding seen (preliminary)."})
    assert r.status_code == 200, r.text
    assert r.json()["state"] == "preliminary"
    doc_id = int(r.json()["reports"][0]["document_id"])

    r = desk.post("radio1", f"/requests/{rid}/sign", {"text": "No intracranial bleeding. No fracture."})
    assert r.status_code == 200, r.text
    assert r.json()["state"] == "final" and r.json()["final_by"] == "radio-garde"
    assert r.json()["remaining_seconds"] is None
    with desk.rt.db.sessions() as s:
        doc = s.get(Document, doc_id)
        assert doc is not None and doc.status == "final" and doc.signed_by == "radio-garde"

    r = desk.post("radio1", f"/requests/{rid}/sign", {"text": "changed my mind"})
    assert r.status_code == 409 and "signed" in r.json()["detail"]
    assert desk.post("radio1", f"/requests/{rid}/report", {"text": "again"}).status_code == 409

    r = desk.post(
        "radio1", f"/requests/{rid}/addenda", {"text": "Small scalp haematoma.", "reason": "missed"}
    )
    assert r.status_code == 201, r.text
    assert [x["kind"] for x in r.json()["reports"]] == ["final", "addendum"]
    with desk.rt.db.sessions() as s:
        doc = s.get(Document, doc_id)
        assert doc is not None and doc.status == "amended"
    assert desk.post("requester", f"/requests/{rid}/cancel", {"reason": "late"}).status_code == 409


def test_a_critical_result_reaches_the_requester_and_closes_when_acknowledged(desk: Desk) -> None:
    desk.store_study(PATIENT, "TR26-1")
    desk.h("requester")  # the requester has an account: the result goes to their inbox
    rid = desk.ask(physician={"name": "DR^Urgentiste", "email": "urgences@example.org",
                              "username": "dr-urgentiste"}).json()["request_id"]  # fmt: skip
    desk.post("radio1", f"/requests/{rid}/claim")
    r = desk.post("radio1", f"/requests/{rid}/report", {"text": "Subdural haematoma.", "critical": True})
    assert r.status_code == 422 and "critical_finding" in r.json()["detail"]
    r = desk.post("radio1", f"/requests/{rid}/report", {"text": "Subdural haematoma, 8 mm.", "critical": True,
                                                         "critical_finding": "acute subdural haematoma"})  # fmt: skip
    assert r.status_code == 200, r.text
    [critical] = r.json()["critical_results"]
    assert critical["state"] == "pending" and critical["recipient"] == "dr-urgentiste"
    with desk.rt.db.sessions() as s:
        notes = list(
            s.execute(
                select(inbox.Notification).where(inbox.Notification.recipient == "dr-urgentiste")
            ).scalars()
        )
    assert len(notes) == 1 and notes[0].requires_ack and notes[0].kind == "critical-result"
    assert [m.recipient for m in _outbox(desk.rt)] == ["urgences@example.org"]
    assert "TELERADTEST" not in _outbox(desk.rt)[0].body  # no patient name leaves the platform

    # A second critical report while one is pending does not raise a second result.
    desk.post(
        "radio1", f"/requests/{rid}/report", {"text": "idem", "critical": True, "critical_finding": "idem"}
    )
    assert len(desk.get("radio1", f"/requests/{rid}").json()["critical_results"]) == 1

    # Unacknowledged: sent again after 15 minutes, escalated once after 30.
    desk.later(minutes=16)
    assert telerad_sla.sweep(desk.rt.db, desk.clock())["critical_resent"] == 1
    desk.later(minutes=16)
    done = telerad_sla.sweep(desk.rt.db, desk.clock())
    assert done["critical_escalated"] == 1
    assert telerad_sla.sweep(desk.rt.db, desk.clock())["critical_escalated"] == 0

    cid = critical["critical_id"]
    assert desk.post("outsider", f"/critical-results/{cid}/acknowledge").status_code == 403
    assert desk.post("radio2", f"/critical-results/{cid}/acknowledge").status_code == 403
    r = desk.post("requester", f"/critical-results/{cid}/acknowledge")
    assert r.status_code == 200, r.text
    assert r.json()["state"] == "acknowledged" and r.json()["acknowledged_by"] == "dr-urgentiste"
    first = r.json()["acknowledged_at"]
    again = desk.post("requester", f"/critical-results/{cid}/acknowledge").json()
    assert again["acknowledged_at"] == first
    desk.later(minutes=20)
    assert telerad_sla.sweep(desk.rt.db, desk.clock())["critical_resent"] == 0


def test_a_critical_result_to_a_requester_without_account_goes_by_sms_and_is_read_back(desk: Desk) -> None:
    desk.store_study(PATIENT, "TR26-1")
    rid = desk.ask(physician={"name": "DR^Sans-Compte", "phone": "+33 6 00 00 00 09"}).json()["request_id"]
    desk.post("radio1", f"/requests/{rid}/claim")
    r = desk.post("radio1", f"/requests/{rid}/sign", {"text": "Pneumothorax.", "critical": True,
                                                       "critical_finding": "large pneumothorax"})  # fmt: skip
    assert r.status_code == 200, r.text
    assert [(m.channel, m.recipient) for m in _outbox(desk.rt)] == [("sms", "+33 6 00 00 00 09")]
    cid = r.json()["critical_results"][0]["critical_id"]
    assert (
        desk.post(
            "radio2", f"/critical-results/{cid}/acknowledge", {"read_back": "DR Sans-Compte"}
        ).status_code
        == 403
    )
    r = desk.post("radio1", f"/critical-results/{cid}/acknowledge", {"read_back": "DR Sans-Compte"})
    assert r.status_code == 200 and r.json()["state"] == "acknowledged"
    assert "read back by telephone to radio-garde" in r.json()["acknowledged_by"]


def test_the_sla_sweep_escalates_a_request_about_to_miss_its_due_time_once(desk: Desk) -> None:
    desk.store_study(PATIENT, "TR26-1")
    stat = desk.ask().json()["request_id"]
    emergency = desk.ask(priority="emergency").json()["request_id"]
    desk.h("radio1"), desk.h("radio2")
    assert telerad_sla.sweep(desk.rt.db, desk.clock())["escalated"] == 0
    desk.later(minutes=21)  # 9 minutes left of the STAT's 30
    assert telerad_sla.sweep(desk.rt.db, desk.clock())["escalated"] == 1
    assert telerad_sla.sweep(desk.rt.db, desk.clock())["escalated"] == 0
    with desk.rt.db.sessions() as s:
        notes = list(s.execute(select(inbox.Notification).where(inbox.Notification.kind == "sla")).scalars())
    assert sorted(n.recipient for n in notes) == ["radio-garde", "radio-renfort"]
    assert all(f"#{stat}" in n.title for n in notes)
    item = desk.get("radio1", f"/requests/{stat}").json()
    assert item["escalated_at"] is not None and 0 < item["remaining_seconds"] <= 9 * 60
    assert desk.get("radio1", f"/requests/{emergency}").json()["escalated_at"] is None
    desk.later(minutes=10)
    assert desk.get("radio1", f"/requests/{stat}").json()["overdue"] is True


def test_a_reading_request_shows_in_the_professional_timeline_of_whoever_may_see_it(desk: Desk) -> None:
    desk.store_study(PATIENT, "TR26-1")
    rid = desk.ask().json()["request_id"]
    master = ensure_master(desk.rt.db, HOSPITAL, PATIENT.patient_id)
    desk.post("radio1", f"/requests/{rid}/claim")
    r = desk.http.get(
        f"/api/patients/{master}/timeline", params={"kind": "reading-request"}, headers=desk.h("radio1")
    )
    assert r.status_code == 200, r.text
    [item] = r.json()["items"]
    assert item["id"] == str(rid) and item["status"] == "claimed" and item["released"] is False
    assert item["links"]["worklist"] == f"/app/telerad-worklist.html?request={rid}"
    mine = desk.http.get(
        f"/api/patients/{master}/timeline", params={"kind": "reading-request"}, headers=desk.h("requester")
    )
    assert [i["id"] for i in mine.json()["items"]] == [str(rid)]
    assert desk.http.get(f"/api/patients/{master}/timeline", headers=desk.h("outsider")).status_code == 403


def test_acknowledging_the_critical_result_in_the_inbox_closes_the_loop(desk: Desk) -> None:
    desk.store_study(PATIENT, "TR26-1")
    desk.h("requester")
    rid = desk.ask().json()["request_id"]
    desk.post("radio1", f"/requests/{rid}/claim")
    report = {"text": "Aortic dissection.", "critical": True, "critical_finding": "type A dissection"}
    r = desk.post("radio1", f"/requests/{rid}/report", report)
    assert r.status_code == 200, r.text
    with desk.rt.db.sessions() as s:
        note = s.execute(
            select(inbox.Notification).where(inbox.Notification.kind == "critical-result")
        ).scalar_one()
    acked = desk.http.post(f"/api/inbox/{note.id}/acknowledge", headers=desk.h("requester"))
    assert acked.status_code == 200, acked.text
    assert telerad_sla.sweep(desk.rt.db, desk.clock())["critical_closed"] == 1
    [critical] = desk.get("radio1", f"/requests/{rid}").json()["critical_results"]
    assert critical["state"] == "acknowledged" and critical["acknowledged_by"] == "dr-urgentiste"
