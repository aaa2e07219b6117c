"""Who sees what in screening, through the HTTP API: the blinded arbitrator sees neither the first reads nor the
next step's reasons (claimed or not); the reconciliation list by the rows' site, whole for the programme's
coordinator and administrators; the metrics for coordinators and administrators only; and a case prepared
ahead is not claimed, while the reading assignment a claim gives ends with the claim (skip, lapse)."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select

from archipel.mammo.models import ReadingTask
from archipel.platform import access
from archipel.platform.audit import AuditEvent
from archipel.platform.authn import ROLES, Principal
from archipel.platform.care import CareRelationship
from archipel.radiology.archive import Archive
from archipel.radiology.samples import SyntheticPatient, mammo_study, to_bytes
from tests.access_support import ensure_master
from tests.auth_helpers import make_account
from tests.test_mammo_api import (
    CENTRE,
    EXAM,
    NORMAL_READ,
    POSITIVE_LEFT,
    Programme,
    prog,
    sqlite_only,
    woman,
)

__all__ = ["prog"]  # the fixture, shared with test_mammo_api

OTHER_CENTRE = "CENTRE-B"


def person(p: Programme, who: str, name: str, role: str, site: str) -> None:
    """Add an account beside test_mammo_api's people."""
    p.accounts[who] = make_account(p.rt, name, role, site)


def qualify(p: Programme, code: str, who: str, qualification: str) -> None:
    body = {"reader": p.accounts[who].name, "qualification": qualification}
    r = p.post("admin", f"/api/mammo/programmes/{code}/readers", body)
    assert r.status_code == 201, r.text


def episode(p: Programme, n: int, site: str = CENTRE, by: str = "centre", images: bool = True) -> int:
    """Register woman ``n``'s episode of the eu programme (at ``site``) and store her four views."""
    mg = woman(n)
    ensure_master(p.rt.db, CENTRE, mg.patient_id, f"MAMMO{mg.patient_id}", "19600101")
    body = {"programme": "eu", "issuer": CENTRE, "patient_id": mg.patient_id, "site": site,
            "round": "first", "screen_date": EXAM}  # fmt: skip
    r = p.post(by, "/api/mammo/episodes", body)
    assert r.status_code == 201, r.text
    if images:
        store(p, mg, f"access-{n}")
    return int(r.json()["id"])


def store(p: Programme, patient: SyntheticPatient, key: str) -> str:
    images = mammo_study(patient, key=key)
    archive = Archive(p.rt.db, p.rt.blobs)
    for ds in images:
        archive.store(to_bytes(ds))
    return str(images[0].StudyInstanceUID)


def last_event(p: Programme, action: str) -> AuditEvent:
    with p.rt.db.sessions() as s:
        q = select(AuditEvent).where(AuditEvent.action == action).order_by(AuditEvent.id.desc()).limit(1)
        return s.execute(q).scalar_one()


def assignments(p: Programme, subject: str) -> list[CareRelationship]:
    with p.rt.db.sessions() as s:
        q = select(CareRelationship).where(CareRelationship.professional == subject)
        return list(s.execute(q.order_by(CareRelationship.id)).scalars())


@sqlite_only
def test_a_blinded_arbitrator_sees_no_first_read_nor_the_reasons_before_or_after_claiming(
    prog: Programme,
) -> None:
    p = prog
    p.setup("eu", "eu-blinded", arbitrator_sees_reads=False)
    # An arbitrator of the producing site may read the episode without claiming anything.
    person(p, "arbc", "arbitre-centre", "radiologist", CENTRE)
    qualify(p, "eu", "arbc", "arbitrator")
    eid = episode(p, 21)
    first, second = p.task(eid, "first"), p.task(eid, "second")
    assert p.post("r1", f"/api/mammo/tasks/{first}/claim").status_code == 200
    assert p.post("r1", f"/api/mammo/tasks/{first}/reading", NORMAL_READ).status_code == 201
    assert p.post("r2", f"/api/mammo/tasks/{second}/claim").status_code == 200
    assert p.post("r2", f"/api/mammo/tasks/{second}/reading", POSITIVE_LEFT).status_code == 201
    discordance = ["left breast: normal (first) vs positive (second)"]
    first_read = p.get("r2", f"/api/mammo/episodes/{eid}").json()["readings"][0]["id"]

    # The blind readers, once both have read, and the centre's radiologist (no reading role) see the reasons.
    assert p.get("r2", f"/api/mammo/episodes/{eid}").json()["next"]["reasons"] == discordance
    assert p.get("centre", f"/api/mammo/episodes/{eid}").json()["next"]["reasons"] == discordance

    # The would-be arbitrator, before claiming: no first read, no reasons; both refusals audited.
    r = p.get("arbc", f"/api/mammo/episodes/{eid}/readings/{first_read}")
    assert r.status_code == 403 and "blinded arbitration" in r.json()["detail"]
    event = p.denied("read:screening-reading")[-1]
    assert (
        event.actor == "arbitre-centre" and event.object == f"screening reading {first_read} of episode {eid}"
    )
    view = p.get("arbc", f"/api/mammo/episodes/{eid}").json()
    assert view["next"]["role"] == "arbitration" and view["next"]["reasons"] == []
    assert "blinded arbitration" in view["next"]["withheld"]
    assert "normal" not in str(view["next"]) and "positive" not in str(view["next"])
    event = p.denied("read:screening-reading")[-1]
    assert (
        event.actor == "arbitre-centre" and event.object == f"next step's reasons of screening episode {eid}"
    )

    # The arbitrator who claims the case: the same.
    arbitration = p.task(eid, "arbitration")
    assert p.post("arb", f"/api/mammo/tasks/{arbitration}/claim").status_code == 200
    view = p.get("arb", f"/api/mammo/episodes/{eid}").json()
    assert view["next"]["reasons"] == [] and "blinded arbitration" in view["next"]["withheld"]
    assert p.denied("read:screening-reading")[-1].actor == "arbitrator"
    assert p.get("arb", f"/api/mammo/episodes/{eid}/readings/{first_read}").status_code == 403

    # Once the arbitration is read, the first reads are no longer hidden from either.
    assert p.post("arb", f"/api/mammo/tasks/{arbitration}/reading", POSITIVE_LEFT).status_code == 201
    assert p.get("arb", f"/api/mammo/episodes/{eid}/readings/{first_read}").status_code == 200
    assert p.get("arbc", f"/api/mammo/episodes/{eid}/readings/{first_read}").status_code == 200
    assert p.get("arbc", f"/api/mammo/episodes/{eid}").json()["next"]["withheld"] == ""


@sqlite_only
def test_the_reconciliation_list_is_by_the_rows_site_and_whole_for_coordinator_and_admin(
    prog: Programme,
) -> None:
    p = prog
    p.setup("eu", "eu-blinded")
    person(p, "rb", "radio-centre-b", "radiologist", OTHER_CENTRE)
    # A woman of the centre's patient IDs screened at the other centre (no images yet), one at the centre.
    at_b = episode(p, 31, site=OTHER_CENTRE, by="rb", images=False)
    at_a = episode(p, 32, images=False)
    # Studies with no episode: one of the centre, one of a site taking no part in the programme.
    from_centre = store(p, woman(33), "access-33")
    elsewhere = store(p, SyntheticPatient("MG0034", "TESTMAMMO^N34", "19600101", "F", issuer="CENTRE-Z"), "z")

    def listed(who: str, query: str = "") -> tuple[list[str], list[int]]:
        r = p.get(who, f"/api/mammo/reconciliation{query}")
        assert r.status_code == 200, r.text
        body = r.json()
        return [x["study_uid"] for x in body["studies_without_episode"]], [
            x["episode_id"] for x in body["episodes_without_study"]
        ]

    # Each site sees its own rows: the episode's site, the study's producing site, not the patient-ID issuer.
    assert listed("centre") == ([from_centre], [at_a])
    assert listed("rb") == ([], [at_b])
    assert last_event(p, "search:screening-episode").outcome == "success"
    # A reader of the coordination centre, and the coordinator without naming the programme: their own site.
    assert listed("r1", "?programme=eu") == ([], [])
    assert listed("coord") == ([], [])
    # The coordinator sees the programme's whole list (the studies of the sites taking part in it).
    assert listed("coord", "?programme=eu") == ([from_centre], [at_b, at_a])
    event = last_event(p, "read:screening-programme")
    assert (event.actor, event.outcome, event.purpose) == ("coordinatrice", "success", "operations")
    # An administrator sees every row.
    assert listed("admin") == ([from_centre, elsewhere], [at_b, at_a])
    assert last_event(p, "read:screening-programme").actor == "admin-depistage"
    assert p.get("coord", "/api/mammo/reconciliation?programme=nope").status_code == 404


@sqlite_only
def test_metrics_are_for_the_programmes_coordinators_and_administrators(prog: Programme) -> None:
    p = prog
    p.setup("eu", "eu-blinded")
    r = p.post("admin", "/api/mammo/programmes", {"code": "other", "protocol": "eu-blinded"})
    assert r.status_code == 201, r.text
    person(p, "tech", "manip-centre", "technician", CENTRE)
    person(p, "surgeon", "chirurgien-centre", "surgeon", CENTRE)
    for who in ("admin", "coord"):
        r = p.get(who, "/api/mammo/metrics?programme=eu")
        assert r.status_code == 200, r.text
        assert "readers" in r.json()
        event = last_event(p, "read:screening-programme")
        assert (event.outcome, event.purpose, event.object) == (
            "success",
            "operations",
            "screening metrics of eu",
        )
    # Nobody else reads every reader's figures: refused and audited.
    for who, subject in (("tech", "manip-centre"), ("surgeon", "chirurgien-centre"), ("r1", "reader-one")):
        r = p.get(who, "/api/mammo/metrics?programme=eu")
        assert r.status_code == 403 and "coordinators and administrators" in r.json()["detail"], r.text
        event = last_event(p, "read:screening-programme")
        assert (event.actor, event.outcome) == (subject, "denied")
    # A coordinator of one programme is not one of another.
    assert p.get("coord", "/api/mammo/metrics?programme=other").status_code == 403


def test_the_policy_opens_a_programmes_lists_to_administrators_and_coordinators_only() -> None:
    lists = access.Resource(kind=access.SCREENING_PROGRAMME, ident="screening metrics of eu")
    coordinator = access.Facts(coordinator=True)
    for role in ROLES:
        user = Principal(f"u-{role}", role, CENTRE)
        assert access.allow(user, access.READ, lists).allowed is (role == "admin"), role
        assert access.allow(user, access.READ, lists, coordinator).allowed, role
    for kind in ("node", "patient"):
        assert not access.allow(
            Principal("x", "", CENTRE, kind=kind), access.READ, lists, coordinator
        ).allowed
    assert access.allow(Principal("a", "admin"), access.READ, lists).purpose == "operations"


@sqlite_only
def test_preparing_a_case_claims_nothing_and_a_claims_assignment_ends_with_the_claim(prog: Programme) -> None:
    p = prog
    p.setup("eu", "eu-blinded")
    eid = episode(p, 41)
    first, second = p.task(eid, "first"), p.task(eid, "second")
    # r1 prepares the case: it stays open (r2 may still claim it), r1 sees its images for a few minutes only.
    assert p.get("r1", f"/api/mammo/episodes/{eid}").status_code == 403
    r = p.post("r1", f"/api/mammo/tasks/{first}/prepare")
    assert r.status_code == 200, r.text
    assert r.json()["until"] == (p.clock() + timedelta(minutes=15)).isoformat()
    with p.rt.db.sessions() as s:
        task = s.get(ReadingTask, first)
        assert task is not None and (task.status, task.claimed_by) == ("open", "")
    assert p.get("r1", f"/api/mammo/episodes/{eid}").status_code == 200
    (preview,) = assignments(p, "reader-one")
    assert preview.context == f"screening-preview:{first}"
    assert preview.valid_to == p.clock() + timedelta(minutes=15)
    p.later(minutes=16)
    assert p.get("r1", f"/api/mammo/episodes/{eid}").status_code == 403

    # A claim gives the assignment for as long as it holds; a skip ends it at once.
    assert p.post("r1", f"/api/mammo/tasks/{first}/claim").status_code == 200
    claimed = assignments(p, "reader-one")[-1]
    assert claimed.valid_to == p.clock() + timedelta(hours=4)
    assert p.get("r1", f"/api/mammo/episodes/{eid}").status_code == 200
    assert p.post("r1", f"/api/mammo/tasks/{first}/skip", {"reason": "known patient"}).status_code == 200
    assert p.get("r1", f"/api/mammo/episodes/{eid}").status_code == 403
    assert all(a.valid_to is not None and a.valid_to <= p.clock() for a in assignments(p, "reader-one"))

    # A claim that lapses takes its assignment with it; claiming again renews both; a submitted read keeps it.
    assert p.post("r2", f"/api/mammo/tasks/{second}/claim").status_code == 200
    p.later(hours=5)
    assert p.get("r2", f"/api/mammo/episodes/{eid}").status_code == 403
    assert p.post("r2", f"/api/mammo/tasks/{second}/claim").status_code == 200
    assert p.get("r2", f"/api/mammo/episodes/{eid}").status_code == 200
    assert p.post("r2", f"/api/mammo/tasks/{second}/reading", NORMAL_READ).status_code == 201
    p.later(days=30)
    assert p.get("r2", f"/api/mammo/episodes/{eid}").status_code == 200
    assert not any(
        a.valid_to is not None and a.valid_to - a.valid_from > timedelta(hours=4)
        for a in assignments(p, "reader-one")
    )

    # Preparing is refused, and audited, when claiming would be: r2 made the second read.
    r = p.post("r2", f"/api/mammo/tasks/{first}/prepare")
    assert r.status_code == 403 and "two different readers" in r.json()["detail"]
    assert p.denied("update:reading-task")[-1].actor == "reader-two"
