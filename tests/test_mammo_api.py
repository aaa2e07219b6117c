"""Screening double reading through the HTTP API, in process, on a test clock, for both protocols: intake of a
real MG study (STOW-RS, and the archive's store), the L1 form, L2 or two blind reads, discordance, arbitration,
decision, the letters in the outbox, the outcome and the metrics; the blinding and same-reader refusals with
their audit events; and bad input refused with its reason, nothing recorded changed."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from archipel.mammo import volumes
from archipel.mammo.models import Episode, Reading, ReadingTask, ScreeningDecision
from archipel.platform import notify
from archipel.platform.audit import AuditEvent
from archipel.platform.notify import OutboxMessage
from archipel.platform.runtime import Runtime
from archipel.radiology.archive import Archive
from archipel.radiology.samples import SyntheticPatient, mammo_study, to_bytes
from tests.access_support import ensure_master
from tests.auth_helpers import Account, Clock, bearer, client, login, make_account
from tests.dicomweb_messages import stow_body

sqlite_only = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
pytestmark = sqlite_only

CENTRE, COORDINATION = "CENTRE-A", "CRCDC"
EXAM = "2026-03-05"
#: user name, role, site
PEOPLE = {
    "admin": ("admin-depistage", "admin", ""),
    "centre": ("radio-centre", "radiologist", CENTRE),
    "l2a": ("lecteur-un", "screening-reader", COORDINATION),
    "l2b": ("lecteur-deux", "screening-reader", COORDINATION),
    "r1": ("reader-one", "screening-reader", COORDINATION),
    "r2": ("reader-two", "screening-reader", COORDINATION),
    "arb": ("arbitrator", "screening-reader", COORDINATION),
    "coord": ("coordinatrice", "screening-reader", COORDINATION),
}
NORMAL_READ = {"right": {"assessment": 1}, "left": {"assessment": 2}, "density": "b"}
POSITIVE_LEFT = {
    "right": {"assessment": 1, "result": "normal"},
    "left": {"assessment": 4, "result": "positive"},
    "density": "c",
    "findings": [
        {
            "type": "mass",
            "laterality": "L",
            "quadrant": "UOQ",
            "depth": "middle",
            "views": [{"view": "L-CC", "x": 120.5, "y": 80}, {"view": "L-MLO", "x": 130, "y": 60}],
            "suspicion": 4,
        }
    ],
    "further_tests": "ultrasound and biopsy",
}


@dataclass
class Programme:
    """The in-process application, its people, and helpers to call it."""

    rt: Runtime
    http: TestClient
    clock: Clock
    tokens: dict[str, str]
    accounts: dict[str, Account]

    def later(self, **delta: float) -> None:
        """Move the clock on; everyone logs in again (tokens are short-lived)."""
        self.clock.advance(**delta)
        self.tokens.clear()

    def h(self, who: str) -> dict[str, str]:
        if who not in self.tokens:
            account = self.accounts.get(who) or make_account(self.rt, *PEOPLE[who])
            self.accounts[who] = account
            r = login(self.http, account, self.clock())
            assert r.status_code == 200, r.text
            self.tokens[who] = r.json()["access_token"]
        return bearer(self.tokens[who])

    def post(self, who: str, url: str, body: dict[str, Any] | None = None) -> httpx.Response:
        return self.http.post(url, json=body if body is not None else {}, headers=self.h(who))

    def get(self, who: str, url: str) -> httpx.Response:
        return self.http.get(url, headers=self.h(who))

    def setup(self, code: str, protocol: str, **settings: Any) -> None:
        r = self.post("admin", "/api/mammo/programmes", {"code": code, "protocol": protocol, **settings})
        assert r.status_code == 201, r.text
        quals = {"fr-depistage": [("centre", "l1"), ("centre", "l2"), ("l2a", "l2"), ("l2b", "l2")]}
        quals["eu-blinded"] = [("r1", "reader"), ("r2", "reader"), ("arb", "arbitrator")]
        quals[protocol].append(("coord", "coordinator"))
        for who, q in quals[protocol]:
            r = self.post(
                "admin",
                f"/api/mammo/programmes/{code}/readers",
                {"reader": PEOPLE[who][0], "qualification": q},
            )
            assert r.status_code == 201, r.text

    def counts(self) -> tuple[int, int, int, int]:
        with self.rt.db.sessions() as s:
            return (
                s.execute(select(func.count()).select_from(Episode)).scalar_one(),
                s.execute(select(func.count()).select_from(Reading)).scalar_one(),
                s.execute(select(func.count()).select_from(ScreeningDecision)).scalar_one(),
                s.execute(select(func.count()).select_from(OutboxMessage)).scalar_one(),
            )

    def denied(self, action: str) -> list[AuditEvent]:
        with self.rt.db.sessions() as s:
            q = select(AuditEvent).where(AuditEvent.outcome == "denied", AuditEvent.action == action)
            return list(s.execute(q.order_by(AuditEvent.id)).scalars())

    def task(self, episode_id: int, role: str) -> int:
        with self.rt.db.sessions() as s:
            return s.execute(
                select(ReadingTask.id).where(ReadingTask.episode_id == episode_id, ReadingTask.role == role)
            ).scalar_one()


@pytest.fixture
def prog(runtime: Runtime) -> Iterator[Programme]:
    clock = Clock(datetime(2026, 3, 6, 9, 0, tzinfo=UTC))
    runtime.clock = clock
    with client() as http:
        yield Programme(runtime, http, clock, {}, {})


def woman(n: int) -> SyntheticPatient:
    return SyntheticPatient(f"MG{n:04d}", f"TESTMAMMO^N{n}", "19600101", "F", issuer=CENTRE)


def stow(p: Programme, patient: SyntheticPatient, key: str) -> str:
    """Send the four-view study by STOW-RS as the centre's radiologist; returns its StudyInstanceUID."""
    ensure_master(p.rt.db, CENTRE, patient.patient_id, f"MAMMO{patient.patient_id}", "19600101")
    images = mammo_study(patient, key=key)
    boundary = f"b-{uuid.uuid4().hex}"
    headers = {
        **p.h("centre"),
        "Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}',
    }
    r = p.http.post(
        "/dicom-web/studies", content=stow_body([to_bytes(ds) for ds in images], boundary), headers=headers
    )
    assert r.status_code == 200, r.text
    return str(images[0].StudyInstanceUID)


def l1_form(patient: SyntheticPatient, read: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {
        "programme": "fr",
        "issuer": CENTRE,
        "patient_id": patient.patient_id,
        "site": CENTRE,
        "round": "first",
        "screen_date": EXAM,
        "woman_contact": "woman@example.org",
        "gp_contact": "gp@example.org",
        "history": "no family history",
        "clinical_exam": "normal",
        "read": read,
        **extra,
    }


def test_french_programme_from_l1_form_to_metrics(prog: Programme) -> None:
    p = prog
    p.setup("fr", "fr-depistage", min_yearly_reads=1500)
    mg = woman(1)
    ensure_master(p.rt.db, CENTRE, mg.patient_id, f"MAMMO{mg.patient_id}", "19600101")

    # A form naming a study the archive does not hold is refused, and records nothing.
    before = p.counts()
    r = p.post("centre", "/api/mammo/l1-forms", l1_form(mg, NORMAL_READ, study_uid="1.2.826.0.1.999"))
    assert r.status_code == 404 and "no mammography study" in r.json()["detail"]
    assert p.counts() == before
    # An assessment out of range is refused.
    bad = {**NORMAL_READ, "right": {"assessment": 7}}
    assert p.post("centre", "/api/mammo/l1-forms", l1_form(mg, bad)).status_code == 422
    assert p.counts() == before

    # The L1 form before the images: the episode waits, and is on the reconciliation list.
    r = p.post("centre", "/api/mammo/l1-forms", l1_form(mg, NORMAL_READ))
    assert r.status_code == 201, r.text
    episode = r.json()
    assert episode["status"] == "awaiting-images"
    rec = p.get("centre", "/api/mammo/reconciliation").json()
    assert [e["episode_id"] for e in rec["episodes_without_study"]] == [episode["id"]]
    assert p.post("centre", "/api/mammo/l1-forms", l1_form(mg, NORMAL_READ)).status_code == 409

    # The study arrives by STOW: matched to the episode, views normalised, an L2 task created.
    p.later(days=1)
    study_uid = stow(p, mg, "fr-1")
    ep = p.get("centre", f"/api/mammo/episodes/{episode['id']}").json()
    assert ep["status"] == "reading" and ep["flag"] == ""
    assert sorted(f"{v['laterality']}-{v['view']}" for v in ep["studies"][0]["views"]) == [
        "L-CC", "L-MLO", "R-CC", "R-MLO",
    ]  # fmt: skip
    assert ep["studies"][0]["study_uid"] == study_uid
    assert [t["role"] for t in ep["tasks"]] == ["l2"]
    assert p.get("centre", "/api/mammo/reconciliation").json()["episodes_without_study"] == []
    task = ep["tasks"][0]["id"]

    # The L1 radiologist may not be L2 of the same exam: refused and audited.
    r = p.post("centre", f"/api/mammo/tasks/{task}/claim")
    assert r.status_code == 403 and "never be both L1 and L2" in r.json()["detail"]
    assert p.denied("update:reading-task")[-1].detail == r.json()["detail"]
    assert p.get("centre", "/api/mammo/worklist").json() == []

    # An L2 reader of the coordination centre sees nothing of the woman before claiming the case.
    assert p.get("l2a", f"/api/mammo/episodes/{ep['id']}").status_code == 403
    worklist = p.get("l2a", "/api/mammo/worklist?role=l2").json()
    assert [w["task_id"] for w in worklist] == [task]
    assert p.post("l2a", f"/api/mammo/tasks/{task}/claim").status_code == 200
    assert p.post("l2b", f"/api/mammo/tasks/{task}/claim").status_code == 409
    # L2 sees L1's form.
    l1_id = p.get("l2a", f"/api/mammo/episodes/{ep['id']}").json()["readings"][0]["id"]
    l1 = p.get("l2a", f"/api/mammo/episodes/{ep['id']}/readings/{l1_id}").json()
    assert l1["form"]["history"] == "no family history" and l1["density_fr"] == 2

    # A decision before both reads, and a read out of range, are refused and change nothing.
    before = p.counts()
    r = p.post("l2a", f"/api/mammo/episodes/{ep['id']}/decision")
    assert r.status_code == 409 and "waiting for the l2 read" in r.json()["detail"]
    r = p.post("l2a", f"/api/mammo/tasks/{task}/reading", {**POSITIVE_LEFT, "left": {"assessment": 6}})
    assert r.status_code == 422
    no_finding = {**POSITIVE_LEFT, "findings": []}
    r = p.post("l2a", f"/api/mammo/tasks/{task}/reading", no_finding)
    assert r.status_code == 422 and "has no finding" in r.text
    assert p.counts() == before

    # L2 positive: the decision is a recall, letters to the woman and her GP go to the outbox.
    p.later(days=2)
    # The claim lapsed after four hours, and the reading assignment with it: the reader claims again.
    r = p.post("l2a", f"/api/mammo/tasks/{task}/reading", POSITIVE_LEFT)
    assert r.status_code == 403 and "no care relationship" in r.json()["detail"]
    assert p.post("l2a", f"/api/mammo/tasks/{task}/claim").status_code == 200
    r = p.post("l2a", f"/api/mammo/tasks/{task}/reading", POSITIVE_LEFT)
    assert r.status_code == 201, r.text
    read_once = p.counts()
    r = p.post("l2a", f"/api/mammo/tasks/{task}/reading", NORMAL_READ)
    assert r.status_code == 409 and "submitted already" in r.json()["detail"]
    assert p.counts() == read_once
    r = p.post("l2a", f"/api/mammo/episodes/{ep['id']}/decision")
    assert r.status_code == 201, r.text
    decided = r.json()["decision"]
    assert decided["decision"] == "recall" and decided["result"] == "queued"
    assert decided["result_sent_at"] is None and decided["within_deadline"] is None
    assert "deferred work-up through L1 and the GP" in decided["reasons"]
    with p.rt.db.sessions() as s:
        letters = s.execute(select(OutboxMessage).where(OutboxMessage.id.in_(decided["letters"]))).scalars()
        assert sorted(m.recipient for m in letters) == ["gp@example.org", "woman@example.org"]
    assert p.post("l2a", f"/api/mammo/episodes/{ep['id']}/decision").status_code == 409
    assert r.json()["delays"]["received_to_result_days"] is None  # queued is not sent
    # The letters leave the outbox an hour later: the result is sent then.
    p.later(hours=1)
    assert (
        notify.deliver_pending(p.rt.db, notify.FileSender(p.rt.settings.data_dir / "outbox"), clock=p.clock)
        == 2
    )
    sent = p.get("l2a", f"/api/mammo/episodes/{ep['id']}").json()
    assert sent["decision"]["result"] == "sent" and sent["decision"]["within_deadline"] is True
    assert sent["decision"]["result_sent_at"] == p.clock().isoformat()
    delays = sent["delays"]
    assert delays["exam_to_received_days"] is not None and delays["received_to_result_days"] == 2.04

    # The outcome, then the metrics.
    outcome = {"outcome": "cancer_invasive", "workup": "biopsy", "biopsy": True, "size_mm": 12}
    # Not an interval cancer (she was recalled), and nothing is diagnosed before the screening.
    interval = {"outcome": "interval_cancer", "diagnosed_on": "2027-01-05"}
    r = p.post("centre", f"/api/mammo/episodes/{ep['id']}/outcomes", interval)
    assert r.status_code == 422 and "it was recall" in r.text, r.text
    r = p.post(
        "centre", f"/api/mammo/episodes/{ep['id']}/outcomes", {**outcome, "diagnosed_on": "2001-01-01"}
    )
    assert r.status_code == 422 and "before the screening" in r.text, r.text
    assert p.post("centre", f"/api/mammo/episodes/{ep['id']}/outcomes", outcome).status_code == 201
    assert p.get("l2a", "/api/mammo/metrics?programme=fr").status_code == 403
    m = p.get("coord", "/api/mammo/metrics?programme=fr").json()
    assert m["screened"] == 1 and m["recall_rate"] == 1.0 and m["cancer_detection_rate"] == 1000.0
    assert m["ppv_recall"] == 1.0 and m["l2_only_cancer_share"] == 1.0
    readers = {r["reader"]: r for r in m["readers"]}
    assert readers["lecteur-un"]["cancers_found"] == 1 and readers["lecteur-un"]["yearly_minimum"] == 1500
    csv_text = p.get("coord", "/api/mammo/metrics?programme=fr&format=csv").text
    assert ",recall_rate,1,1,1.0,proportion,Recall rate: women recalled" in csv_text


def test_blinded_programme_with_discordance_and_blind_arbitration(prog: Programme) -> None:
    p = prog
    p.setup("eu", "eu-blinded", arbitrator_sees_reads=False, min_yearly_reads=5000)
    mg = woman(2)
    ensure_master(p.rt.db, CENTRE, mg.patient_id, f"MAMMO{mg.patient_id}", "19600101")
    body = {
        "programme": "eu", "issuer": CENTRE, "patient_id": mg.patient_id, "site": CENTRE, "round": "subsequent",
        "screen_date": EXAM, "woman_contact": "woman2@example.org", "gp_contact": "gp2@example.org",
    }  # fmt: skip
    r = p.post("centre", "/api/mammo/episodes", body)
    assert r.status_code == 201, r.text
    eid = r.json()["id"]
    # The study through the archive's own store (as C-STORE and STOW do).
    archive = Archive(p.rt.db, p.rt.blobs)
    for ds in mammo_study(mg, key="eu-1"):
        archive.store(to_bytes(ds))
    ep = p.get("centre", f"/api/mammo/episodes/{eid}").json()
    assert sorted(t["role"] for t in ep["tasks"]) == ["first", "second"]

    first, second = p.task(eid, "first"), p.task(eid, "second")
    assert p.post("r1", f"/api/mammo/tasks/{first}/claim").status_code == 200
    assert p.post("r1", f"/api/mammo/tasks/{first}/reading", NORMAL_READ).status_code == 201
    # The first reader cannot make the second read too: refused and audited.
    r = p.post("r1", f"/api/mammo/tasks/{second}/claim")
    assert r.status_code == 403 and "two different readers" in r.json()["detail"]
    assert p.denied("update:reading-task")

    assert p.post("r2", f"/api/mammo/tasks/{second}/claim").status_code == 200
    readings = p.get("r2", f"/api/mammo/episodes/{eid}").json()["readings"]
    first_read = readings[0]["id"]
    # Blinding, enforced by the server: the second reader may not see the first read yet; audited.
    r = p.get("r2", f"/api/mammo/episodes/{eid}/readings/{first_read}")
    assert r.status_code == 403 and "hidden until both reads" in r.json()["detail"]
    event = p.denied("read:screening-reading")[-1]
    assert event.actor == "reader-two" and event.patient == f"{CENTRE}/{mg.patient_id}"
    # A decision before both reads is refused.
    assert p.post("r2", f"/api/mammo/episodes/{eid}/decision").status_code == 409

    assert p.post("r2", f"/api/mammo/tasks/{second}/reading", POSITIVE_LEFT).status_code == 201
    # Both submitted: each reader now sees the other's read; the discordance goes to the arbitrator.
    assert p.get("r2", f"/api/mammo/episodes/{eid}/readings/{first_read}").status_code == 200
    ep = p.get("r2", f"/api/mammo/episodes/{eid}").json()
    assert ep["next"]["role"] == "arbitration"
    assert ep["next"]["reasons"] == ["left breast: normal (first) vs positive (second)"]
    arbitration = p.task(eid, "arbitration")
    assert p.post("r1", f"/api/mammo/tasks/{arbitration}/claim").status_code == 403
    assert p.post("arb", f"/api/mammo/tasks/{arbitration}/claim").status_code == 200
    # This programme's arbitrator reads blind.
    r = p.get("arb", f"/api/mammo/episodes/{eid}/readings/{first_read}")
    assert r.status_code == 403 and "blinded arbitration" in r.json()["detail"]
    assert p.post("arb", f"/api/mammo/tasks/{arbitration}/reading", POSITIVE_LEFT).status_code == 201

    r = p.post("arb", f"/api/mammo/episodes/{eid}/decision")
    assert r.status_code == 201, r.text
    assert r.json()["decision"]["decision"] == "recall"
    with p.rt.db.sessions() as s:
        recipients = s.execute(
            select(OutboxMessage.recipient).where(OutboxMessage.purpose == "screening-result")
        )
        assert sorted(recipients.scalars()) == ["gp2@example.org", "woman2@example.org"]
    assert p.post("centre", f"/api/mammo/episodes/{eid}/outcomes", {"outcome": "benign"}).status_code == 201
    m = p.get("coord", "/api/mammo/metrics?programme=eu").json()
    assert m["screened"] == 1 and m["recall_rate_by_round"] == {"first": None, "subsequent": 1.0}
    assert m["ppv_recall"] == 0.0
    readers = {r["reader"]: r for r in m["readers"]}
    # Statistics use the blind reads: the arbitrator has none.
    assert set(readers) == {"reader-one", "reader-two"}
    assert readers["reader-one"]["recall_rate"] == 0.0 and readers["reader-two"]["recall_rate"] == 1.0
    assert readers["reader-one"]["below_minimum"]


def test_images_without_laterality_flag_the_episode_and_hold_it_back(prog: Programme) -> None:
    p = prog
    p.setup("eu", "eu-blinded")
    mg = woman(3)
    ensure_master(p.rt.db, CENTRE, mg.patient_id, f"MAMMO{mg.patient_id}", "19600101")
    images = mammo_study(mg, key="flag-1")
    del images[0].ImageLaterality
    del images[0].Laterality
    archive = Archive(p.rt.db, p.rt.blobs)
    for ds in images:
        archive.store(to_bytes(ds))
    # The study came before its episode: it waits on the reconciliation list.
    rec = p.get("centre", "/api/mammo/reconciliation").json()
    assert [x["study_uid"] for x in rec["studies_without_episode"]] == [str(images[0].StudyInstanceUID)]
    assert "has no laterality" in rec["studies_without_episode"][0]["flag"]
    body = {"programme": "eu", "issuer": CENTRE, "patient_id": mg.patient_id, "site": CENTRE,
            "round": "first", "screen_date": EXAM}  # fmt: skip
    r = p.post("centre", "/api/mammo/episodes", body)
    assert r.status_code == 201
    assert r.json()["status"] == "flagged" and "has no laterality" in r.json()["flag"]
    assert r.json()["tasks"] == []
    assert p.get("r1", "/api/mammo/worklist").json() == []


def test_worklist_holds_back_cases_awaiting_priors_and_honours_skips(prog: Programme) -> None:
    p = prog
    p.setup("eu", "eu-blinded")
    mg = woman(4)
    ensure_master(p.rt.db, CENTRE, mg.patient_id, f"MAMMO{mg.patient_id}", "19600101")
    body = {"programme": "eu", "issuer": CENTRE, "patient_id": mg.patient_id, "site": CENTRE,
            "round": "subsequent", "screen_date": EXAM, "priority": 3, "batch": "clinic-12"}  # fmt: skip
    eid = p.post("centre", "/api/mammo/episodes", body).json()["id"]
    archive = Archive(p.rt.db, p.rt.blobs)
    for ds in mammo_study(mg, key="priors-1"):
        archive.store(to_bytes(ds))
    assert p.post("centre", f"/api/mammo/episodes/{eid}/priors", {"status": "requested"}).status_code == 200
    assert p.get("r1", "/api/mammo/worklist").json() == []
    first = p.task(eid, "first")
    r = p.post("r1", f"/api/mammo/tasks/{first}/claim")
    assert r.status_code == 409 and "priors" in r.json()["detail"]
    assert p.post("centre", f"/api/mammo/episodes/{eid}/priors", {"status": "received"}).status_code == 200
    listed = p.get("r1", "/api/mammo/worklist").json()
    assert {w["role"] for w in listed} == {"first", "second"} and listed[0]["batch"] == "clinic-12"
    # A skip needs a reason; a skipped case is not offered again to that reader.
    assert p.post("r1", f"/api/mammo/tasks/{first}/skip", {"reason": ""}).status_code == 422
    assert p.post("r1", f"/api/mammo/tasks/{first}/skip", {"reason": "knows the woman"}).status_code == 200
    assert [w["role"] for w in p.get("r1", "/api/mammo/worklist").json()] == ["second"]
    assert [w["task_id"] for w in p.get("r2", "/api/mammo/worklist?role=first").json()] == [first]
    r = p.post("r2", f"/api/mammo/tasks/{first}/defer", {"reason": "needs the magnifier", "hours": 2})
    assert r.status_code == 200 and r.json()["status"] == "deferred"
    assert p.get("r2", "/api/mammo/worklist?role=first").json() == []
    p.later(hours=3)
    assert [w["task_id"] for w in p.get("r2", "/api/mammo/worklist?role=first").json()] == [first]


def test_a_technically_insufficient_l2_read_brings_the_retake_back_to_l2(prog: Programme) -> None:
    p = prog
    p.setup("fr", "fr-depistage")
    mg = woman(5)
    stow(p, mg, "cti-1")
    r = p.post("centre", "/api/mammo/l1-forms", l1_form(mg, NORMAL_READ))
    assert r.status_code == 201 and r.json()["status"] == "reading"
    eid, task = r.json()["id"], r.json()["tasks"][0]["id"]
    assert p.post("l2a", f"/api/mammo/tasks/{task}/claim").status_code == 200
    unreadable = {
        "right": {"assessment": 1, "result": "cti"},
        "left": {"assessment": 1, "result": "normal"},
        "density": "d",
        "quality": {
            "R-MLO": {"adequate": False, "reason": "pectoral muscle not seen"},
            "R-CC": {"adequate": True},
        },
    }
    # A CTI needs a view of that side judged inadequate, with its reason.
    no_reason = {**unreadable, "quality": {"R-MLO": {"adequate": False}}}
    assert p.post("l2a", f"/api/mammo/tasks/{task}/reading", no_reason).status_code == 422
    assert p.post("l2a", f"/api/mammo/tasks/{task}/reading", unreadable).status_code == 201
    decided = p.post("l2a", f"/api/mammo/episodes/{eid}/decision").json()["decision"]
    assert decided["decision"] == "technical_recall"
    assert "R-MLO: pectoral muscle not seen" in decided["reasons"][0]

    # The retake, another day: a new episode of the same woman, with the L1 form carried over, read by L2.
    p.later(days=7)
    images = mammo_study(mg, key="cti-2", study_date="20260312")
    archive = Archive(p.rt.db, p.rt.blobs)
    for ds in images:
        archive.store(to_bytes(ds))
    with p.rt.db.sessions() as s:
        retake = s.execute(select(Episode).where(Episode.retake_of == eid)).scalar_one()
    ep = p.get("centre", f"/api/mammo/episodes/{retake.id}").json()
    assert ep["status"] == "reading" and [t["role"] for t in ep["tasks"]] == ["l2"]
    assert [r["role"] for r in ep["readings"]] == ["l1"]
    assert (
        ep["studies"][0]["study_uid"] == str(images[0].StudyInstanceUID) and ep["screen_date"] == "2026-03-12"
    )


def test_an_l2_consensus_is_held_with_another_l2_reader(prog: Programme) -> None:
    p = prog
    p.setup("fr", "fr-depistage")
    mg = woman(6)
    stow(p, mg, "consensus-1")
    r = p.post("centre", "/api/mammo/l1-forms", l1_form(mg, NORMAL_READ))
    eid, task = r.json()["id"], r.json()["tasks"][0]["id"]
    assert p.post("l2a", f"/api/mammo/tasks/{task}/claim").status_code == 200
    doubt = {**NORMAL_READ, "consensus_requested": True}
    assert p.post("l2a", f"/api/mammo/tasks/{task}/reading", doubt).status_code == 201
    assert p.post("l2a", f"/api/mammo/episodes/{eid}/decision").status_code == 409
    consensus = p.task(eid, "l2-consensus")
    # Neither the L2 reader who asked nor the L1 radiologist holds the consensus.
    assert "another L2 reader" in p.post("l2a", f"/api/mammo/tasks/{consensus}/claim").json()["detail"]
    assert p.post("centre", f"/api/mammo/tasks/{consensus}/claim").status_code == 403
    assert p.post("l2b", f"/api/mammo/tasks/{consensus}/claim").status_code == 200
    assert p.post("l2b", f"/api/mammo/tasks/{consensus}/reading", POSITIVE_LEFT).status_code == 201
    decided = p.post("l2b", f"/api/mammo/episodes/{eid}/decision").json()["decision"]
    assert decided["decision"] == "recall" and decided["reasons"][0].startswith("L2 consensus positive")


def test_open_cases_are_dealt_evenly_between_the_readers_at_work(prog: Programme) -> None:
    p = prog
    p.setup("fr", "fr-depistage")
    tasks = []
    for n in range(20, 26):
        mg = woman(n)
        stow(p, mg, f"deal-{n}")
        r = p.post("centre", "/api/mammo/l1-forms", l1_form(mg, NORMAL_READ))
        assert r.status_code == 201, r.text
        tasks.append(r.json()["tasks"][0]["id"])

    # Only l2a is at work: every case is theirs.
    alone = p.get("l2a", "/api/mammo/worklist").json()
    assert [w["task_id"] for w in alone] == tasks and {w["share"] for w in alone} == {"yours"}

    # l2b signs in too: the six cases are dealt three and three, and each sees the other's after their own.
    p.h("l2b")
    shares = {}
    for who in ("l2a", "l2b"):
        listed = p.get(who, "/api/mammo/worklist").json()
        assert sorted(w["task_id"] for w in listed) == sorted(tasks)
        shares[who] = [w["task_id"] for w in listed if w["share"] == "yours"]
        assert [w["share"] for w in listed] == ["yours"] * 3 + ["shared"] * 3
    assert len(shares["l2a"]) == 3 and not set(shares["l2a"]) & set(shares["l2b"])

    # l2a claims two of their cases: the cases left are dealt to l2b, who has less work in hand.
    for task in shares["l2a"][:2]:
        assert p.post("l2a", f"/api/mammo/tasks/{task}/claim").status_code == 200
    b = p.get("l2b", "/api/mammo/worklist").json()
    assert [w["share"] for w in b] == ["yours"] * 3 + ["shared"]
    a = p.get("l2a", "/api/mammo/worklist").json()
    assert [(w["claimed"], w["share"]) for w in a[:2]] == [(True, "yours"), (True, "yours")]
    assert [w["task_id"] for w in a if w["share"] == "yours" and not w["claimed"]] == [
        w["task_id"] for w in b if w["share"] == "shared"
    ]


def test_a_reader_below_the_yearly_minimum_sees_a_warning_and_is_notified_once(prog: Programme) -> None:
    p = prog
    p.setup("fr", "fr-depistage", min_yearly_reads=1500)
    mg = woman(30)
    stow(p, mg, "volume-1")
    task = p.post("centre", "/api/mammo/l1-forms", l1_form(mg, NORMAL_READ)).json()["tasks"][0]["id"]
    assert p.post("l2a", f"/api/mammo/tasks/{task}/claim").status_code == 200
    assert p.post("l2a", f"/api/mammo/tasks/{task}/reading", NORMAL_READ).status_code == 201

    # Qualified just now: nothing is due yet, so no warning.
    [fresh] = p.get("l2a", "/api/mammo/readers/me").json()
    assert fresh["reads"] == 1 and fresh["due"] == 0 and not fresh["below_minimum"]
    assert volumes.warn_readers_below_minimum(p.rt.db, p.rt.clock()) == 0

    # Half a year on (183 days), one read against the 752 due.
    p.later(days=183)
    [late] = p.get("l2a", "/api/mammo/readers/me").json()
    assert late["below_minimum"] and late["due"] == 752 and "below the 752 due" in late["warning"]
    # Only L2 reads count towards the French minimum: the centre's L1 read does not.
    assert p.get("centre", "/api/mammo/readers/me").json()[0]["reads"] == 0
    warned = volumes.warn_readers_below_minimum(p.rt.db, p.rt.clock())
    assert warned == 3  # l2a, l2b and the centre (also qualified L2), all below
    assert volumes.warn_readers_below_minimum(p.rt.db, p.rt.clock()) == 0
    inbox = p.get("l2a", "/api/inbox").json()
    items = inbox["notifications"] if isinstance(inbox, dict) else inbox
    assert [n["kind"] for n in items] == [volumes.WARNING_KIND]
