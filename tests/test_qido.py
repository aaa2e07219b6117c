"""QIDO-RS: searches at every level, paging, includefield, clear 400s, one audited query per request, and
dicomweb-client against a running server fed by dcmtk's storescu."""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from dicomweb_client.api import DICOMwebClient
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from archipel.app import create_app
from archipel.platform import access, audit
from archipel.platform.authn import Principal
from archipel.platform.http import current_principal
from archipel.platform.runtime import Runtime
from archipel.radiology.archive import Archive
from archipel.radiology.dicomweb import qido
from archipel.radiology.samples import SyntheticPatient, ct_series, mammo_study, mr_series, to_bytes
from tests.access_support import ensure_master, relate
from tests.support import ArchipelServer

ALPHA = SyntheticPatient("QA0001", "QIDOTEST^Alpha", "19700101", "F", "SITE-A")
BRAVO = SyntheticPatient("QB0001", "QIDOTEST^Bravo", "19800101", "M", "SITE-B")
DICOM_JSON = "application/dicom+json"


def value(result: dict[str, Any], tag: str) -> Any:
    """The first value of ``tag`` in one DICOM JSON result, or ``None``."""
    values = result.get(tag, {}).get("Value")
    return values[0] if values else None


class Api:
    """A TestClient logged in as a radiologist, and the UIDs of what was stored."""

    def __init__(self, client: TestClient, runtime: Runtime, studies: dict[str, Any]) -> None:
        self.client = client
        self.runtime = runtime
        self.studies = studies

    def get(self, path: str, **params: Any) -> Any:
        return self.client.get("/dicom-web" + path, params=params)

    def ok(self, path: str, **params: Any) -> list[dict[str, Any]]:
        r = self.get(path, **params)
        assert r.status_code == 200, r.text
        assert r.headers["content-type"] == DICOM_JSON
        return list(r.json())


@pytest.fixture
def api(runtime: Runtime, archive: Archive) -> Iterator[Api]:
    """Alpha (SITE-A): a CT+MR study and a mammogram; Bravo (SITE-B): a CT study; the caller a radiologist."""
    ct = ct_series(ALPHA, 3, study_date="20260110", accession="QACC1", rows=16, cols=16)
    mr = mr_series(ALPHA, 2, study_uid=ct[0].StudyInstanceUID, study_date="20260110", accession="QACC1")
    mg = mammo_study(ALPHA, study_date="20260305", accession="QACC2")
    b = ct_series(BRAVO, 2, study_date="20260111", accession="QACC3", rows=8, cols=8)
    for ds in [*ct, *mr, *mg, *b]:
        archive.store(to_bytes(ds))
    # The reader works at SITE-A and takes care of Bravo, a SITE-B patient: both sites' studies are visible.
    relate(runtime.db, "reader", ensure_master(runtime.db, BRAVO.issuer, BRAVO.patient_id))
    app = create_app()
    # Logging in is the identity module's business (and its tests'): here a radiologist is simply the caller.
    app.dependency_overrides[current_principal] = lambda: Principal("reader", "radiologist", "SITE-A")
    client = TestClient(app)
    studies = {"ct_mr": ct[0].StudyInstanceUID, "mg": mg[0].StudyInstanceUID, "bravo": b[0].StudyInstanceUID}
    studies.update(ct=ct, mr=mr)
    with client:
        yield Api(client, runtime, studies)


def test_study_search_returns_the_required_attributes_with_counts_and_retrieve_url(api: Api) -> None:
    [study] = api.ok("/studies", PatientID="QA0001", StudyDate="20260110")
    uid = api.studies["ct_mr"]
    assert value(study, "0020000D") == uid
    assert value(study, "00100010") == {"Alphabetic": "QIDOTEST^Alpha"}
    assert value(study, "00100021") == "SITE-A"
    assert study["00080061"]["Value"] == ["CT", "MR"]
    assert (value(study, "00201206"), value(study, "00201208")) == (2, 5)
    assert value(study, "00080050") == "QACC1" and value(study, "00080020") == "20260110"
    assert value(study, "00081190") == f"http://testserver/dicom-web/studies/{uid}"
    for tag in ("00080030", "00080090", "00100030", "00100040", "00200010"):
        assert tag in study


def test_keywords_and_tags_are_the_same_key(api: Api) -> None:
    by_keyword = api.ok("/studies", PatientID="QA0001")
    assert len(by_keyword) == 2 and api.ok("/studies", **{"00100020": "QA0001"}) == by_keyword


def test_series_of_a_study_and_all_series(api: Api) -> None:
    series = api.ok(f"/studies/{api.studies['ct_mr']}/series")
    assert [(value(s, "00080060"), value(s, "00201209")) for s in series] == [("CT", 3), ("MR", 2)]
    ct_series_uid = api.studies["ct"][0].SeriesInstanceUID
    assert value(series[0], "00081190").endswith(f"/studies/{api.studies['ct_mr']}/series/{ct_series_uid}")
    [mr] = api.ok("/series", Modality="MR")
    assert value(mr, "00100020") == "QA0001" and value(mr, "0020000D") == api.studies["ct_mr"]


def test_instances_of_a_series_a_study_and_everywhere(api: Api) -> None:
    ct = api.studies["ct"]
    path = f"/studies/{api.studies['ct_mr']}/series/{ct[0].SeriesInstanceUID}/instances"
    instances = api.ok(path)
    assert [value(i, "00080018") for i in instances] == [ds.SOPInstanceUID for ds in ct]
    first = instances[0]
    assert (value(first, "00280010"), value(first, "00280011")) == (16, 16)
    assert value(first, "00083002") == "1.2.840.10008.1.2.1"
    assert value(first, "00200013") == 1 and value(first, "00080016") == ct[0].SOPClassUID
    in_study = api.ok(f"/studies/{api.studies['ct_mr']}/instances", InstanceNumber="2")
    assert sorted(value(i, "00080060") for i in in_study) == ["CT", "MR"]
    [one] = api.ok("/instances", SOPInstanceUID=ct[1].SOPInstanceUID)
    assert value(one, "00100020") == "QA0001" and value(one, "00201209") == 3


def test_includefield_adds_attributes_by_keyword_tag_or_all(api: Api) -> None:
    [a] = api.ok("/studies", StudyInstanceUID=api.studies["mg"], includefield="StudyDescription")
    assert value(a, "00081030") == "MAMMOGRAPHIE DE DEPISTAGE"
    [b] = api.ok("/studies", StudyInstanceUID=api.studies["mg"], includefield="00081030,PatientSex")
    assert value(b, "00081030") == "MAMMOGRAPHIE DE DEPISTAGE"
    [c] = api.ok("/studies", StudyInstanceUID=api.studies["mg"], includefield="all")
    assert value(c, "00201200") == 2 and "00081030" in c


def test_an_empty_key_asks_for_the_attribute_without_restricting(api: Api) -> None:
    studies = api.ok("/studies", PatientID="QA0001", InstitutionName="", Modality="")
    assert len(studies) == 2 and all(s["00080080"] == {"vr": "LO"} for s in studies)


def test_matching_keys_and_wildcards(api: Api) -> None:
    assert len(api.ok("/studies", PatientName="qidotest*")) == 3
    assert len(api.ok("/studies", ModalitiesInStudy="MG")) == 1
    assert len(api.ok("/studies", StudyDate="20260101-20260131")) == 2
    uids = f"{api.studies['mg']},{api.studies['bravo']}"
    assert len(api.ok("/studies", StudyInstanceUID=uids)) == 2
    assert api.ok("/studies", PatientID="NOBODY") == []


def test_fuzzy_matching_finds_given_names(api: Api) -> None:
    assert [value(s, "00100020") for s in api.ok("/studies", PatientName="brav", fuzzymatching="true")] == [
        "QB0001"
    ]
    assert api.ok("/studies", PatientName="brav", fuzzymatching="false") == []


def test_limit_and_offset_page_through_a_stable_order(api: Api) -> None:
    every = [value(s, "0020000D") for s in api.ok("/studies")]
    assert len(every) == 3
    pages = [value(s, "0020000D") for o in range(3) for s in api.ok("/studies", limit=1, offset=o)]
    assert pages == every
    assert api.ok("/studies", offset=3) == []


@pytest.mark.parametrize(
    ("params", "reason"),
    [
        ({"NoSuchAttribute": "x"}, "not a DICOM attribute"),
        ({"StudyDate": "20260131-20260101"}, "ends before it starts"),
        ({"StudyDate": "yesterday"}, "StudyDate"),
        ({"limit": "-1"}, "negative"),
        ({"offset": "ten"}, "integer"),
        ({"fuzzymatching": "perhaps"}, "true or false"),
        ({"Modality": "CT"}, "SERIES-level"),
        ({"InstitutionName": "X"}, "not supported"),
        ({"00400275.00401001": "X"}, "sequence"),
        ({"includefield": "NoSuchAttribute"}, "not a DICOM attribute"),
    ],
)
def test_bad_parameters_get_400_with_a_reason(api: Api, params: dict[str, str], reason: str) -> None:
    r = api.get("/studies", **params)
    assert r.status_code == 400 and reason in r.json()["detail"]


def test_every_search_needs_a_token(api: Api) -> None:
    app: Any = api.client.app
    app.dependency_overrides.clear()
    paths = ["/studies", "/series", "/instances", f"/studies/{api.studies['mg']}/series"]
    paths += [f"/studies/{api.studies['mg']}/instances", f"/studies/{api.studies['mg']}/series/1.2/instances"]
    for path in paths:
        assert api.client.get("/dicom-web" + path).status_code == 401


def test_each_search_is_audited_once_as_a_query(api: Api) -> None:
    def queries() -> int:
        with api.runtime.db.sessions() as s:
            stmt = select(func.count()).where(audit.AuditEvent.event_type == audit.QUERY)
            return int(s.execute(stmt).scalar_one())

    before = queries()
    api.ok("/studies", PatientID="QA0001")
    api.ok(f"/studies/{api.studies['ct_mr']}/series")
    assert queries() == before + 2


def test_a_site_limited_principal_sees_and_pages_only_its_sites(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    only_b = access.ReadScope((access.Grant("test", sites=frozenset({"SITE-B"})),))
    monkeypatch.setattr(qido.access, "read_scope", lambda _p, _f: only_b)
    assert [value(s, "00100020") for s in api.ok("/studies")] == ["QB0001"]
    assert api.ok("/studies", offset=1) == []
    assert api.ok("/instances", PatientName="QIDOTEST^Alpha") == []
    assert len(api.ok("/instances")) == 2


def test_results_beyond_the_maximum_are_cut_with_a_warning(api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(qido, "MAX_RESULTS", 2)
    r = api.get("/studies")
    assert r.status_code == 200 and len(r.json()) == 2
    assert (
        r.headers["warning"].startswith("299 ")
        and "Additional results can be requested" in r.headers["warning"]
    )
    assert "warning" not in api.get("/studies", limit=2, offset=1).headers


# --- against a running server, fed by dcmtk's storescu, searched by dicomweb-client -----------------------


def _storescu(server: ArchipelServer, folder: Path) -> None:
    subprocess.run(
        [
            "storescu",
            "-aet",
            "STORESCU",
            "-aec",
            server.aet,
            "+sd",
            "127.0.0.1",
            str(server.dicom_port),
            str(folder),
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )


def test_dicomweb_client_searches_with_filters_limit_and_offset(
    server: ArchipelServer, tmp_path: Path
) -> None:
    pid = f"DWC{uuid.uuid4().hex[:6].upper()}"
    patient = SyntheticPatient(pid, "DWCLIENT^Test", "19750505", "M", "SITE-A")
    datasets = [*ct_series(patient, 3, study_date="20260401", rows=8, cols=8)]
    datasets += mr_series(patient, 2, study_date="20260402")
    for ds in datasets:
        (tmp_path / f"{ds.SOPInstanceUID}.dcm").write_bytes(to_bytes(ds))
    _storescu(server, tmp_path)
    client = DICOMwebClient(url=f"{server.url}/dicom-web", headers=server.headers("radiologist"))

    studies = client.search_for_studies(search_filters={"PatientID": pid})
    assert [s["00080020"]["Value"][0] for s in studies] == ["20260402", "20260401"]
    assert [s["00201208"]["Value"][0] for s in studies] == [2, 3]
    page = client.search_for_studies(search_filters={"PatientID": pid}, limit=1, offset=1)
    assert [s["0020000D"]["Value"][0] for s in page] == [studies[1]["0020000D"]["Value"][0]]
    ct_study = studies[1]["0020000D"]["Value"][0]
    [series] = client.search_for_series(ct_study, search_filters={"Modality": "CT"})
    assert series["00201209"]["Value"] == [3]
    instances = client.search_for_instances(
        ct_study, series["0020000E"]["Value"][0], fields=["PatientName"], limit=2, offset=1
    )
    assert [i["00200013"]["Value"][0] for i in instances] == [2, 3]
    everywhere = client.search_for_instances(search_filters={"PatientID": pid}, get_remaining=True)
    assert len(everywhere) == 5
    assert client.search_for_studies(search_filters={"PatientID": pid + "X"}) == []
