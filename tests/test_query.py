"""The shared query engine: DICOM matching translated to SQL, site visibility inside the query, counts, paging."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from pydicom.dataset import Dataset

from archipel.platform.runtime import Runtime
from archipel.radiology import matching
from archipel.radiology.archive import Archive
from archipel.radiology.query import Level, MatchError, Query, search, to_dataset, to_json
from archipel.radiology.samples import SyntheticPatient, ct_series, mammo_study, mr_series, to_bytes

ALPHA = SyntheticPatient("PA0001", "TESTPATIENT^Alpha", "19700101", "F", "SITE-A")
PERCENT = SyntheticPatient("PA0002", "100%^Percent", "19800202", "M", "SITE-A")
LOOKALIKE = SyntheticPatient("PA0003", "1000^Lookalike", "19800303", "M", "SITE-A")
UNDERSCORE = SyntheticPatient("PA_04", "UNDER_SCORE^Beta", "19900404", "F", "SITE-A")
# Same PatientID as ALPHA, other issuer: another person.
BRAVO = SyntheticPatient("PA0001", "OTHERSITE^Bravo", "19600606", "M", "SITE-B")


@dataclass
class Index:
    """What the fixture stored: study UIDs by name."""

    runtime: Runtime
    studies: dict[str, str]


def _store(archive: Archive, datasets: list[Dataset], study_time: str | None = None) -> str:
    for ds in datasets:
        if study_time is not None:
            ds.StudyTime = study_time
        archive.store(to_bytes(ds))
    return str(datasets[0].StudyInstanceUID)


@pytest.fixture
def index(runtime: Runtime, archive: Archive) -> Index:
    """Five patients over two sites: CT (3 slices) + MR (2) in one study, a mammogram, and small CTs."""
    studies = {}
    ct = ct_series(ALPHA, 3, study_date="20260110", accession="ACC-CT", rows=16, cols=16)
    studies["alpha_ct_mr"] = _store(archive, ct, "081500")
    _store(archive, mr_series(ALPHA, 2, study_uid=studies["alpha_ct_mr"], study_date="20260110"), "081500")
    studies["alpha_mg"] = _store(
        archive, mammo_study(ALPHA, study_date="20260305", accession="ACC-MG"), "170000"
    )
    studies["percent"] = _store(
        archive, ct_series(PERCENT, 1, study_date="20260212", rows=8, cols=8), "120000"
    )
    studies["lookalike"] = _store(archive, ct_series(LOOKALIKE, 1, study_date="20260213", rows=8, cols=8))
    studies["underscore"] = _store(archive, ct_series(UNDERSCORE, 1, study_date="20251231", rows=8, cols=8))
    studies["bravo"] = _store(archive, ct_series(BRAVO, 2, study_date="20260111", rows=8, cols=8))
    return Index(runtime, studies)


def _uids(index: Index, **keys: str) -> set[str]:
    rows = search(index.runtime.db, Query(level=Level.STUDY, keys=keys))
    return {r["StudyInstanceUID"] for r in rows}


def test_like_pattern_escapes_percent_underscore_and_translates_wildcards() -> None:
    assert matching.like_pattern("100%_a*b?") == "100\\%\\_a%b_"


def test_lone_star_and_empty_values_are_universal() -> None:
    assert matching.is_universal("") and matching.is_universal("*") and not matching.is_universal("*A")


@pytest.mark.parametrize("value", ["2026-01-01", "20260101-20250101", "2026*", "20260101--", "-"])
def test_malformed_date_ranges_are_refused_with_the_attribute_name(value: str) -> None:
    with pytest.raises(MatchError, match="StudyDate"):
        matching.parse_range(value, keyword="StudyDate", vr="DA")


def test_open_ended_ranges_parse() -> None:
    assert matching.parse_range("-20260131", keyword="d", vr="DA") == matching.DateTimeRange(None, "20260131")
    assert matching.parse_range("20260101-", keyword="d", vr="DA") == matching.DateTimeRange("20260101", None)
    assert matching.parse_range("10:15", keyword="t", vr="TM") == matching.DateTimeRange("1015", "1015")


def test_patient_name_wildcards_match_case_insensitively(index: Index) -> None:
    alpha = {index.studies["alpha_ct_mr"], index.studies["alpha_mg"]}
    assert _uids(index, PatientName="TESTPAT*") == alpha
    assert _uids(index, PatientName="testpatient^alpha") == alpha
    assert _uids(index, PatientName="TESTPATIEN?^ALPHA") == alpha
    assert _uids(index, PatientName="TESTPAT") == set()


def test_fuzzy_name_matching_finds_a_given_name_prefix(index: Index) -> None:
    rows = search(index.runtime.db, Query(level=Level.STUDY, keys={"PatientName": "alph"}, fuzzy=True))
    assert {r["StudyInstanceUID"] for r in rows} == {index.studies["alpha_ct_mr"], index.studies["alpha_mg"]}


def test_percent_and_underscore_in_values_match_literally(index: Index) -> None:
    assert _uids(index, PatientName="100%*") == {index.studies["percent"]}
    assert _uids(index, PatientName="UNDER_SCORE*") == {index.studies["underscore"]}
    assert _uids(index, PatientID="PA_04") == {index.studies["underscore"]}
    # "_" is no wildcard: PA0001 does not match "PA_00*".
    assert _uids(index, PatientID="PA_00*") == set()


def test_uid_list_matches_any_listed_study(index: Index) -> None:
    pair = f"{index.studies['percent']}\\{index.studies['bravo']}"
    assert _uids(index, StudyInstanceUID=pair) == {index.studies["percent"], index.studies["bravo"]}


def test_uid_lists_reject_values_that_are_not_uids(index: Index) -> None:
    with pytest.raises(MatchError, match="StudyInstanceUID"):
        _uids(index, StudyInstanceUID="1.2.3*")


def test_date_ranges_single_closed_and_open(index: Index) -> None:
    s = index.studies
    assert _uids(index, StudyDate="20260110") == {s["alpha_ct_mr"]}
    assert _uids(index, StudyDate="20260101-20260131") == {s["alpha_ct_mr"], s["bravo"]}
    assert _uids(index, StudyDate="-20260110") == {s["alpha_ct_mr"], s["underscore"]}
    assert _uids(index, StudyDate="20260213-") == {s["lookalike"], s["alpha_mg"]}


def test_time_range_matches_at_the_precision_given(index: Index) -> None:
    assert _uids(index, StudyTime="0800-0815") == {index.studies["alpha_ct_mr"]}
    assert _uids(index, StudyTime="17") == {index.studies["alpha_mg"]}


def test_date_and_time_ranges_combine_into_one_datetime_range(index: Index) -> None:
    s = index.studies
    keys = {"StudyDate": "20260110-20260306", "StudyTime": "1000-1200"}
    # From 10 January 10:00 to 6 March 12:00: the 08:15 study on the 10th is out, the 17:00 one on 5 March in.
    combined = search(index.runtime.db, Query(level=Level.STUDY, keys=keys))
    between = {s["bravo"], s["percent"], s["lookalike"]}
    assert {r["StudyInstanceUID"] for r in combined} == between | {s["alpha_mg"]}
    # Matched separately, the time range applies to every day: 17:00 is out.
    separate = search(index.runtime.db, Query(level=Level.STUDY, keys=keys, combined_datetime=False))
    assert {r["StudyInstanceUID"] for r in separate} == between


def test_modalities_in_study_matches_any_series_modality(index: Index) -> None:
    assert _uids(index, ModalitiesInStudy="MR") == {index.studies["alpha_ct_mr"]}
    assert _uids(index, ModalitiesInStudy="MR\\MG") == {
        index.studies["alpha_ct_mr"],
        index.studies["alpha_mg"],
    }
    assert _uids(index, ModalitiesInStudy="M?") == {index.studies["alpha_ct_mr"], index.studies["alpha_mg"]}
    assert _uids(index, ModalitiesInStudy="MG\\C?") == set(index.studies.values())
    assert _uids(index, ModalitiesInStudy="MG,MR") == {
        index.studies["alpha_ct_mr"],
        index.studies["alpha_mg"],
    }
    assert _uids(index, ModalitiesInStudy="T") == set() and _uids(index, ModalitiesInStudy="R\\M") == set()


def test_study_rows_carry_counts_modalities_and_issuer(index: Index) -> None:
    q = Query(
        level=Level.STUDY,
        keys={"StudyInstanceUID": index.studies["alpha_ct_mr"]},
        returns=frozenset({"NumberOfStudyRelatedSeries", "NumberOfStudyRelatedInstances"}),
    )
    [row] = search(index.runtime.db, q)
    assert (row["NumberOfStudyRelatedSeries"], row["NumberOfStudyRelatedInstances"]) == (2, 5)
    assert row["IssuerOfPatientID"] == "SITE-A"
    doc = to_json(row, ["ModalitiesInStudy", "PatientName", "NumberOfStudyRelatedInstances", "StudyID"])
    assert doc["00080061"] == {"vr": "CS", "Value": ["CT", "MR"]}
    assert doc["00100010"] == {"vr": "PN", "Value": [{"Alphabetic": "TESTPATIENT^Alpha"}]}
    assert doc["00201208"] == {"vr": "IS", "Value": [5]}
    ds = to_dataset(row, ["ModalitiesInStudy", "InstitutionName"])
    assert list(ds.ModalitiesInStudy) == ["CT", "MR"] and ds["InstitutionName"].is_empty


def test_same_patient_id_at_two_issuers_stays_two_patients(index: Index) -> None:
    rows = search(index.runtime.db, Query(level=Level.PATIENT, keys={"PatientID": "PA0001"}))
    assert sorted(r["IssuerOfPatientID"] for r in rows) == ["SITE-A", "SITE-B"]


def test_site_filter_hides_studies_and_their_counts(index: Index) -> None:
    db = index.runtime.db
    only_b = frozenset({"SITE-B"})
    rows = search(db, Query(level=Level.STUDY, sites=only_b))
    assert {r["StudyInstanceUID"] for r in rows} == {index.studies["bravo"]}
    assert search(db, Query(level=Level.STUDY, sites=only_b, offset=1)) == []
    counts = frozenset({"NumberOfPatientRelatedStudies", "NumberOfPatientRelatedInstances"})
    patients = search(db, Query(level=Level.PATIENT, sites=only_b, returns=counts))
    assert [(p["PatientName"], p["NumberOfPatientRelatedStudies"]) for p in patients] == [
        ("OTHERSITE^Bravo", 1)
    ]
    assert search(db, Query(level=Level.IMAGE, sites=only_b, keys={"PatientID": "PA0001"})).__len__() == 2
    assert search(db, Query(level=Level.STUDY, sites=frozenset({"SITE-C"}))) == []


def test_patient_counts_span_studies_series_and_instances(index: Index) -> None:
    counts = frozenset(
        {"NumberOfPatientRelatedStudies", "NumberOfPatientRelatedSeries", "NumberOfPatientRelatedInstances"}
    )
    q = Query(
        level=Level.PATIENT, keys={"PatientID": "PA0001", "IssuerOfPatientID": "SITE-A"}, returns=counts
    )
    [row] = search(index.runtime.db, q)
    assert (
        row["NumberOfPatientRelatedStudies"],
        row["NumberOfPatientRelatedSeries"],
        row["NumberOfPatientRelatedInstances"],
    ) == (2, 3, 9)


def test_paging_is_deterministic_and_complete(index: Index) -> None:
    db = index.runtime.db
    every = [r["SOPInstanceUID"] for r in search(db, Query(level=Level.IMAGE))]
    pages = [
        r["SOPInstanceUID"]
        for o in range(0, 20, 3)
        for r in search(db, Query(Level.IMAGE, limit=3, offset=o))
    ]
    assert len(every) == 14 and pages == every
    studies = [r["StudyDate"] for r in search(db, Query(level=Level.STUDY))]
    assert studies == sorted(studies, reverse=True)


def test_series_and_instance_keys_match_at_their_levels(index: Index) -> None:
    db = index.runtime.db
    series = search(
        db,
        Query(
            level=Level.SERIES, keys={"Modality": "MG"}, returns=frozenset(["NumberOfSeriesRelatedInstances"])
        ),
    )
    assert [(s["Modality"], s["NumberOfSeriesRelatedInstances"]) for s in series] == [("MG", 4)]
    images = search(
        db,
        Query(
            level=Level.IMAGE, keys={"StudyInstanceUID": index.studies["alpha_ct_mr"], "InstanceNumber": "2"}
        ),
    )
    assert sorted(i["Modality"] for i in images) == ["CT", "MR"]
    assert {i["Rows"] for i in images} == {16, 192}


def test_keys_below_the_level_or_unknown_are_refused(index: Index) -> None:
    with pytest.raises(MatchError, match="SERIES-level"):
        search(index.runtime.db, Query(level=Level.STUDY, keys={"Modality": "CT"}))
    with pytest.raises(MatchError, match="not supported"):
        search(index.runtime.db, Query(level=Level.STUDY, keys={"InstitutionName": "X"}))
    with pytest.raises(MatchError, match="integer"):
        search(index.runtime.db, Query(level=Level.SERIES, keys={"SeriesNumber": "one"}))
    with pytest.raises(MatchError, match="negative"):
        search(index.runtime.db, Query(level=Level.SERIES, limit=-1))
