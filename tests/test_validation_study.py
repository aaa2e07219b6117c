"""The CAP validation of whole-slide imaging through the API: a pathologist's study for frozen sections, glass
reads first, digital reads only after the 14-day washout and blind to the glass read, and the concordance
against the 95 % goal over at least 60 cases."""

from __future__ import annotations

from datetime import timedelta

import pytest
from fastapi.testclient import TestClient

from archipel.platform.db import utcnow
from archipel.platform.runtime import Runtime
from archipel.wsi import validation_study as vs
from archipel.wsi.models import Slide
from tests.auth_helpers import Clock, bearer, login, make_account

sqlite_only = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
SITE = "CHU-NORD"


def _slides(rt: Runtime, n: int) -> list[str]:
    """Slide rows of the pathologist's site (the validation reads their records, not their pixels)."""
    ids = [f"val{i:05d}" for i in range(n)]
    with rt.db.write() as s:
        for i, slide_id in enumerate(ids):
            s.add(
                Slide(
                    id=slide_id, issuer=SITE, patient_id=f"VAL{i:04d}", source_key=f"{i:064x}", status="ready"
                )
            )
    return ids


def _token(http: TestClient, rt: Runtime, name: str, clock: Clock, site: str = SITE) -> str:
    account = make_account(rt, name, "pathologist", site)
    r = login(http, account, clock())
    assert r.status_code == 200, r.text
    return str(r.json()["access_token"])


@sqlite_only
def test_a_frozen_section_validation_reads_digitally_after_the_washout_blind_to_the_glass_read(
    runtime: Runtime, http: TestClient
) -> None:
    # The clock starts in the past, so that the whole washout stays before the real time tokens are checked at.
    clock = Clock(utcnow() - timedelta(days=20))
    runtime.clock = clock
    account = make_account(runtime, "patho-val", "pathologist", SITE)
    me = bearer(login(http, account, clock()).json()["access_token"])
    slides = _slides(runtime, 61)

    assert (
        http.post("/api/validation-studies", json={"application": "dermoscopy"}, headers=me).status_code
        == 422
    )
    short = http.post(
        "/api/validation-studies", json={"application": "frozen-section", "min_cases": 20}, headers=me
    )
    assert short.status_code == 422 and "at least 60 cases" in short.json()["detail"]
    made = http.post("/api/validation-studies", json={"application": "frozen-section"}, headers=me)
    assert made.status_code == 201, made.text
    sid = made.json()["study_id"]
    base = f"/api/validation-studies/{sid}"

    cases = []
    for slide_id, glass in zip(slides[:3], ("malignant", "benign", "benign"), strict=True):
        added = http.post(f"{base}/cases", json={"slide_id": slide_id}, headers=me)
        assert added.status_code == 201, added.text
        cases.append(added.json()["case_id"])
        read = http.post(f"{base}/cases/{cases[-1]}/glass", json={"diagnosis": glass}, headers=me)
        assert read.status_code == 200, read.text
    assert http.post(f"{base}/cases", json={"slide_id": slides[0]}, headers=me).status_code == 409
    bad = http.post(f"{base}/cases/{cases[0]}/glass", json={"diagnosis": "benign"}, headers=me)
    assert bad.status_code == 409 and "recorded already" in bad.json()["detail"]

    clock.advance(days=1)
    me = bearer(login(http, account, clock()).json()["access_token"])  # the next day: a new log-in
    early = http.post(f"{base}/cases/{cases[0]}/digital", json={"diagnosis": "malignant"}, headers=me)
    assert early.status_code == 409 and "opens on" in early.json()["detail"]
    blind = http.get(f"{base}/cases/{cases[0]}", headers=me).json()
    assert blind["glass"] is None and blind["glass_read_at"] and blind["digital_opens_at"]

    clock.advance(days=13, hours=1)
    me = bearer(login(http, account, clock()).json()["access_token"])  # two weeks later: a new log-in
    for case_id, digital in zip(cases, ("malignant", "benign", "malignant"), strict=True):
        done = http.post(f"{base}/cases/{case_id}/digital", json={"diagnosis": digital}, headers=me)
        assert done.status_code == 200, done.text
    both = http.get(f"{base}/cases/{cases[2]}", headers=me).json()
    assert both["glass"]["diagnosis"] == "benign" and both["digital"]["diagnosis"] == "malignant"
    assert both["concordant"] is False

    report = http.get(f"{base}/report", headers=me).json()
    assert report["digital_read"] == 3 and report["discordant_cases"] == [cases[2]]
    assert report["enough_cases"] is False and report["passed"] is False

    # The other 57 cases, read the same way through the module, bring the study to the guideline's 60.
    with runtime.db.write() as s:
        study = s.get(vs.ValidationStudy, sid)
        assert study is not None
        for slide_id in slides[3:60]:
            case = vs.add_case(s, study, slide_id, clock() - timedelta(days=15))
            vs.record_glass(s, study, case, "benign", "", clock() - timedelta(days=15))
            vs.record_digital(s, study, case, "benign", "", clock())
    report = http.get(f"{base}/report", headers=me).json()
    assert report["digital_read"] == 60 and report["concordant"] == 59
    assert report["concordance"] == round(59 / 60, 4) and report["passed"] is True


@sqlite_only
def test_a_validation_case_is_only_a_slide_the_pathologist_may_read(
    runtime: Runtime, http: TestClient
) -> None:
    clock = Clock(utcnow() - timedelta(seconds=5))
    runtime.clock = clock
    slide = _slides(runtime, 1)[0]
    elsewhere = bearer(_token(http, runtime, "patho-loin", clock, site="CH-EST"))
    mine = http.post("/api/validation-studies", json={"application": "routine-he"}, headers=elsewhere).json()
    refused = http.post(
        f"/api/validation-studies/{mine['study_id']}/cases", json={"slide_id": slide}, headers=elsewhere
    )
    assert refused.status_code == 403
    owner = bearer(_token(http, runtime, "patho-val2", clock))
    assert http.get(f"/api/validation-studies/{mine['study_id']}/report", headers=owner).status_code == 403
    assert http.get("/api/validation-studies", headers=owner).json() == []
