"""Screening intake, in process on a test clock: an exam reaches the reader worklists only once it has every view
its programme requires; one still lacking a view after the settle time is flagged by the periodic check and held
back; a corrected image (a new SOP Instance UID, or an IOCM rejection note withdrawing the wrong one) evaluates
the exam again."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from pydicom.dataset import Dataset
from sqlalchemy import select

from archipel.mammo import intake
from archipel.mammo.models import Episode
from archipel.platform import schedule
from archipel.platform.audit import AuditEvent
from archipel.platform.notify import OutboxMessage
from archipel.radiology.archive import Archive
from archipel.radiology.samples import mammo_study, rejection_note, to_bytes, uid
from tests.access_support import ensure_master
from tests.auth_helpers import make_account
from tests.test_mammo_api import (  # noqa: F401
    CENTRE,
    EXAM,
    NORMAL_READ,
    PEOPLE,
    Programme,
    l1_form,
    prog,
    woman,
)

pytestmark = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)


def blinded(p: Programme, code: str = "eu", **settings: Any) -> None:
    p.setup(code, "eu-blinded", **settings)


def register(p: Programme, n: int, code: str = "eu") -> tuple[int, list[Dataset]]:
    """A woman's episode, registered before her images; returns it and her four images (not stored)."""
    mg = woman(n)
    ensure_master(p.rt.db, CENTRE, mg.patient_id, f"MAMMO{mg.patient_id}", "19600101")
    body = {"programme": code, "issuer": CENTRE, "patient_id": mg.patient_id, "site": CENTRE,
            "round": "first", "screen_date": EXAM}  # fmt: skip
    r = p.post("centre", "/api/mammo/episodes", body)
    assert r.status_code == 201, r.text
    assert r.json()["status"] == "awaiting-images"
    return int(r.json()["id"]), mammo_study(mg, key=f"intake-{n}")


def store(p: Programme, *images: Dataset) -> None:
    archive = Archive(p.rt.db, p.rt.blobs)
    for ds in images:
        archive.store(to_bytes(ds))


def episode(p: Programme, eid: int) -> dict[str, Any]:
    r = p.get("centre", f"/api/mammo/episodes/{eid}")
    assert r.status_code == 200, r.text
    return dict(r.json())


def listed(p: Programme, who: str = "r1") -> list[int]:
    return [w["episode_id"] for w in p.get(who, "/api/mammo/worklist").json()]


def corrected(image: Dataset) -> Dataset:
    """The image sent again under a new SOP Instance UID (as a modality does after a correction)."""
    again = copy.deepcopy(image)
    again.SOPInstanceUID = uid()
    again.file_meta.MediaStorageSOPInstanceUID = again.SOPInstanceUID
    return again


def test_an_exam_reaches_the_worklists_only_once_its_four_views_are_in(prog: Programme) -> None:  # noqa: F811
    p = prog
    blinded(p)
    eid, images = register(p, 101)
    store(p, *images[:3])  # R-CC, L-CC, R-MLO: the L-MLO is on its way
    ep = episode(p, eid)
    assert (ep["status"], ep["flag"], ep["tasks"]) == ("incomplete", "", [])
    assert listed(p) == [] and listed(p, "r2") == []
    p.later(minutes=5)
    store(p, images[3])
    ep = episode(p, eid)
    assert ep["status"] == "reading" and ep["flag"] == ""
    assert sorted(t["role"] for t in ep["tasks"]) == ["first", "second"]
    assert listed(p) == [eid, eid]


def test_an_exam_still_missing_a_view_after_the_settle_time_is_flagged_until_the_view_comes(
    prog: Programme,  # noqa: F811
) -> None:
    p = prog
    blinded(p, settle_minutes=30)
    assert intake.SETTLE_TASK in {e.task for e in schedule.registered()}
    eid, images = register(p, 102)
    store(p, *images[:3])
    p.later(minutes=29)
    # Within the settle time the periodic check leaves the exam waiting for its view.
    assert intake.settle_incomplete(p.rt.db, p.clock()) == 0
    assert episode(p, eid)["status"] == "incomplete"
    p.later(minutes=2)
    assert intake.settle_incomplete(p.rt.db, p.clock()) == 1
    assert intake.settle_incomplete(p.rt.db, p.clock()) == 0  # run twice, flagged once
    ep = episode(p, eid)
    assert ep["status"] == "flagged" and ep["flag"] == "missing view L-MLO" and ep["tasks"] == []
    assert listed(p) == []
    # The technician sends the missing view the next day: the exam is complete and goes to the readers.
    p.later(days=1)
    store(p, corrected(images[3]))
    ep = episode(p, eid)
    assert (ep["status"], ep["flag"]) == ("reading", "")
    assert listed(p) == [eid, eid]


def test_a_missing_view_sent_as_a_study_of_its_own_the_same_day_completes_the_exam(prog: Programme) -> None:  # noqa: F811
    p = prog
    blinded(p, settle_minutes=0)
    eid, images = register(p, 103)
    store(p, *images[:3])
    assert episode(p, eid)["flag"] == "missing view L-MLO"  # settle time 0: flagged at once
    retaken = corrected(images[3])
    retaken.StudyInstanceUID = retaken.SeriesInstanceUID = uid()
    store(p, retaken)
    ep = episode(p, eid)
    assert ep["status"] == "reading" and len(ep["studies"]) == 2
    assert p.get("centre", "/api/mammo/reconciliation").json()["studies_without_episode"] == []


def test_an_unlabelled_image_flags_the_exam_until_a_rejection_note_withdraws_it(prog: Programme) -> None:  # noqa: F811
    p = prog
    blinded(p)
    eid, images = register(p, 104)
    del images[3].ImageLaterality, images[3].Laterality
    store(p, *images)
    ep = episode(p, eid)
    bad = str(images[3].SOPInstanceUID)
    assert ep["status"] == "flagged" and ep["flag"] == f"image {bad} has no laterality"
    assert listed(p) == []
    # The modality withdraws the wrong image (IOCM, rejected for quality reasons): no longer flagged, the exam
    # waits for its L-MLO (within the settle time), which completes it.
    store(p, rejection_note([images[3]]))
    ep = episode(p, eid)
    assert (ep["status"], ep["flag"]) == ("incomplete", "")
    assert bad not in {v["sop"] for v in ep["studies"][0]["views"]}
    fixed = corrected(images[3])
    fixed.ImageLaterality = "L"
    store(p, fixed)
    assert episode(p, eid)["status"] == "reading"
    assert listed(p) == [eid, eid]


def test_a_corrected_image_under_a_new_uid_clears_the_flag_by_itself(prog: Programme) -> None:  # noqa: F811
    p = prog
    blinded(p)
    eid, images = register(p, 110)
    del images[3].ImageLaterality, images[3].Laterality
    store(p, *images)
    bad = str(images[3].SOPInstanceUID)
    assert episode(p, eid)["flag"] == f"image {bad} has no laterality" and listed(p) == []
    # A well-labelled image of another view does not complete anything: still flagged.
    store(p, corrected(images[0]))
    assert episode(p, eid)["status"] == "flagged" and episode(p, eid)["flag_resolutions"] == []
    # The site sends the image again, corrected, under a new SOP Instance UID: the exam now has its four views,
    # each with a laterality, so the system clears the flag and the exam goes to the readers.
    fixed = corrected(images[3])
    fixed.ImageLaterality = "L"
    store(p, fixed)
    ep = episode(p, eid)
    assert (ep["status"], ep["flag"]) == ("reading", "")
    (resolution,) = ep["flag_resolutions"]
    assert resolution["action"] == "corrected" and resolution["resolved_by"] == "system"
    assert resolution["reason"] == f"corrected image received: {fixed.SOPInstanceUID}"
    assert resolution["lines"] == [f"image {bad} has no laterality"]
    assert sorted(t["role"] for t in ep["tasks"]) == ["first", "second"]
    assert listed(p) == [eid, eid]
    with p.rt.db.sessions() as s:
        event = (
            s.execute(
                select(AuditEvent)
                .where(AuditEvent.actor == "screening-intake")
                .order_by(AuditEvent.id.desc())
            )
            .scalars()
            .first()
        )
        assert event is not None and event.action == "update:screening-intake"
        assert event.outcome == "success" and event.actor_kind == "system"
        assert (
            event.patient == f"{CENTRE}/{woman(110).patient_id}" and str(fixed.SOPInstanceUID) in event.detail
        )
    # The view the correction gives, withdrawn later, flags the exam again: only the superseded image is accepted.
    store(p, rejection_note([fixed]))
    ep = episode(p, eid)
    assert ep["status"] == "flagged" and "missing view L-MLO" in ep["flag"]


def test_a_missing_view_that_comes_later_clears_the_flag_as_a_correction(prog: Programme) -> None:  # noqa: F811
    p = prog
    blinded(p, settle_minutes=0)
    eid, images = register(p, 111)
    store(p, *images[:3])
    assert episode(p, eid)["flag"] == "missing view L-MLO"
    late = corrected(images[3])
    store(p, late)
    ep = episode(p, eid)
    assert ep["status"] == "reading"
    assert [(r["resolved_by"], r["lines"], r["reason"]) for r in ep["flag_resolutions"]] == [
        ("system", ["missing view L-MLO"], f"corrected image received: {late.SOPInstanceUID}")
    ]


def test_a_technical_recall_in_the_blinded_programme_registers_the_retake_read_blind_again(
    prog: Programme,  # noqa: F811
) -> None:
    p = prog
    blinded(p)
    eid, images = register(p, 112)
    store(p, *images)
    quality = {"L-MLO": {"adequate": False, "reason": "pectoral muscle not shown"}}
    cti = {"right": {"assessment": 1, "result": "normal"}, "left": {"assessment": 0, "result": "cti"},
           "density": "b", "quality": quality}  # fmt: skip
    for who, role in (("r1", "first"), ("r2", "second")):
        task = p.task(eid, role)
        assert p.post(who, f"/api/mammo/tasks/{task}/claim").status_code == 200
        assert p.post(who, f"/api/mammo/tasks/{task}/reading", cti).status_code == 201
    r = p.post("centre", f"/api/mammo/episodes/{eid}/decision")
    assert r.status_code == 201 and r.json()["decision"]["decision"] == "technical_recall"
    # The retake a week later matches a new episode of hers, registered by itself, read by both blind readers.
    p.later(days=7)
    again = mammo_study(woman(112), key="intake-112-retake", study_date="20260312")
    store(p, *again)
    with p.rt.db.sessions() as s:
        retake = s.execute(select(Episode).where(Episode.retake_of == eid)).scalar_one()
    ep = episode(p, retake.id)
    assert ep["retake_of"] == eid and ep["screen_date"] == "2026-03-12"
    assert [st["study_uid"] for st in ep["studies"]] == [str(again[0].StudyInstanceUID)]
    assert ep["status"] == "reading" and sorted(t["role"] for t in ep["tasks"]) == ["first", "second"]
    assert ep["readings"] == []
    assert sorted(listed(p)) == [retake.id, retake.id]
    rec = p.get("centre", "/api/mammo/reconciliation").json()
    assert str(again[0].StudyInstanceUID) not in {x["study_uid"] for x in rec["studies_without_episode"]}
    # A later study of hers is no second retake.
    store(p, *mammo_study(woman(112), key="intake-112-later", study_date="20260313"))
    with p.rt.db.sessions() as s:
        assert len(s.execute(select(Episode).where(Episode.retake_of == eid)).scalars().all()) == 1


def test_a_coordinator_of_the_programme_attaches_an_unmatched_study_others_may_not(
    prog: Programme,  # noqa: F811
) -> None:
    p = prog
    blinded(p)
    blinded(p, "eu-elsewhere")
    mg = woman(113)
    ensure_master(p.rt.db, CENTRE, mg.patient_id, f"MAMMO{mg.patient_id}", "19600101")
    images = mammo_study(mg, key="intake-113", study_date="20260304")  # dated the day before her episode
    store(p, *images)
    study = str(images[0].StudyInstanceUID)
    body = {"programme": "eu", "issuer": CENTRE, "patient_id": mg.patient_id, "site": CENTRE,
            "round": "first", "screen_date": EXAM}  # fmt: skip
    eid = p.post("centre", "/api/mammo/episodes", body).json()["id"]
    assert episode(p, eid)["studies"] == []
    rec = p.get("coord", "/api/mammo/reconciliation?programme=eu").json()
    assert study in {x["study_uid"] for x in rec["studies_without_episode"]}
    url = f"/api/mammo/studies/{study}/match"
    # A reader of the programme, and the coordinator of another programme, may not: 403, audited.
    assert p.post("r1", url, {"episode_id": eid}).status_code == 403
    body = {"reader": PEOPLE["r2"][0], "qualification": "coordinator"}
    assert p.post("admin", "/api/mammo/programmes/eu-elsewhere/readers", body).status_code == 201
    r = p.post("r2", url, {"episode_id": eid})
    assert r.status_code == 403
    with p.rt.db.sessions() as s:
        refused = s.execute(
            select(AuditEvent).where(AuditEvent.outcome == "denied", AuditEvent.actor.in_(["reader-one", "reader-two"]),
                                     AuditEvent.object.contains(study))
        ).scalars().all()  # fmt: skip
        assert {e.actor for e in refused} == {"reader-one", "reader-two"}
    assert episode(p, eid)["studies"] == []
    # The programme's coordinator attaches it from the reconciliation list: the exam goes to the readers.
    r = p.post("coord", url, {"episode_id": eid})
    assert r.status_code == 200, r.text
    assert [st["study_uid"] for st in r.json()["studies"]] == [study] and r.json()["status"] == "reading"
    with p.rt.db.sessions() as s:
        event = (
            s.execute(
                select(AuditEvent).where(
                    AuditEvent.actor == "coordinatrice", AuditEvent.object.contains(study)
                )
            )
            .scalars()
            .one()
        )
        assert event.outcome == "success" and event.purpose == "operations"
    rec = p.get("coord", "/api/mammo/reconciliation?programme=eu").json()
    assert study not in {x["study_uid"] for x in rec["studies_without_episode"]}
    # The centre's radiologist still matches by hand as before (the same match again changes nothing).
    assert p.post("centre", url, {"episode_id": eid}).status_code == 200


def test_withdrawing_a_view_of_an_exam_being_read_flags_it_at_once(prog: Programme) -> None:  # noqa: F811
    p = prog
    blinded(p)
    eid, images = register(p, 105)
    store(p, *images)
    assert listed(p) == [eid, eid]
    store(p, rejection_note([images[0]]))
    ep = episode(p, eid)
    assert ep["status"] == "flagged" and ep["flag"] == "missing view R-CC"
    assert listed(p) == []


def test_a_programme_sets_the_views_its_exams_need(prog: Programme) -> None:  # noqa: F811
    p = prog
    r = p.post(
        "admin", "/api/mammo/programmes", {"code": "bad", "protocol": "eu-blinded", "screening_views": "R-XX"}
    )
    assert r.status_code == 422 and "R-XX" in r.text
    blinded(p, screening_views="r-cc, l-cc")
    listed_programme = next(x for x in p.get("admin", "/api/mammo/programmes").json() if x["code"] == "eu")
    assert listed_programme["screening_views"] == ["R-CC", "L-CC"]
    assert listed_programme["settle_minutes"] == 20
    eid, images = register(p, 106)
    store(p, images[0])
    assert episode(p, eid)["status"] == "incomplete"
    store(p, images[1])  # the two CC views are all this programme asks for
    assert episode(p, eid)["status"] == "reading"


def technician(p: Programme) -> None:
    p.accounts["tech"] = make_account(p.rt, "manip-centre", "technician", CENTRE)


def test_a_technician_of_the_centre_releases_a_flag_and_only_a_new_problem_flags_the_exam_again(
    prog: Programme,  # noqa: F811
) -> None:
    p = prog
    blinded(p, settle_minutes=0)
    technician(p)
    eid, images = register(p, 107)
    store(p, *images[:3])
    assert episode(p, eid)["flag"] == "missing view L-MLO"
    url = f"/api/mammo/episodes/{eid}/flag"
    # A reader of the coordination centre may not; refused and audited.
    r = p.post("r1", url, {"action": "release", "reason": "mastectomy of the left breast"})
    assert r.status_code == 403
    assert p.denied("update:screening-intake")[-1].actor == "reader-one"
    assert p.post("tech", url, {"action": "release", "reason": ""}).status_code == 422
    assert p.post("tech", url, {"action": "forget", "reason": "no"}).status_code == 422
    assert listed(p) == []

    r = p.post("tech", url, {"action": "release", "reason": "mastectomy of the left breast"})
    assert r.status_code == 200, r.text
    ep = r.json()
    assert (ep["status"], ep["flag"]) == ("reading", "")
    assert (
        ep["resolution"]["lines"] == ["missing view L-MLO"]
        and ep["resolution"]["resolved_by"] == "manip-centre"
    )
    assert sorted(t["role"] for t in ep["tasks"]) == ["first", "second"]
    assert listed(p) == [eid, eid]
    with p.rt.db.sessions() as s:
        event = (
            s.execute(
                select(AuditEvent)
                .where(AuditEvent.action == "update:screening-intake", AuditEvent.outcome == "success")
                .order_by(AuditEvent.id.desc())
            )
            .scalars()
            .first()
        )
        assert event is not None and event.actor == "manip-centre"
        assert event.patient == f"{CENTRE}/{woman(107).patient_id}"
    # Nothing holds it any more.
    r = p.post("tech", url, {"action": "release", "reason": "again"})
    assert r.status_code == 409 and "not held at intake" in r.json()["detail"]
    # A new image without laterality flags the exam again, with that image only: the missing view stays accepted.
    extra = corrected(images[0])
    del extra.ImageLaterality, extra.Laterality
    store(p, extra)
    ep = episode(p, eid)
    assert (ep["status"], ep["flag"]) == ("flagged", f"image {extra.SOPInstanceUID} has no laterality")
    assert listed(p) == []


def test_an_exam_sent_for_a_retake_at_intake_is_a_technical_recall_and_its_retake_is_read(
    prog: Programme,  # noqa: F811
) -> None:
    p = prog
    p.setup("fr", "fr-depistage", settle_minutes=0)
    mg = woman(108)
    ensure_master(p.rt.db, CENTRE, mg.patient_id, f"MAMMO{mg.patient_id}", "19600101")
    r = p.post("centre", "/api/mammo/l1-forms", l1_form(mg, NORMAL_READ))
    assert r.status_code == 201, r.text
    eid = r.json()["id"]
    images = mammo_study(mg, key="intake-108")
    # Before any image there is nothing to retake.
    assert (
        p.post(
            "centre", f"/api/mammo/episodes/{eid}/flag", {"action": "retake", "reason": "x" * 3}
        ).status_code
        == 409
    )
    store(p, *images[:3])
    assert episode(p, eid)["flag"] == "missing view L-MLO"
    before = p.counts()
    r = p.post("centre", f"/api/mammo/episodes/{eid}/flag", {"action": "retake", "reason": "the woman left"})
    assert r.status_code == 200, r.text
    decided = r.json()["decision"]
    assert r.json()["status"] == "decided" and decided["decision"] == "technical_recall"
    assert decided["reasons"] == [
        "not readable at intake: missing view L-MLO",
        "retake asked: the woman left",
    ]
    with p.rt.db.sessions() as s:
        letters = s.execute(select(OutboxMessage).where(OutboxMessage.id.in_(decided["letters"]))).scalars()
        assert sorted(m.recipient for m in letters) == ["gp@example.org", "woman@example.org"]
    assert p.counts()[2:] == (before[2] + 1, before[3] + 2)
    assert (
        p.post(
            "centre", f"/api/mammo/episodes/{eid}/flag", {"action": "release", "reason": "late"}
        ).status_code
        == 409
    )
    assert listed(p, "l2a") == []

    # The retake a week later: a new episode with the L1 form carried over, read by L2 once complete.
    p.later(days=7)
    store(p, *mammo_study(mg, key="intake-108-retake", study_date="20260312"))
    with p.rt.db.sessions() as s:
        retake = s.execute(select(Episode).where(Episode.retake_of == eid)).scalar_one()
    ep = episode(p, retake.id)
    assert ep["status"] == "reading" and [t["role"] for t in ep["tasks"]] == ["l2"]
    assert listed(p, "l2a") == [retake.id]


def test_a_coordinator_of_the_programme_releases_a_flag_a_reader_of_another_programme_may_not(
    prog: Programme,  # noqa: F811
) -> None:
    p = prog
    blinded(p, settle_minutes=0)
    blinded(p, "eu-other")
    for code, reader in (("eu", "reader-two"), ("eu-other", "reader-one")):
        body = {"reader": reader, "qualification": "coordinator"}
        assert p.post("admin", f"/api/mammo/programmes/{code}/readers", body).status_code == 201
    eid, images = register(p, 109)
    store(p, *images[:3])
    url, release = f"/api/mammo/episodes/{eid}/flag", {"action": "release", "reason": "view not possible"}
    # reader-one coordinates another programme only: refused.
    assert p.post("r1", url, release).status_code == 403
    r = p.post("r2", url, release)
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "reading" and r.json()["resolution"]["resolved_by"] == "reader-two"
