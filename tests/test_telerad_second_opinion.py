"""Second opinions (tele-expertise) through the API: a teleradiologist holding a reading asks a named specialist
or a reference centre; the expert sees it on their own worklist, opens the study (the request gives them a
reading assignment), answers with a signed document; answering twice is 409; strangers are refused. And the
claim holder asks the region's PACS for the patient's remote priors (a prefetch job)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import select

from archipel.platform import inbox
from archipel.platform.runtime import Runtime
from archipel.radiology.archive import Archive
from archipel.radiology.documents_models import Document
from tests.test_telerad import HOSPITAL, PATIENT, PEOPLE, Desk, open_desk

CENTRE = "CHU-REFERENCE"
PEOPLE.update(
    {
        "expert": ("pr-neuro", "radiologist", CENTRE),
        "expert2": ("dr-neuro2", "radiologist", CENTRE),
        "patho": ("patho-ref", "pathologist", CENTRE),
    }
)


@pytest.fixture
def reading(runtime: Runtime, archive: Archive) -> Iterator[tuple[Desk, int, str]]:
    with open_desk(runtime, archive) as desk:
        yield _claimed(desk)


def _claimed(desk: Desk) -> tuple[Desk, int, str]:
    study = desk.store_study(PATIENT, "TR26-1")
    rid = desk.ask().json()["request_id"]
    assert desk.post("radio1", f"/requests/{rid}/claim").status_code == 200
    for who in ("expert", "expert2", "patho"):
        desk.h(who)
    return desk, rid, study


def _ask(desk: Desk, study: str, rid: int, **to: str) -> dict:
    body = {"issuer": HOSPITAL, "patient_id": PATIENT.patient_id, "study_uid": study, "reading_request_id": rid,
            "question": "Is this an early ischaemic sign?", **to}  # fmt: skip
    r = desk.post("radio1", "/second-opinions", body)
    assert r.status_code == 201, r.text
    return r.json()


def test_a_named_specialist_answers_a_second_opinion_once_with_a_signed_document(
    reading: tuple[Desk, int, str],
) -> None:
    desk, rid, study = reading
    op = _ask(desk, study, rid, to_user="pr-neuro")
    assert op["state"] == "asked" and op["viewer_url"].endswith(study)
    mine = desk.get("expert", "/second-opinions").json()["second_opinions"]
    assert [o["opinion_id"] for o in mine] == [op["opinion_id"]]
    assert desk.get("expert2", "/second-opinions").json()["second_opinions"] == []
    # The named specialist may open the study: the request gave them a reading assignment.
    r = desk.http.get(f"/dicom-web/studies/{study}/series", headers=desk.h("expert"))
    assert r.status_code == 200, r.text

    assert (
        desk.post("expert2", f"/second-opinions/{op['opinion_id']}/answer", {"text": "x"}).status_code == 403
    )
    r = desk.post(
        "expert", f"/second-opinions/{op['opinion_id']}/answer", {"text": "Yes: loss of the insular ribbon."}
    )
    assert r.status_code == 200, r.text
    done = r.json()
    assert done["state"] == "answered" and done["answered_by"] == "pr-neuro"
    with desk.rt.db.sessions() as s:
        doc = s.get(Document, int(done["answer_document_id"]))
        assert doc is not None and doc.status == "final" and doc.signed_by == "pr-neuro"
        told = s.execute(
            select(inbox.Notification).where(inbox.Notification.recipient == "radio-garde")
        ).scalars()
        assert any("answered" in n.title for n in told)
    r = desk.post("expert", f"/second-opinions/{op['opinion_id']}/answer", {"text": "again"})
    assert r.status_code == 409
    asked = desk.get("radio1", "/second-opinions", asked=True, state="all").json()["second_opinions"]
    assert [o["state"] for o in asked] == ["answered"]


def test_a_question_to_a_reference_centre_is_taken_by_one_of_its_experts(
    reading: tuple[Desk, int, str],
) -> None:
    desk, rid, study = reading
    op = _ask(desk, study, rid, to_site=CENTRE)
    oid = op["opinion_id"]
    for who in ("expert", "expert2", "patho"):
        assert [o["opinion_id"] for o in desk.get(who, "/second-opinions").json()["second_opinions"]] == [oid]
    assert desk.post("expert", f"/second-opinions/{oid}/answer", {"text": "x"}).status_code == 403
    assert desk.post("radio2", f"/second-opinions/{oid}/take").status_code == 403
    r = desk.post("expert2", f"/second-opinions/{oid}/take")
    assert r.status_code == 200 and r.json()["to_user"] == "dr-neuro2"
    assert desk.post("expert", f"/second-opinions/{oid}/take").status_code == 409
    assert desk.get("expert", "/second-opinions").json()["second_opinions"] == []
    assert desk.post("expert2", f"/second-opinions/{oid}/answer", {"text": "No."}).status_code == 200


def test_a_second_opinion_needs_one_addressee_and_a_record(reading: tuple[Desk, int, str]) -> None:
    desk, _rid, study = reading
    base = {"issuer": HOSPITAL, "patient_id": PATIENT.patient_id, "study_uid": study, "question": "?"}
    r = desk.post("radio1", "/second-opinions", {**base, "to_site": CENTRE, "to_user": "pr-neuro"})
    assert r.status_code == 422 and "either" in r.json()["detail"]
    r = desk.post("radio1", "/second-opinions", {**base, "to_user": "dr-urgentiste"})
    assert r.status_code == 422
    r = desk.post("radio1", "/second-opinions", {**base, "to_site": "NOWHERE"})
    assert r.status_code == 422 and "no active radiologist" in r.json()["detail"]
    # A radiologist without any relationship with the patient may not ask about them.
    r = desk.post("radio2", "/second-opinions", {**base, "to_site": CENTRE})
    assert r.status_code == 403


def test_claiming_asks_the_region_for_the_patients_remote_priors_and_the_holder_may_ask_again(
    reading: tuple[Desk, int, str],
) -> None:
    desk, rid, _study = reading
    # Claiming asked for them already, once.
    jobs = desk.http.get("/api/jobs", headers=desk.h("radio1")).json()
    assert [j["kind"] for j in jobs] == ["prefetch"]
    assert desk.post("radio2", f"/requests/{rid}/priors/prefetch").status_code == 403
    r = desk.post("radio1", f"/requests/{rid}/priors/prefetch")
    assert r.status_code == 202, r.text
    job = desk.http.get(r.json()["job_url"], headers=desk.h("radio1"))
    assert job.status_code == 200 and job.json()["kind"] == "prefetch"
