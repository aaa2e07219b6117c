"""The identity officer's HTTP API and the patient record by master, in process over SQLite and PostgreSQL.

Identities come in as the archive stores studies from two sites; the officer works the review queue, links,
unlinks, merges and unmerges over HTTP; bad input gets a 4xx with its reason and leaves every link as it was.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from archipel.platform import care
from archipel.platform.audit import AuditEvent
from archipel.platform.identity import feed, store
from archipel.platform.identity.models import LocalIdentity
from archipel.platform.identity.service import add_issuer
from archipel.platform.runtime import Runtime
from archipel.radiology.archive import Archive
from tests.auth_helpers import Account, Clock, bearer, client, login, make_account
from tests.test_identity_archive import dicom


@pytest.fixture
def http(runtime: Runtime) -> Iterator[TestClient]:
    store.forget_indexes()
    feed.forget_feeds()
    with client() as c:
        yield c
    store.forget_indexes()
    feed.forget_feeds()


class Users:
    """Bearer headers of the test's accounts, logged in on the test clock."""

    ROLES = {"officer": ("identity-officer", ""), "rad": ("radiologist", "SITE-A"), "root": ("admin", "")}

    def __init__(self, runtime: Runtime, http: TestClient, clock: Clock) -> None:
        self.runtime, self.http, self.clock = runtime, http, clock
        self.accounts: dict[str, Account] = {}
        self.tokens: dict[str, str] = {}

    def __call__(self, who: str) -> dict[str, str]:
        if who not in self.tokens:
            self.tokens[who] = self.login(who)
        return bearer(self.tokens[who])

    def login(self, who: str) -> str:
        if who not in self.accounts:  # accounts are made on first use: password hashing is slow on purpose
            role, site = self.ROLES[who]
            self.accounts[who] = make_account(self.runtime, who, role=role, site=site)
        self.clock.advance(seconds=30)  # a fresh TOTP step for every login
        r = login(self.http, self.accounts[who], self.clock.now)
        assert r.status_code == 200, r.text
        return str(r.json()["access_token"])


@pytest.fixture
def users(runtime: Runtime, http: TestClient, clock: Clock) -> Users:
    return Users(runtime, http, clock)


@pytest.fixture
def two_sites(runtime: Runtime, http: TestClient) -> dict[str, int]:
    """One person with a study at SITE-A and one at SITE-B (one master), and a twin at SITE-B under review;
    returns the masters by local identity."""
    archive = Archive(runtime.db, runtime.blobs)
    archive.store(dicom("SITE-A", "A100", "KERVADOUEC^Aurelien", study="ct-a"))
    archive.store(dicom("SITE-B", "B900", "KERVADOUEC^Aurelien", study="mr-b"))
    archive.store(dicom("SITE-B", "B901", "KERVADOUEC^Maxime", study="ct-b"))
    return {key: master for key, master, _status in links(runtime)}


def links(runtime: Runtime) -> list[tuple[str, int, str]]:
    """Every local identity's current link, as ``("ISSUER/ID", master, status)``."""
    with runtime.db.sessions() as s:
        rows = s.execute(
            select(
                LocalIdentity.issuer, LocalIdentity.local_id, LocalIdentity.master_id, LocalIdentity.status
            ).order_by(LocalIdentity.issuer, LocalIdentity.local_id)
        ).all()
    return [(f"{r.issuer}/{r.local_id}", r.master_id, r.status) for r in rows]


def studies_of(http: TestClient, headers: dict[str, str], master: int) -> list[str]:
    r = http.get(f"/api/patients/{master}/studies", headers=headers)
    assert r.status_code == 200, r.text
    return sorted(f"{s['issuer']}/{s['patient_id']}" for s in r.json()["studies"])


def post(http: TestClient, headers: dict[str, str], path: str, body: dict[str, Any]) -> Any:
    return http.post(f"/api/identity{path}", headers=headers, json=body)


def test_only_identity_officers_and_admins_reach_the_identity_api(
    http: TestClient, users: Users, two_sites: dict[str, int]
) -> None:
    assert http.get("/api/identity/review").status_code == 401
    denied = http.get("/api/identity/review", headers=users("rad"))
    assert denied.status_code == 403 and "identity" in denied.json()["detail"]
    assert http.get("/api/identity/review", headers=users("officer")).status_code == 200
    assert http.get("/api/identity/review", headers=users("root")).status_code == 200
    m = two_sites["SITE-A/A100"]
    assert http.get(f"/api/identity/masters/{m}", headers=users("rad")).status_code == 403
    # Told that they may not merge at all, whatever the age of their login.
    body = {"source_master_id": two_sites["SITE-B/B901"], "target_master_id": m, "reason": "r"}
    assert post(http, users("rad"), "/merges", body).status_code == 403


def test_the_master_shows_its_identities_and_history_and_queries_see_every_linked_study(
    runtime: Runtime, http: TestClient, users: Users, two_sites: dict[str, int]
) -> None:
    m = two_sites["SITE-A/A100"]
    assert two_sites["SITE-B/B900"] == m
    record = http.get(f"/api/identity/masters/{m}", headers=users("officer")).json()
    assert [(i["issuer"], i["local_id"], i["status"]) for i in record["identities"]] == [
        ("SITE-A", "A100", "new"),
        ("SITE-B", "B900", "linked"),
    ]
    assert [(h["local_id"], h["action"]) for h in record["history"]] == [
        ("A100", "auto-new"),
        ("B900", "auto-linked"),
    ]
    # The radiologist of SITE-A sees the record, and its studies at the sites they may see.
    patient = http.get(f"/api/patients/{m}", headers=users("rad")).json()
    assert [(i["issuer"], i["local_id"]) for i in patient["identities"]] == [
        ("SITE-A", "A100"),
        ("SITE-B", "B900"),
    ]
    assert studies_of(http, users("rad"), m) == ["SITE-A/A100"]
    with runtime.db.write() as s:
        care.record(s, "rad", m, care.TREATING, recorded_by="root")
    assert studies_of(http, users("rad"), m) == ["SITE-A/A100", "SITE-B/B900"]
    assert http.get("/api/patients/999999", headers=users("rad")).status_code in (403, 404)


def test_the_officer_resolves_the_review_queue_with_reasons(
    runtime: Runtime, http: TestClient, users: Users, two_sites: dict[str, int]
) -> None:
    queue = http.get("/api/identity/review", headers=users("officer")).json()
    assert [(q["issuer"], q["local_id"], q["candidate_master_id"]) for q in queue] == [
        ("SITE-B", "B901", two_sites["SITE-A/A100"])
    ]
    item = queue[0]["id"]
    assert post(http, users("officer"), f"/review/{item}/different", {}).status_code == 422  # no reason
    r = post(http, users("officer"), f"/review/{item}/different", {"reason": "twins: two birth certificates"})
    assert r.status_code == 200, r.text
    assert http.get("/api/identity/review", headers=users("officer")).json() == []
    again = post(http, users("officer"), f"/review/{item}/accept", {"reason": "changed my mind"})
    assert again.status_code == 409 and "already resolved" in again.json()["detail"]
    assert post(http, users("officer"), "/review/424242/accept", {"reason": "x"}).status_code == 404
    ident = http.get("/api/identity/local-identities/SITE-B/B901", headers=users("officer")).json()
    assert ident["identity"]["status"] == "manual" and ident["history"][-1]["action"] == "no-link"
    assert ident["history"][-1]["reason"] == "twins: two birth certificates"


def test_link_and_unlink_by_hand_are_audited_with_their_reason(
    runtime: Runtime, http: TestClient, users: Users, two_sites: dict[str, int]
) -> None:
    m = two_sites["SITE-A/A100"]
    r = post(
        http, users("officer"), "/unlinks", {"issuer": "SITE-B", "local_id": "B900", "reason": "other person"}
    )
    assert r.status_code == 200, r.text
    own = r.json()["master_id"]
    assert own != m
    r = post(
        http,
        users("officer"),
        "/links",
        {"issuer": "SITE-B", "local_id": "B900", "master_id": m, "reason": "x"},
    )
    assert r.status_code == 409 and "declared a different person" in r.json()["detail"]
    with runtime.db.sessions() as s:
        actions = list(
            s.execute(
                select(AuditEvent.action, AuditEvent.purpose, AuditEvent.detail)
                .where(AuditEvent.actor == "officer", AuditEvent.event_type == "110110")
                .order_by(AuditEvent.id)
            ).all()
        )
    assert ("identity-unlink", "identity-management", "other person") in actions
    assert all(purpose == "identity-management" for _a, purpose, _d in actions)


def test_merge_and_unmerge_need_a_recent_login_and_restore_the_records_exactly(
    runtime: Runtime, http: TestClient, users: Users, clock: Clock, two_sites: dict[str, int]
) -> None:
    m, twin = two_sites["SITE-A/A100"], two_sites["SITE-B/B901"]
    with runtime.db.write() as s:
        care.record(s, "rad", m, care.TREATING, recorded_by="root")
        care.record(s, "rad", twin, care.TREATING, recorded_by="root")
    before = links(runtime)
    studies_before = (studies_of(http, users("rad"), m), studies_of(http, users("rad"), twin))
    officer = users("officer")
    clock.advance(minutes=6)
    body = {"source_master_id": twin, "target_master_id": m, "reason": "same person after all"}
    stale = post(http, officer, "/merges", body)
    assert (
        stale.status_code == 401
        and 'error="insufficient_user_authentication"' in stale.headers["www-authenticate"]
    )
    assert links(runtime) == before
    fresh = users.login("officer")
    merged = post(http, bearer(fresh), "/merges", body)
    assert merged.status_code == 201, merged.text
    assert studies_of(http, users("rad"), m) == ["SITE-A/A100", "SITE-B/B900", "SITE-B/B901"]
    # The merged master answers for the one it was merged into.
    assert http.get(f"/api/patients/{twin}/studies", headers=users("rad")).json()["master_id"] == m
    r = post(
        http, bearer(fresh), f"/merges/{merged.json()['merge_id']}/unmerge", {"reason": "documents differ"}
    )
    assert r.status_code == 200, r.text
    assert links(runtime) == before
    assert (studies_of(http, users("rad"), m), studies_of(http, users("rad"), twin)) == studies_before
    again = post(http, bearer(fresh), f"/merges/{merged.json()['merge_id']}/unmerge", {"reason": "again"})
    assert again.status_code == 409 and "already undone" in again.json()["detail"]


BAD_IDENTITIES = [
    ({"birth_date": "2023-02-30"}, "does not exist"),
    ({"birth_date": "2999-01-01"}, "out of range"),
    ({"birth_date": "30/02/2023"}, "neither YYYY-MM-DD nor YYYYMMDD"),
    ({"issuer": "SITE-UNKNOWN"}, "unknown issuer SITE-UNKNOWN"),
    ({"sex": "Z"}, "sex"),
    ({"ins": "184072923212300"}, "control key"),
    ({"ins_status": "QUAL"}, "requires an INS"),
    ({"birth_name": "", "given_names": ""}, "at least a name or an INS"),
    ({"local_id": " "}, "local_id is required"),
    ({"birth_name": "X" * 201}, "longer than 200"),
    ({"given_names": "Jean\x00"}, "control characters"),
]


def test_a_bad_identity_is_refused_with_its_reason_and_no_link_changes(
    runtime: Runtime, http: TestClient, users: Users, two_sites: dict[str, int]
) -> None:
    before = links(runtime)
    for change, reason in BAD_IDENTITIES:
        body = {
            "issuer": "SITE-A",
            "local_id": "A100",
            "birth_name": "DUPONT",
            "given_names": "Marie",
            **change,
        }
        r = post(http, users("officer"), "/local-identities", body)
        assert (r.status_code, reason in r.json()["detail"]) == (422, True), (change, r.text)
        assert links(runtime) == before, change


BAD_ACTIONS = [
    (
        "/links",
        {"issuer": "SITE-A", "local_id": "NOPE", "master_id": 1, "reason": "r"},
        404,
        "no local identity",
    ),
    (
        "/links",
        {"issuer": "SITE-A", "local_id": "A100", "master_id": 999999, "reason": "r"},
        404,
        "no master",
    ),
    (
        "/links",
        {"issuer": "SITE-B", "local_id": "B900", "master_id": "A100", "reason": "r"},
        409,
        "already on",
    ),
    ("/links", {"issuer": "SITE-A", "local_id": "A100", "master_id": "A100"}, 422, ""),
    ("/links", {"issuer": "SITE-A", "local_id": "A100", "master_id": "B901", "reason": "  "}, 422, "reason"),
    ("/unlinks", {"issuer": "SITE-B", "local_id": "B901", "reason": "r"}, 409, "nothing to unlink"),
    ("/unlinks", {"issuer": "SITE-A", "local_id": "A100", "reason": "r", "force": True}, 422, ""),
    ("/merges", {"source_master_id": "A100", "target_master_id": "A100", "reason": "r"}, 422, "into itself"),
    ("/merges", {"source_master_id": "B901", "target_master_id": 999999, "reason": "r"}, 404, "no master"),
    ("/merges", {"source_master_id": "B901", "target_master_id": "A100", "reason": ""}, 422, "reason"),
    ("/merges/999999/unmerge", {"reason": "r"}, 404, "no merge"),
]


def test_an_impossible_action_is_refused_with_its_reason_and_no_link_changes(
    runtime: Runtime, http: TestClient, users: Users, two_sites: dict[str, int]
) -> None:
    masters = {"A100": two_sites["SITE-A/A100"], "B901": two_sites["SITE-B/B901"]}
    before = links(runtime)
    for path, sent, code, reason in BAD_ACTIONS:
        body = {k: masters.get(v, v) if k.endswith("master_id") else v for k, v in sent.items()}  # type: ignore[call-overload]
        r = post(http, users("officer"), path, body)
        assert (r.status_code, reason in str(r.json()["detail"])) == (code, True), (path, sent, r.text)
        assert links(runtime) == before, (path, sent)


def test_an_officer_registers_identities_that_link_by_the_mpi_rules(
    runtime: Runtime, http: TestClient, users: Users, two_sites: dict[str, int]
) -> None:
    with runtime.db.write() as s:
        add_issuer(s, "SITE-C")
    person = {"given_names": "Anne-Sophie", "birth_date": "1970-01-31", "sex": "F", "phone": "0611223344"}
    first = post(
        http,
        users("officer"),
        "/local-identities",
        {"issuer": "SITE-C", "local_id": "C7", "birth_name": "Le Goff", **person},
    )
    assert first.status_code == 201, first.text
    assert first.json()["status"] == "new"
    second = post(
        http,
        users("officer"),
        "/local-identities",
        {"issuer": "SITE-A", "local_id": "A777", "birth_name": "LE GOFF", **person},
    )
    assert second.status_code == 201, second.text
    assert (second.json()["status"], second.json()["master_id"]) == ("linked", first.json()["master_id"])
