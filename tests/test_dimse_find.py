"""C-FIND SCP: dcmtk's findscu against a running server (study root and patient root, every level, site
visibility), and the handler itself for cancellation and bad identifiers."""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pydicom
import pytest
from pydicom.dataset import Dataset
from sqlalchemy import create_engine, func, select, text

from archipel.platform import audit
from archipel.platform.runtime import Runtime
from archipel.radiology.archive import Archive
from archipel.radiology.dimse.find import (
    PATIENT_ROOT_FIND,
    STUDY_ROOT_FIND,
    handle_find,
)
from archipel.radiology.dimse.nodes import NodeRegistry
from archipel.radiology.models import DicomNode
from archipel.radiology.samples import SyntheticPatient, ct_series, mammo_study, mr_series, to_bytes
from tests.support import ArchipelServer


@dataclass
class Stored:
    """The server and what was stored in it for this module."""

    server: ArchipelServer
    alpha: SyntheticPatient
    bravo: SyntheticPatient
    ct_mr_study: str
    mg_study: str
    bravo_study: str


@pytest.fixture(scope="module")
def stored(server: ArchipelServer, tmp_path_factory: pytest.TempPathFactory) -> Stored:
    """Alpha (SITE-A): CT 3 + MR 2 in one study and a mammogram; Bravo (SITE-B): CT 2. Sent with storescu.

    A node of SITE-B (FINDB) is registered too."""
    tag = uuid.uuid4().hex[:6].upper()
    alpha = SyntheticPatient(f"FA{tag}", "FINDTEST^Alpha", "19700101", "F", "SITE-A")
    bravo = SyntheticPatient(f"FB{tag}", "FINDTEST^Bravo", "19800101", "M", "SITE-B")
    ct = ct_series(alpha, 3, study_date="20260110", accession="FACC1", rows=8, cols=8)
    mr = mr_series(alpha, 2, study_uid=ct[0].StudyInstanceUID, study_date="20260110", accession="FACC1")
    mg = mammo_study(alpha, study_date="20260305", accession="FACC2")
    b = ct_series(bravo, 2, study_date="20260111", accession="FACC3", rows=8, cols=8)
    folder = tmp_path_factory.mktemp("find-data")
    for ds in [*ct, *mr, *mg, *b]:
        (folder / f"{ds.SOPInstanceUID}.dcm").write_bytes(to_bytes(ds))
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
    server.add_node("FINDB", site="SITE-B")
    return Stored(server, alpha, bravo, ct[0].StudyInstanceUID, mg[0].StudyInstanceUID, b[0].StudyInstanceUID)


@dataclass
class FindResult:
    """What findscu received: the pending identifiers and its log (which names the final status)."""

    responses: list[Dataset]
    log: str
    returncode: int


def findscu(
    srv: ArchipelServer, out: Path, keys: list[str], *, model: str = "-S", aet: str = "FINDSCU"
) -> FindResult:
    """Run dcmtk's findscu, extracting every response to a file, and read them back in order."""
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("rsp*.dcm"):
        old.unlink()
    args = ["findscu", "-v", model, "-aet", aet, "-aec", srv.aet, "-X", "-od", str(out), "-to", "60"]
    for key in keys:
        args += ["-k", key]
    done = subprocess.run(
        [*args, "127.0.0.1", str(srv.dicom_port)], capture_output=True, text=True, timeout=120
    )
    responses = [pydicom.dcmread(p) for p in sorted(out.glob("rsp*.dcm"))]
    return FindResult(responses, done.stdout + done.stderr, done.returncode)


def test_study_root_study_level_returns_requested_keys_and_counts(stored: Stored, tmp_path: Path) -> None:
    keys = [
        "QueryRetrieveLevel=STUDY",
        f"PatientID={stored.alpha.patient_id}",
        "StudyInstanceUID",
        "StudyDate",
        "PatientName",
        "IssuerOfPatientID",
        "ModalitiesInStudy",
        "NumberOfStudyRelatedSeries",
        "NumberOfStudyRelatedInstances",
        "InstitutionName",
    ]
    result = findscu(stored.server, tmp_path, keys)
    assert result.returncode == 0, result.log
    by_uid = {ds.StudyInstanceUID: ds for ds in result.responses}
    assert set(by_uid) == {stored.ct_mr_study, stored.mg_study}
    study = by_uid[stored.ct_mr_study]
    assert list(study.ModalitiesInStudy) == ["CT", "MR"]
    assert (study.NumberOfStudyRelatedSeries, study.NumberOfStudyRelatedInstances) == (2, 5)
    assert study.PatientName == "FINDTEST^Alpha" and study.IssuerOfPatientID == "SITE-A"
    assert study.QueryRetrieveLevel == "STUDY" and study.RetrieveAETitle == stored.server.aet
    assert "InstitutionName" in study and study.InstitutionName in ("", None)
    assert "StudyDescription" not in study


def test_wildcards_and_date_ranges_match(stored: Stored, tmp_path: Path) -> None:
    keys = [
        "QueryRetrieveLevel=STUDY",
        "PatientName=findtest^*",
        "StudyDate=20260101-20260131",
        "StudyInstanceUID",
    ]
    result = findscu(stored.server, tmp_path, keys)
    # FINDSCU is a node of SITE-A: Bravo's January study (SITE-B) stays hidden.
    assert [ds.StudyInstanceUID for ds in result.responses] == [stored.ct_mr_study]


def test_series_and_image_levels(stored: Stored, tmp_path: Path) -> None:
    series = findscu(
        stored.server,
        tmp_path / "series",
        [
            "QueryRetrieveLevel=SERIES",
            f"StudyInstanceUID={stored.ct_mr_study}",
            "SeriesInstanceUID",
            "Modality",
            "NumberOfSeriesRelatedInstances",
        ],
    )
    # Both series are number 1 and arrived in directory order: compare as a set.
    found = {ds.Modality: ds for ds in series.responses}
    assert {m: ds.NumberOfSeriesRelatedInstances for m, ds in found.items()} == {"CT": 3, "MR": 2}
    images = findscu(
        stored.server,
        tmp_path / "images",
        [
            "QueryRetrieveLevel=IMAGE",
            f"StudyInstanceUID={stored.ct_mr_study}",
            f"SeriesInstanceUID={found['MR'].SeriesInstanceUID}",
            "SOPInstanceUID",
            "InstanceNumber",
            "SOPClassUID",
        ],
    )
    assert [ds.InstanceNumber for ds in images.responses] == [1, 2]
    assert {ds.SOPClassUID for ds in images.responses} == {"1.2.840.10008.5.1.4.1.1.4"}


def test_patient_root_patient_study_and_image_levels(stored: Stored, tmp_path: Path) -> None:
    pid = stored.alpha.patient_id
    patients = findscu(
        stored.server,
        tmp_path / "p",
        ["QueryRetrieveLevel=PATIENT", f"PatientID={pid}", "PatientName", "NumberOfPatientRelatedStudies"],
        model="-P",
    )
    [patient] = patients.responses
    assert patient.PatientName == "FINDTEST^Alpha" and patient.NumberOfPatientRelatedStudies == 2
    studies = findscu(
        stored.server,
        tmp_path / "s",
        ["QueryRetrieveLevel=STUDY", f"PatientID={pid}", "StudyInstanceUID", "AccessionNumber"],
        model="-P",
    )
    assert sorted(ds.AccessionNumber for ds in studies.responses) == ["FACC1", "FACC2"]
    images = findscu(
        stored.server,
        tmp_path / "i",
        [
            "QueryRetrieveLevel=IMAGE",
            f"PatientID={pid}",
            f"StudyInstanceUID={stored.mg_study}",
            "SOPInstanceUID",
        ],
        model="-P",
    )
    assert len(images.responses) == 4


def test_a_node_of_another_site_sees_only_its_site(stored: Stored, tmp_path: Path) -> None:
    alpha = findscu(
        stored.server,
        tmp_path / "a",
        ["QueryRetrieveLevel=STUDY", f"PatientID={stored.alpha.patient_id}", "StudyInstanceUID"],
        aet="FINDB",
    )
    assert alpha.returncode == 0, alpha.log
    assert alpha.responses == []
    # A universal query, and a patient-level count, only ever show SITE-B's data.
    every = findscu(
        stored.server,
        tmp_path / "all",
        ["QueryRetrieveLevel=STUDY", "StudyInstanceUID", "IssuerOfPatientID"],
        aet="FINDB",
    )
    assert {ds.IssuerOfPatientID for ds in every.responses} == {"SITE-B"}
    assert stored.bravo_study in {ds.StudyInstanceUID for ds in every.responses}
    patients = findscu(
        stored.server,
        tmp_path / "p",
        ["QueryRetrieveLevel=PATIENT", "PatientName=FINDTEST*", "NumberOfPatientRelatedInstances"],
        model="-P",
        aet="FINDB",
    )
    assert [(ds.PatientName, ds.NumberOfPatientRelatedInstances) for ds in patients.responses] == [
        ("FINDTEST^Bravo", 2)
    ]


@pytest.mark.parametrize(
    ("keys", "model"),
    [
        (["QueryRetrieveLevel=PATIENT", "PatientID"], "-S"),
        (["QueryRetrieveLevel=SOMETHING", "PatientID"], "-S"),
        (["QueryRetrieveLevel=STUDY", "StudyDate=20261301-20260101"], "-S"),
        (["QueryRetrieveLevel=STUDY", "StudyInstanceUID=not-a-uid"], "-S"),
    ],
)
def test_bad_identifiers_fail_with_a900(stored: Stored, tmp_path: Path, keys: list[str], model: str) -> None:
    result = findscu(stored.server, tmp_path, keys, model=model)
    assert result.responses == []
    assert "Final Find Response (Error: DataSetDoesNotMatchSOPClass)" in result.log, result.log


def test_each_c_find_is_audited_once_as_a_query(stored: Stored, tmp_path: Path) -> None:
    engine = create_engine(f"sqlite:///{stored.server.data / 'index.sqlite'}")

    def queries() -> int:
        with engine.connect() as c:
            return int(
                c.execute(
                    select(func.count())
                    .select_from(audit.AuditEvent)
                    .where(audit.AuditEvent.event_type == audit.QUERY, audit.AuditEvent.actor == "FINDSCU")
                ).scalar_one()
            )

    try:
        before = queries()
        findscu(stored.server, tmp_path, ["QueryRetrieveLevel=STUDY", "PatientID=NOBODY", "StudyInstanceUID"])
        assert queries() == before + 1
    finally:
        engine.dispose()


# --- the handler itself: cancellation and statuses, without a network peer ------------------------------


class _Assoc:
    def __init__(self) -> None:
        self.requestor = SimpleNamespace(ae_title="FINDUNIT", address="127.0.0.1", primitive=None)


class _Event:
    """Just what ``handle_find`` reads of a pynetdicom event; ``cancel_after`` responses it reports a C-CANCEL."""

    def __init__(self, identifier: Dataset, sop_class: str, cancel_after: int | None = None) -> None:
        self.assoc = _Assoc()
        self.identifier = identifier
        self.request = SimpleNamespace(AffectedSOPClassUID=sop_class)
        self.cancel_after = cancel_after
        self.seen = 0

    @property
    def is_cancelled(self) -> bool:
        return self.cancel_after is not None and self.seen >= self.cancel_after


@pytest.fixture
def unit(runtime: Runtime, archive: Archive) -> Iterator[tuple[Runtime, NodeRegistry]]:
    """A runtime with 6 CT instances of SITE-A and a registered unit-test node of SITE-A."""
    patient = SyntheticPatient("FU0001", "FINDUNIT^Test", "19700101", "F", "SITE-A")
    for ds in ct_series(patient, 6, rows=8, cols=8):
        archive.store(to_bytes(ds))
    with runtime.db.session() as s:
        s.add(DicomNode(ae_title="FINDUNIT", host="127.0.0.1", port=0, site="SITE-A"))
    yield runtime, NodeRegistry(runtime.db)


def _run(event: _Event, rt: Runtime, nodes: NodeRegistry) -> list[tuple[Any, Dataset | None]]:
    out = []
    for status, identifier in handle_find(event, rt, nodes):  # type: ignore[arg-type]
        out.append((status, identifier))
        event.seen += 1
    return out


def _identifier(**keys: str) -> Dataset:
    ds = Dataset()
    for k, v in keys.items():
        setattr(ds, k, v)
    return ds


def test_a_cancel_stops_the_matches_with_fe00(unit: tuple[Runtime, NodeRegistry]) -> None:
    rt, nodes = unit
    ident = _identifier(QueryRetrieveLevel="IMAGE", PatientID="FU0001", SOPInstanceUID="")
    out = _run(_Event(ident, STUDY_ROOT_FIND, cancel_after=2), rt, nodes)
    assert [s for s, _ in out] == [0xFF00, 0xFF00, 0xFE00]


def test_long_answers_stream_in_chunks_with_counts_and_order_kept(
    unit: tuple[Runtime, NodeRegistry], monkeypatch: pytest.MonkeyPatch
) -> None:
    rt, nodes = unit
    monkeypatch.setattr("archipel.radiology.dimse.find.BATCH", 4)
    ident = _identifier(QueryRetrieveLevel="IMAGE", PatientID="FU0001", InstanceNumber="")
    ident.NumberOfSeriesRelatedInstances = None
    out = _run(_Event(ident, STUDY_ROOT_FIND), rt, nodes)
    matches = [ds for status, ds in out if status == 0xFF00 and ds is not None]
    assert [ds.InstanceNumber for ds in matches] == [1, 2, 3, 4, 5, 6] and out[-1] == (0x0000, None)
    assert {ds.NumberOfSeriesRelatedInstances for ds in matches} == {6}


def test_unsupported_optional_keys_give_ff01_and_are_returned_empty(
    unit: tuple[Runtime, NodeRegistry],
) -> None:
    rt, nodes = unit
    ident = _identifier(QueryRetrieveLevel="STUDY", PatientID="FU0001", InstitutionName="SOMEWHERE")
    out = _run(_Event(ident, PATIENT_ROOT_FIND), rt, nodes)
    assert [s for s, _ in out] == [0xFF01, 0x0000]
    match = out[0][1]
    assert match is not None and match["InstitutionName"].is_empty


def test_an_unknown_information_model_fails_with_a900_and_a_comment(
    unit: tuple[Runtime, NodeRegistry],
) -> None:
    rt, nodes = unit
    [(status, identifier)] = _run(_Event(_identifier(QueryRetrieveLevel="STUDY"), "1.2.3.4"), rt, nodes)
    assert status.Status == 0xA900 and "information model" in status.ErrorComment and identifier is None


def test_the_index_failing_gives_c000(
    unit: tuple[Runtime, NodeRegistry], monkeypatch: pytest.MonkeyPatch
) -> None:
    rt, nodes = unit
    with rt.db.session() as s:
        s.execute(text("SELECT 1"))

    def broken(*_a: Any, **_k: Any) -> Any:
        raise RuntimeError("index unavailable")

    monkeypatch.setattr("archipel.radiology.dimse.find.iter_search", broken)
    [(status, _)] = _run(
        _Event(_identifier(QueryRetrieveLevel="STUDY", PatientID=""), STUDY_ROOT_FIND), rt, nodes
    )
    assert status.Status == 0xC000
