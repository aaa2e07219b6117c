"""The archive feeds the MPI: every stored object creates or updates its patient's local identity.

In-process tests store through :class:`Archive` on SQLite and PostgreSQL; the end-to-end ones send real DICOM
(dcmtk ``storescu``) and STOW-RS to ``archipel serve`` and query by master patient over HTTP.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydicom.dataset import Dataset
from sqlalchemy import func, select

from archipel.platform.authn import Principal
from archipel.platform.db import Database
from archipel.platform.identity import feed, review, store
from archipel.platform.identity.ins import ins_key
from archipel.platform.identity.models import MANUAL, IdentityIssuer, LinkDecision, LocalIdentity
from archipel.platform.identity.service import LocalIdentityInput, locals_of, master_of, register
from archipel.platform.runtime import Runtime
from archipel.radiology.archive import Archive, DuplicateConflict
from archipel.radiology.samples import SyntheticPatient, ct_series, to_bytes
from tests.dicomweb_messages import stow_body
from tests.dimse_peers import dcmtk
from tests.support import ArchipelServer

OFFICER = Principal(subject="officer1", role="identity-officer")
INS_NIR = "1.2.250.1.213.1.4.8"
#: An invented INS (a NIR-shaped number with a valid control key).
INS = "1840729232123" + ins_key("1840729232123")


def dicom(
    issuer: str,
    patient_id: str,
    name: str,
    birth_date: str = "19840719",
    sex: str = "M",
    *,
    study: str,
    **attributes: Any,
) -> bytes:
    """One small CT object of a new study ``study`` for the given patient, with extra Patient attributes."""
    ds = ct_series(
        SyntheticPatient(patient_id, name, birth_date, sex, issuer),
        1,
        rows=8,
        cols=8,
        key=f"{issuer}/{study}",
    )[0]
    for keyword, value in attributes.items():
        setattr(ds, keyword, value)
    return to_bytes(ds)


def ins_sequence(ins: str, oid: str = INS_NIR) -> list[Dataset]:
    """An Other Patient IDs Sequence carrying ``ins`` under the INS assigning authority ``oid``."""
    qualifier = Dataset()
    qualifier.UniversalEntityID = oid
    qualifier.UniversalEntityIDType = "ISO"
    item = Dataset()
    item.PatientID = ins
    item.TypeOfPatientID = "TEXT"
    item.IssuerOfPatientIDQualifiersSequence = [qualifier]
    return [item]


@pytest.fixture
def db(runtime: Runtime) -> Iterator[Database]:
    """The test index, with fresh in-process MPI state."""
    store.forget_indexes()
    feed.forget_feeds()
    yield runtime.db
    store.forget_indexes()
    feed.forget_feeds()


def identity(db: Database, issuer: str, local_id: str) -> LocalIdentity:
    with db.sessions() as s:
        row = s.execute(
            select(LocalIdentity).where(LocalIdentity.issuer == issuer, LocalIdentity.local_id == local_id)
        ).scalar_one()
        s.expunge(row)
        return row


def decisions(db: Database) -> int:
    with db.sessions() as s:
        return int(s.execute(select(func.count()).select_from(LinkDecision)).scalar_one())


def test_studies_of_one_person_from_two_sites_link_to_one_master(archive: Archive, db: Database) -> None:
    archive.store(dicom("SITE-A", "A100", "KERVADOUEC^Aurelien", study="s1"))
    archive.store(dicom("SITE-B", "B900", "KERVADOUEC^Aurelien", study="s2"))
    a, b = identity(db, "SITE-A", "A100"), identity(db, "SITE-B", "B900")
    assert (a.status, b.status) == ("new", "linked")
    assert a.master_id == b.master_id
    assert locals_of(db, a.master_id) == [("SITE-A", "A100"), ("SITE-B", "B900")]


def test_twins_from_two_sites_stay_apart_and_go_to_review(archive: Archive, db: Database) -> None:
    archive.store(dicom("SITE-A", "A100", "KERVADOUEC^Aurelien", study="s1"))
    archive.store(dicom("SITE-B", "B900", "KERVADOUEC^Maxime", study="s2"))
    a, b = identity(db, "SITE-A", "A100"), identity(db, "SITE-B", "B900")
    assert a.master_id != b.master_id
    assert [(e.issuer, e.local_id, e.candidate_master_id) for e in review.review_queue(db)] == [
        ("SITE-B", "B900", a.master_id)
    ]


def test_a_site_is_registered_as_issuer_the_first_time_it_sends(archive: Archive, db: Database) -> None:
    with db.sessions() as s:
        assert s.get(IdentityIssuer, "SITE-NEW") is None
    archive.store(dicom("SITE-NEW", "N1", "LEGOFF^Anne", "19700101", "F", study="s1"))
    with db.sessions() as s:
        assert s.get(IdentityIssuer, "SITE-NEW") is not None
    assert master_of(db, "SITE-NEW", "N1") is not None


def test_the_identity_carries_birth_name_address_phone_and_a_provisional_ins(
    archive: Archive, db: Database
) -> None:
    archive.store(
        dicom(
            "SITE-A",
            "A200",
            "MARTIN^Claire^Anne",
            "19610305",
            "F",
            study="s1",
            PatientBirthName="LE BRIS^Claire",
            PatientAddress="12 rue des Lilas 29200 Brest",
            PatientTelephoneNumbers=["0298000000", "0612000000"],
            OtherPatientIDsSequence=ins_sequence(INS),
        )
    )
    row = identity(db, "SITE-A", "A200")
    assert (row.birth_name, row.used_name, row.given_names) == ("LE BRIS", "MARTIN", "Claire Anne")
    assert (row.birth_date, row.sex) == ("19610305", "F")
    assert (row.address, row.postcode, row.city, row.phone) == (
        "12 rue des Lilas",
        "29200",
        "Brest",
        "0298000000",
    )
    assert (row.ins, row.ins_status) == (INS, "PROV")


def test_an_id_under_another_authority_is_not_taken_for_an_ins(archive: Archive, db: Database) -> None:
    archive.store(
        dicom(
            "SITE-A", "A201", "MARTIN^Paul", study="s1", OtherPatientIDsSequence=ins_sequence(INS, "1.2.3.4")
        )
    )
    assert identity(db, "SITE-A", "A201").ins == ""


def test_more_objects_with_the_same_demographics_write_nothing_to_the_mpi(
    archive: Archive, db: Database
) -> None:
    archive.store(dicom("SITE-A", "A100", "KERVADOUEC^Aurelien", study="s1"))
    before, gen = decisions(db), identity(db, "SITE-A", "A100").gen
    for k in range(3):
        archive.store(dicom("SITE-A", "A100", "KERVADOUEC^Aurelien", study=f"more{k}"))
    feed.forget_feeds()  # a restarted process compares with the database instead
    archive.store(dicom("SITE-A", "A100", "KERVADOUEC^Aurelien", study="after-restart"))
    assert decisions(db) == before
    assert identity(db, "SITE-A", "A100").gen == gen


def test_an_object_with_new_demographics_updates_the_identity(archive: Archive, db: Database) -> None:
    archive.store(
        dicom("SITE-A", "A100", "KERVADOUEC^Aurelien", study="s1", PatientAddress="1 rue A 29200 Brest")
    )
    master = identity(db, "SITE-A", "A100").master_id
    archive.store(
        dicom(
            "SITE-A",
            "A100",
            "KERVADOUEC^Aurelien",
            study="s1-followup",
            PatientAddress="3 quai B 56100 Lorient",
            PatientTelephoneNumbers="0297000000",
        )
    )
    row = identity(db, "SITE-A", "A100")
    assert (row.address, row.postcode, row.city, row.phone) == ("3 quai B", "56100", "Lorient", "0297000000")
    assert row.master_id == master
    # What a later object leaves out keeps its value.
    archive.store(dicom("SITE-A", "A100", "KERVADOUEC^Aurelien", study="s2"))
    assert identity(db, "SITE-A", "A100").phone == "0297000000"


def test_a_refused_duplicate_does_not_change_the_identity(archive: Archive, db: Database) -> None:
    archive.store(dicom("SITE-A", "A100", "KERVADOUEC^Aurelien", study="s1"))
    before = decisions(db)
    # The same SOP Instance UID with other bytes: refused under keep-first, so the MPI learns nothing from it.
    with pytest.raises(DuplicateConflict):
        archive.store(dicom("SITE-A", "A100", "KERVADOUEC^Aurelien", "19840720", study="s1"))
    assert (identity(db, "SITE-A", "A100").birth_date, decisions(db)) == ("19840719", before)


def test_a_resent_object_with_new_demographics_replaces_them_under_the_version_policy(
    runtime: Runtime, db: Database
) -> None:
    archive = Archive(runtime.db, runtime.blobs, "version")
    archive.store(dicom("SITE-A", "A100", "KERVADOUEC^Aurelien", study="s1"))
    assert (
        archive.store(dicom("SITE-A", "A100", "KERVADOUEC^Aurelien", "19840720", study="s1")).status
        == "replaced"
    )
    assert identity(db, "SITE-A", "A100").birth_date == "19840720"


def test_a_corrected_identity_relinks_to_the_right_master(archive: Archive, db: Database) -> None:
    archive.store(dicom("SITE-A", "A100", "KERVADOUEC^Aurelien", study="s1"))
    archive.store(dicom("SITE-B", "B900", "DUPONT^Marie", "19900101", "F", study="s2"))
    assert identity(db, "SITE-B", "B900").master_id != identity(db, "SITE-A", "A100").master_id
    archive.store(dicom("SITE-B", "B900", "KERVADOUEC^Aurelien", study="s3"))
    assert identity(db, "SITE-B", "B900").master_id == identity(db, "SITE-A", "A100").master_id


def test_new_demographics_never_undo_an_officers_decision(archive: Archive, db: Database) -> None:
    archive.store(dicom("SITE-A", "A100", "KERVADOUEC^Aurelien", study="s1"))
    archive.store(dicom("SITE-B", "B900", "KERVADOUEC^Aurelien", study="s2"))
    own = review.unlink(db, OFFICER, "SITE-B", "B900", "two people: checked the documents")
    archive.store(
        dicom("SITE-B", "B900", "KERVADOUEC^Aurelien", study="s3", PatientTelephoneNumbers="0600000000")
    )
    row = identity(db, "SITE-B", "B900")
    assert (row.master_id, row.status, row.decided_by, row.phone) == (own, MANUAL, "officer1", "0600000000")


def test_dicom_never_lowers_the_status_of_a_qualified_ins(archive: Archive, db: Database) -> None:
    archive.store(dicom("SITE-A", "A100", "KERVADOUEC^Aurelien", study="s1"))
    register(
        db,
        LocalIdentityInput(
            "SITE-A", "A100", birth_name="KERVADOUEC", given_names="Aurelien", ins=INS, ins_status="QUAL"
        ),
    )
    archive.store(
        dicom("SITE-A", "A100", "KERVADOUEC^Aurelien", study="s2", OtherPatientIDsSequence=ins_sequence(INS))
    )
    assert (identity(db, "SITE-A", "A100").ins, identity(db, "SITE-A", "A100").ins_status) == (INS, "QUAL")


def test_an_object_with_an_impossible_birth_date_is_stored_and_linked_without_it(
    archive: Archive, db: Database
) -> None:
    bad_ins = INS[:-2] + ("00" if INS[-2:] != "00" else "01")
    result = archive.store(
        dicom(
            "SITE-A",
            "A300",
            "PETIT^Luc",
            "20230230",
            study="s1",
            OtherPatientIDsSequence=ins_sequence(bad_ins),
        )
    )
    assert result.status == "stored"
    row = identity(db, "SITE-A", "A300")
    assert (row.birth_name, row.birth_date, row.ins) == ("PETIT", "", "")


def test_an_object_without_a_name_still_gets_a_master_of_its_own(archive: Archive, db: Database) -> None:
    archive.store(dicom("SITE-A", "A400", "", study="s1"))
    row = identity(db, "SITE-A", "A400")
    assert row.status == "new"
    assert locals_of(db, row.master_id) == [("SITE-A", "A400")]


def test_an_object_without_patient_id_is_stored_but_cannot_be_linked(archive: Archive, db: Database) -> None:
    assert archive.store(dicom("SITE-A", "", "NOID^Someone", study="s1")).status == "stored"
    with db.sessions() as s:
        assert s.execute(select(func.count()).select_from(LocalIdentity)).scalar_one() == 0


def test_the_startup_sweep_registers_patients_stored_without_identity(runtime: Runtime, db: Database) -> None:
    # As an archive left by a crash between the index commit and the MPI (or by a version before the MPI).
    unlinked = Archive(runtime.db, runtime.blobs, link_identities=False)
    unlinked.store(
        dicom("SITE-A", "A100", "KERVADOUEC^Aurelien", study="s1", OtherPatientIDsSequence=ins_sequence(INS))
    )
    unlinked.store(dicom("SITE-B", "B900", "KERVADOUEC^Aurelien", study="s2"))
    unlinked.store(dicom("SITE-B", "B901", "LEGOFF^Anne", "19700101", "F", study="s3"))
    assert master_of(db, "SITE-A", "A100") is None

    Archive(runtime.db, runtime.blobs).sweep_orphans()

    a, b, c = (identity(db, *key) for key in (("SITE-A", "A100"), ("SITE-B", "B900"), ("SITE-B", "B901")))
    assert a.master_id == b.master_id != c.master_id
    assert (a.ins, a.ins_status) == (INS, "PROV")
    before = decisions(db)
    Archive(runtime.db, runtime.blobs).sweep_orphans()  # a second start-up has nothing left to do
    assert decisions(db) == before


@pytest.fixture(scope="module")
def two_site_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ArchipelServer]:
    """``archipel serve`` with a modality of SITE-A, a radiologist of SITE-B (who sends by STOW-RS) and an
    identity officer."""
    srv = ArchipelServer(tmp_path_factory.mktemp("identity-e2e") / "data")
    srv.data.mkdir(parents=True)
    srv.add_node("MODALITY_A", site="SITE-A")
    srv.add_user("radb", "radiologist", "SITE-B")
    srv.add_user("officer", "identity-officer")
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


@pytest.mark.e2e
def test_c_store_from_one_site_and_stow_from_another_link_one_person_to_one_master(
    two_site_server: ArchipelServer, tmp_path: Path
) -> None:
    srv = two_site_server
    # No Issuer of Patient ID in either object: the issuer is the sender's site (node or account).
    at_a = tmp_path / "a.dcm"
    at_a.write_bytes(
        dicom("", "PA-17", "KERVADOUEC^Aurelien", study="e2e-a", PatientTelephoneNumbers="0612345678")
    )
    sent = dcmtk(
        "storescu", "-aet", "MODALITY_A", "-aec", srv.aet, "127.0.0.1", str(srv.dicom_port), str(at_a)
    )
    assert sent.returncode == 0, sent.stderr
    boundary = f"e2e-{uuid.uuid4().hex}"
    stow = httpx.post(
        srv.url + "/dicom-web/studies",
        content=stow_body([dicom("", "B-0042", "KERVADOUEC^Aurelien", study="e2e-b")], boundary),
        headers={
            **srv.headers("radb"),
            "Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}',
        },
        timeout=60,
    )
    assert stow.status_code == 200, stow.text

    def identity_of(issuer: str, local_id: str) -> dict[str, Any]:
        r = httpx.get(
            f"{srv.url}/api/identity/local-identities/{issuer}/{local_id}", headers=srv.headers("officer")
        )
        assert r.status_code == 200, r.text
        return dict(r.json()["identity"])

    a, b = identity_of("SITE-A", "PA-17"), identity_of("SITE-B", "B-0042")
    assert (a["status"], b["status"], a["phone"]) == ("new", "linked", "0612345678")
    assert a["master_id"] == b["master_id"]
    # The SITE-B radiologist sees the record by master, with the study of their own site.
    r = httpx.get(f"{srv.url}/api/patients/{a['master_id']}/studies", headers=srv.headers("radb"))
    assert r.status_code == 200, r.text
    assert [(st["issuer"], st["patient_id"]) for st in r.json()["studies"]] == [("SITE-B", "B-0042")]
