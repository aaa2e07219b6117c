"""The frozen-section workflow through the API, in process, on a test clock: request, slide upload naming the
request, the on-duty worklist, the exclusive claim and its expiry, the signed verdict (a verified SR in the
archive, readable by DICOMweb, valid for dciodvfy), the surgeon's stream and "seen", the turnaround report; and
every impossible step refused with its reason, nothing changed."""

from __future__ import annotations

import io
import json
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pydicom
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from archipel.platform.authn import find_user
from archipel.platform.care import CareRelationship
from archipel.platform.db import utcnow
from archipel.platform.notify import OutboxMessage
from archipel.platform.runtime import Runtime
from archipel.wsi import duty
from archipel.wsi.frozen import FrozenSectionRequest
from archipel.wsi.intake import SlideMetadata
from archipel.wsi.models import Slide
from archipel.wsi.slides import hash_file, register_slide
from archipel.wsi.synthetic import write_svs
from tests.access_support import ensure_master
from tests.auth_helpers import Account, Clock, bearer, client, login, make_account
from tests.dicomweb_messages import read_multipart

sqlite_only = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)

HOSPITAL, LAB = "CH-SUD", "CHU-NORD"
PATIENT, OTHER = "FS0001", "FS0002"
#: The people of the tests: user name, role, site.
PEOPLE = {
    "surgeon": ("chirurgienne", "surgeon", HOSPITAL),
    "technician": ("technicien", "technician", HOSPITAL),
    "patho1": ("patho-garde", "pathologist", LAB),
    "patho2": ("patho-renfort", "pathologist", LAB),
    "outsider": ("patho-ailleurs", "pathologist", "CH-EST"),
    "surgeon2": ("chirurgien-est", "surgeon", "CH-EST"),
}


@dataclass
class Ward:
    """The operating room's hospital, the remote pathologists, their tokens, and a small slide."""

    rt: Runtime
    http: TestClient
    clock: Clock
    tokens: dict[str, str]
    accounts: dict[str, Account]
    slide_file: Path

    def h(self, who: str) -> dict[str, str]:
        """Headers of ``who`` (one of :data:`PEOPLE`), whose account is made and logged in on first use."""
        if who not in self.tokens:
            account = self.accounts.get(who) or make_account(self.rt, *PEOPLE[who])
            r = login(self.http, account, self.clock())
            assert r.status_code == 200, r.text
            self.tokens[who] = r.json()["access_token"]
        return bearer(self.tokens[who])

    def log_in(self, *people: str) -> None:
        for who in people:
            self.h(who)

    def request(self, **overrides: Any) -> httpx.Response:
        who = overrides.pop("_as", "surgeon")
        body = {
            "issuer": HOSPITAL,
            "patient_id": PATIENT,
            "accession": "FS26-1",
            "specimen": "sentinel lymph node",
            "specimen_site": "left axilla",
            "clinical_question": "metastasis?",
            "or_phone": "+33 4 00 00 00 12",
            **overrides,
        }
        return self.http.post("/api/frozen-sections", json=body, headers=self.h(who))

    def upload(self, meta: dict[str, Any], who: str = "technician") -> httpx.Response:
        with self.slide_file.open("rb") as f:
            return self.http.post(
                "/api/slides",
                headers=self.h(who),
                data={"metadata": json.dumps(meta)},
                files={"file": ("frozen.svs", f, "application/octet-stream")},
            )


@pytest.fixture(scope="module")
def frozen_slide(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small synthetic SVS, written once for the module."""
    folder = tmp_path_factory.mktemp("frozen-slide")
    return write_svs(folder / "frozen.svs", 700, 500, tile=240, downsamples=(1,), seed=5)


@pytest.fixture
def ward(runtime: Runtime, tmp_path: Path, frozen_slide: Path) -> Iterator[Ward]:
    # A clock near real time: the tile service weighs care relationships at the real time.
    clock = Clock(utcnow() - timedelta(seconds=5))
    runtime.clock = clock
    runtime.settings.notify_url = ""
    ensure_master(runtime.db, HOSPITAL, PATIENT, "FROZENONE", "19600101")
    ensure_master(runtime.db, HOSPITAL, OTHER, "FROZENTWO", "19610202")
    accounts = {who: make_account(runtime, *PEOPLE[who]) for who in ("patho1", "patho2")}
    with runtime.db.write() as s:
        for account in accounts.values():
            duty.add_shift(s, account.name, clock() - timedelta(hours=1), clock() + timedelta(hours=8), by="test",
                           now=clock())  # fmt: skip
    slide_file = tmp_path / "frozen.svs"
    slide_file.write_bytes(frozen_slide.read_bytes())
    with client() as http:
        yield Ward(runtime, http, clock, {}, accounts, slide_file)


def _slides(rt: Runtime) -> int:
    with rt.db.sessions() as s:
        return int(s.execute(select(func.count()).select_from(Slide)).scalar_one())


def _other_patient_slide(w: Ward) -> str:
    spool = w.slide_file.with_suffix(".spool")
    spool.write_bytes(w.slide_file.read_bytes())
    sha, size = hash_file(spool)
    reg = register_slide(
        w.rt, spool, sha, size, SlideMetadata(patient_id=OTHER, issuer=HOSPITAL), filename="o.svs",
        origin="upload", created_by="technicien",
    )  # fmt: skip
    return reg.slide_id


def _wado_instance(w: Ward, who: str, verdict: dict[str, Any]) -> bytes:
    url = (
        f"/dicom-web/studies/{verdict['study_uid']}/series/{verdict['series_uid']}"
        f"/instances/{verdict['sop_instance_uid']}"
    )
    r = w.http.get(url, headers={**w.h(who), "Accept": 'multipart/related; type="application/dicom"'})
    assert r.status_code == 200, r.text
    parts = read_multipart(r)
    assert len(parts) == 1
    return parts[0][1]


@sqlite_only
def test_a_frozen_section_goes_from_request_to_a_signed_verdict_the_surgeon_sees(
    ward: Ward, tmp_path: Path
) -> None:
    w, clock = ward, ward.clock
    w.log_in("surgeon", "technician", "patho1", "patho2")  # tokens are issued at the clock: before it moves
    with w.rt.db.write() as s:
        user = find_user(s, "patho-garde")
        assert user is not None
        user.email = "garde@example.org"
    created = w.request()
    assert created.status_code == 201, created.text
    rid = created.json()["request_id"]
    assert created.json()["state"] == "requested"
    with w.rt.db.sessions() as s:
        kinds = {r.professional: r.kind for r in s.execute(select(CareRelationship)).scalars()}
        mails = [m.recipient for m in s.execute(select(OutboxMessage)).scalars()]
    assert kinds["chirurgienne"] == "frozen-section-request" and "patho-garde" in kinds
    assert mails == [
        "garde@example.org"
    ]  # the other on-duty pathologist has no address: the stream is theirs

    up = w.upload({"issuer": HOSPITAL, "patient_id": PATIENT, "accession": "FS26-1", "frozen_request": rid})
    assert up.status_code == 202, up.text
    slide_id = up.json()["slide_id"]

    clock.advance(seconds=30)
    work = w.http.get("/api/frozen-sections/worklist", headers=w.h("patho1"))
    assert work.status_code == 200, work.text
    row = work.json()["requests"][0]
    assert row["request_id"] == rid and row["state"] == "scanned" and row["claim"] is None
    assert [s["slide_id"] for s in row["slides"]] == [slide_id] and row["slides"][0]["status"] == "received"
    assert row["elapsed_minutes"] == 0.5 and row["target_minutes"] == 20 and not row["overdue"]

    got = w.http.post(f"/api/frozen-sections/{rid}/claim", headers=w.h("patho1"))
    assert got.status_code == 200 and got.json()["claim"]["holder"] == "patho-garde"
    second = w.http.post(f"/api/frozen-sections/{rid}/claim", headers=w.h("patho2"))
    assert second.status_code == 409
    assert "claimed by patho-garde until" in second.json()["detail"]

    opened = w.http.get(f"/tiles/{slide_id}.dzi", headers=w.h("patho1"))
    assert opened.status_code == 200, opened.text
    assert w.http.get(f"/api/frozen-sections/{rid}", headers=w.h("surgeon")).json()["steps"]["first_view_at"]

    clock.advance(minutes=11)  # the claim lapses: the other pathologist may take it
    assert w.http.post(f"/api/frozen-sections/{rid}/verdict", json={"diagnosis": "benign", "margins": "clear"},
                       headers=w.h("patho1")).status_code == 409  # fmt: skip
    taken = w.http.post(f"/api/frozen-sections/{rid}/claim", headers=w.h("patho2"))
    assert taken.status_code == 200 and taken.json()["claim"]["holder"] == "patho-renfort"
    stolen = w.http.post(
        f"/api/frozen-sections/{rid}/verdict",
        json={"diagnosis": "benign", "margins": "clear"},
        headers=w.h("patho1"),
    )
    assert stolen.status_code == 403 and "patho-renfort holds the claim" in stolen.json()["detail"]

    clock.advance(minutes=2)
    signed = w.http.post(
        f"/api/frozen-sections/{rid}/verdict",
        json={"diagnosis": "malignant", "margins": "close", "text": "metastatic carcinoma, 4 mm"},
        headers=w.h("patho2"),
    )
    assert signed.status_code == 201, signed.text
    verdict = signed.json()["verdict"]
    assert signed.json()["state"] == "answered" and verdict["pathologist"] == "patho-renfort"
    again = w.http.post(
        f"/api/frozen-sections/{rid}/verdict",
        json={"diagnosis": "benign", "margins": "clear"},
        headers=w.h("patho2"),
    )
    assert again.status_code == 409 and "cannot change" in again.json()["detail"]
    assert w.http.post(f"/api/frozen-sections/{rid}/claim", headers=w.h("patho1")).status_code == 409

    seen_by_surgeon = w.http.get(f"/api/frozen-sections/{rid}", headers=w.h("surgeon")).json()
    assert seen_by_surgeon["verdict"]["diagnosis"] == "malignant"
    check = w.http.get(f"/api/frozen-sections/{rid}/verdict/verify", headers=w.h("surgeon")).json()
    assert check["valid"] is True, check
    with w.rt.db.write() as s:  # someone with write access to the index alone changes the answer
        row = s.get(FrozenSectionRequest, rid)
        assert row is not None
        row.diagnosis = "benign"
    forged = w.http.get(f"/api/frozen-sections/{rid}/verdict/verify", headers=w.h("surgeon")).json()
    assert forged["valid"] is False and "differs from what was signed" in forged["reason"]
    with w.rt.db.write() as s:
        row = s.get(FrozenSectionRequest, rid)
        assert row is not None
        row.diagnosis = "malignant"
    with w.rt.db.sessions() as s:
        sms = s.execute(select(OutboxMessage).where(OutboxMessage.channel == "sms")).scalar_one()
    assert sms.recipient == "+33 4 00 00 00 12" and "Malignant" in sms.subject
    sent = [f.read_text() for f in sorted((w.rt.settings.data_dir / "outbox").glob("*-sms.txt"))]
    assert len(sent) == 1 and "Malignant; Margins close" in sent[0]  # delivered (here: the file sender)

    # The SR is in the case's study, readable through DICOMweb, and a valid DICOM object for dciodvfy.
    data = _wado_instance(w, "surgeon", verdict)
    sr = tmp_path / "verdict.dcm"
    sr.write_bytes(data)
    checked = subprocess.run(["dciodvfy", str(sr)], capture_output=True, text=True, timeout=60)
    errors = [line for line in checked.stderr.splitlines() if line.startswith("Error")]
    assert errors == [] and "BasicTextSR" in checked.stderr, checked.stderr
    ds = pydicom.dcmread(sr)
    assert ds.CompletionFlag == "COMPLETE" and ds.VerificationFlag == "VERIFIED"
    assert ds.VerifyingObserverSequence[0].VerifyingObserverName.family_name == "patho-renfort"
    with w.rt.db.sessions() as s:
        slide = s.get(Slide, slide_id)
        assert slide is not None and ds.StudyInstanceUID == slide.study_uid

    assert w.http.post(f"/api/frozen-sections/{rid}/seen", headers=w.h("patho2")).status_code == 403
    clock.advance(minutes=1)
    assert w.http.post(f"/api/frozen-sections/{rid}/seen", headers=w.h("surgeon")).json()["state"] == "seen"
    stream = w.http.get(f"/api/frozen-sections/{rid}/events", headers=w.h("surgeon"))
    kinds_sent = [
        line.removeprefix("event: ") for line in stream.text.splitlines() if line.startswith("event: ")
    ]
    assert kinds_sent == [
        "requested",
        "slide-attached",
        "claimed",
        "first-view",
        "claimed",
        "verdict",
        "seen",
    ]

    # A later answer is a new signed document naming the verdict; the verdict stays as signed.
    change = {
        "diagnosis": "malignant",
        "margins": "involved",
        "text": "deeper level",
        "reason": "margin re-measured",
    }
    url = f"/api/frozen-sections/{rid}/amendments"
    assert w.http.post(url, json=change, headers=w.h("patho1")).status_code == 403
    amended = w.http.post(url, json=change, headers=w.h("patho2"))
    assert amended.status_code == 201, amended.text
    assert (
        amended.json()["verdict"]["margins"] == "close"
        and amended.json()["amendments"][0]["margins"] == "involved"
    )
    check = w.http.get(f"/api/frozen-sections/{rid}/verdict/verify", headers=w.h("surgeon")).json()
    assert check["valid"] is True and [a["valid"] for a in check["amendments"]] == [True]
    later_bytes = _wado_instance(w, "surgeon", {**verdict, **amended.json()["amendments"][0]})
    (tmp_path / "amended.dcm").write_bytes(later_bytes)
    checked = subprocess.run(
        ["dciodvfy", str(tmp_path / "amended.dcm")], capture_output=True, text=True, timeout=60
    )
    assert not [line for line in checked.stderr.splitlines() if line.startswith("Error")], checked.stderr
    later = pydicom.dcmread(io.BytesIO(later_bytes))
    assert later.InstanceNumber == 2 and later.SeriesInstanceUID == verdict["series_uid"]
    predecessor = later.PredecessorDocumentsSequence[0].ReferencedSeriesSequence[0].ReferencedSOPSequence[0]
    assert predecessor.ReferencedSOPInstanceUID == verdict["sop_instance_uid"]

    report = w.http.get("/api/frozen-sections/report", headers=w.h("patho1")).json()
    assert report["requests"] == 1 and report["answered"] == 1
    assert report["steps"]["request_to_verdict"]["median"] == 13.5
    assert report["steps"]["verdict_to_seen"]["median"] == 1.0
    assert report["steps"]["arrival_to_verdict"]["within_target"] == 1.0
    svg = w.http.get("/api/frozen-sections/report.svg", headers=w.h("patho1"))
    assert svg.status_code == 200 and svg.headers["content-type"].startswith("image/svg+xml")
    assert b"<svg" in svg.content


@sqlite_only
def test_a_pathologist_neither_claiming_on_duty_nor_caring_is_refused_the_request_and_its_tiles(
    ward: Ward,
) -> None:
    w = ward
    rid = w.request().json()["request_id"]
    slide_id = w.upload({"issuer": HOSPITAL, "patient_id": PATIENT, "frozen_request": rid}).json()["slide_id"]
    assert w.http.get(f"/api/frozen-sections/{rid}", headers=w.h("outsider")).status_code == 403
    assert w.http.get(f"/tiles/{slide_id}.dzi", headers=w.h("outsider")).status_code == 403
    assert w.http.post(f"/api/frozen-sections/{rid}/claim", headers=w.h("outsider")).status_code == 403
    assert w.http.get("/api/frozen-sections/worklist", headers=w.h("outsider")).status_code == 403
    # The on-duty pathologist and the requesting surgeon do see them.
    assert w.http.get(f"/tiles/{slide_id}.dzi", headers=w.h("patho2")).status_code == 200
    assert w.http.get(f"/api/frozen-sections/{rid}", headers=w.h("surgeon")).status_code == 200
    with w.rt.db.sessions() as s:
        assert s.get(FrozenSectionRequest, rid).first_view_at is not None  # type: ignore[union-attr]


@sqlite_only
def test_impossible_steps_are_refused_with_their_reason_and_change_nothing(ward: Ward) -> None:
    w = ward
    missing = w.request(or_phone="")
    assert missing.status_code == 422
    unknown = w.request(patient_id="NOBODY")
    assert unknown.status_code == 422 and "unknown to the master patient index" in unknown.json()["detail"]
    elsewhere = w.request(_as="surgeon2")
    assert elsewhere.status_code == 403
    assert w.request(_as="patho1").status_code == 403
    rid = w.request().json()["request_id"]

    before = _slides(w.rt)
    wrong = w.upload({"issuer": HOSPITAL, "patient_id": OTHER, "frozen_request": rid})
    assert wrong.status_code == 422 and "another patient" in wrong.json()["detail"]
    nowhere = w.upload({"issuer": HOSPITAL, "patient_id": PATIENT, "frozen_request": 999})
    assert nowhere.status_code == 422 and "does not exist" in nowhere.json()["detail"]
    assert _slides(w.rt) == before

    other = _other_patient_slide(w)
    attached = w.http.post(
        f"/api/frozen-sections/{rid}/slides", json={"slide_id": other}, headers=w.h("technician")
    )
    assert attached.status_code == 422 and "another patient" in attached.json()["detail"]

    no_claim = w.http.post(
        f"/api/frozen-sections/{rid}/verdict",
        json={"diagnosis": "benign", "margins": "clear"},
        headers=w.h("patho1"),
    )
    assert no_claim.status_code == 409 and "no claim in force" in no_claim.json()["detail"]
    assert w.http.post(f"/api/frozen-sections/{rid}/claim", headers=w.h("patho1")).status_code == 200
    no_slide = w.http.post(
        f"/api/frozen-sections/{rid}/verdict",
        json={"diagnosis": "benign", "margins": "clear"},
        headers=w.h("patho1"),
    )
    assert no_slide.status_code == 409 and "no slide" in no_slide.json()["detail"]
    bad = w.http.post(
        f"/api/frozen-sections/{rid}/verdict",
        json={"diagnosis": "fine", "margins": "clear"},
        headers=w.h("patho1"),
    )
    assert bad.status_code == 422
    assert w.http.post(f"/api/frozen-sections/{rid}/seen", headers=w.h("surgeon")).status_code == 409
    assert w.http.post(f"/api/frozen-sections/{rid}/release", headers=w.h("patho2")).status_code == 409
    assert w.http.post("/api/duty", json={"start": w.clock().isoformat(), "end": w.clock().isoformat()},
                       headers=w.h("patho1")).status_code == 422  # fmt: skip
    hour = {"start": w.clock().isoformat(), "end": (w.clock() + timedelta(hours=1)).isoformat()}
    someone_else = w.http.post(
        "/api/duty", json={**hour, "pathologist": "patho-renfort"}, headers=w.h("patho1")
    )
    assert someone_else.status_code == 403
    view = w.http.get(f"/api/frozen-sections/{rid}", headers=w.h("patho1")).json()
    assert view["state"] == "claimed" and view["slides"] == [] and view["verdict"] is None

    assert w.upload({"issuer": HOSPITAL, "patient_id": PATIENT, "frozen_request": rid}).status_code == 202
    w.rt.settings.frozen_verdict_reauth_seconds = 60
    w.clock.advance(minutes=2)
    stale = w.http.post(
        f"/api/frozen-sections/{rid}/verdict",
        json={"diagnosis": "benign", "margins": "clear"},
        headers=w.h("patho1"),
    )
    assert (
        stale.status_code == 401 and "insufficient_user_authentication" in stale.headers["www-authenticate"]
    )
    assert w.http.get(f"/api/frozen-sections/{rid}", headers=w.h("patho1")).json()["verdict"] is None


@sqlite_only
def test_a_slide_of_the_patient_and_accession_joins_the_open_request(ward: Ward) -> None:
    w = ward
    rid = w.request().json()["request_id"]
    slide_id = w.upload({"issuer": HOSPITAL, "patient_id": PATIENT, "accession": "FS26-1"}).json()["slide_id"]
    view = w.http.get(f"/api/frozen-sections/{rid}", headers=w.h("surgeon")).json()
    assert [(s["slide_id"], s["how"]) for s in view["slides"]] == [(slide_id, "accession")]
    loose = w.upload({"issuer": HOSPITAL, "patient_id": PATIENT}).json()[
        "slide_id"
    ]  # no accession: on its own
    assert len(w.http.get(f"/api/frozen-sections/{rid}", headers=w.h("surgeon")).json()["slides"]) == 1
    by_hand = w.http.post(
        f"/api/frozen-sections/{rid}/slides", json={"slide_id": loose}, headers=w.h("technician")
    )
    assert by_hand.status_code == 200, by_hand.text
    assert [s["how"] for s in by_hand.json()["slides"]] == ["accession", "explicit"]


@sqlite_only
def test_a_cancelled_shift_ends_the_pathologists_access_and_worklist(ward: Ward) -> None:
    w = ward
    w.log_in("patho1", "surgeon")
    admin = make_account(w.rt, "admin", "admin", "")
    token = login(w.http, admin, w.clock()).json()["access_token"]
    shifts = w.http.get("/api/duty", headers=w.h("patho1")).json()
    mine = next(s for s in shifts if s["pathologist"] == "patho-garde")
    rid = w.request().json()["request_id"]
    assert w.http.get(f"/api/frozen-sections/{rid}", headers=w.h("patho1")).status_code == 200
    assert w.http.delete(f"/api/duty/{mine['id']}", headers=w.h("patho2")).status_code == 403
    assert w.http.delete(f"/api/duty/{mine['id']}", headers=w.h("patho1")).status_code == 200
    assert w.http.get(f"/api/frozen-sections/{rid}", headers=w.h("patho1")).status_code == 403
    assert w.http.get("/api/frozen-sections/worklist", headers=w.h("patho1")).status_code == 403
    # An administrator puts them back on duty: the open request is theirs to see again.
    hours = {"start": w.clock().isoformat(), "end": (w.clock() + timedelta(hours=2)).isoformat()}
    back = w.http.post("/api/duty", json={**hours, "pathologist": "patho-garde"}, headers=bearer(token))
    assert back.status_code == 201, back.text
    assert w.http.get(f"/api/frozen-sections/{rid}", headers=w.h("patho1")).status_code == 200
    assert [
        r["request_id"]
        for r in w.http.get("/api/frozen-sections/worklist", headers=w.h("patho1")).json()["requests"]
    ] == [rid]


@sqlite_only
def test_viewer_timings_are_reported_against_their_limits(ward: Ward) -> None:
    w = ward
    for event, ms in (
        ("open_case", 1200.0),
        ("open_case", 5000.0),
        ("switch_slide", 300.0),
        ("next_field", 90.0),
    ):
        r = w.http.post("/api/viewer-timings", json={"event": event, "ms": ms}, headers=w.h("patho1"))
        assert r.status_code == 201, r.text
    assert (
        w.http.post("/api/viewer-timings", json={"event": "zoom", "ms": 1}, headers=w.h("patho1")).status_code
        == 422
    )
    viewer = w.http.get("/api/frozen-sections/report", headers=w.h("patho1")).json()["viewer"]
    assert viewer["open_case"] == {
        "count": 2, "p50_ms": 3100.0, "p95_ms": 4810.0, "limit_ms": 4000.0, "within_limit": 0.5,
    }  # fmt: skip
    assert viewer["next_field"]["within_limit"] == 1.0
