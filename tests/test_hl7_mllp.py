"""HL7 v2 over MLLP from a site's RIS: real framed messages over TCP against the listener.

ADT feeds the MPI, A08 updates, A40 asks for a merge (review, never blind), a duplicate is acknowledged without
being applied twice; malformed messages and unknown senders are refused, kept as dead letters, and replayed.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import hl7
import pytest
import sqlalchemy
from sqlalchemy import select

from archipel.platform.audit import AuditEvent
from archipel.platform.authn import Principal
from archipel.platform.identity import feed, review, store
from archipel.platform.identity.ins import ins_key
from archipel.platform.identity.models import LocalIdentity
from archipel.platform.runtime import Runtime
from archipel.radiology.hl7 import deadletter
from archipel.radiology.hl7.listener import Hl7Listener, frame, start_hl7_listener
from archipel.radiology.hl7.models import Hl7Message
from archipel.radiology.hl7.sources import add_source
from tests.support import PG_ADMIN_URL

FACILITY, SITE = "CH-ARMOR", "SITE-ARMOR"
INS_BODY = "2850322123456"
INS = INS_BODY + ins_key(INS_BODY)
INS_AUTHORITY = "ASIP-SANTE-INS-NIR&1.2.250.1.213.1.4.8&ISO"


def msh(kind: str, control: str, facility: str = FACILITY, charset: str = "8859/1") -> str:
    """An HL7 v2.5 header from the RIS of ``facility``."""
    structure = {
        "A01": "ADT_A01",
        "A04": "ADT_A01",
        "A08": "ADT_A01",
        "A31": "ADT_A05",
        "A40": "ADT_A39",
        "O01": "ORM_O01",
        "O23": "OMI_O23",
        "R01": "ORU_R01",
    }.get(kind[4:], "")
    return (
        f"MSH|^~\\&|XPLORE-RIS|{facility}|ARCHIPEL|REGION|20261202083000||{kind}^{structure}|{control}|P|2.5"
        f"|||AL|NE|FRA|{charset}|||2.1^IHE_FR^1.3.6.1.4.1.21367.2010.1.1^ISO"
    )


def pid(
    local: str,
    family: str = "Lefèvre",
    given: str = "Éloïse^Marie",
    *,
    ins: str = INS,
    status: str = "VALI",
    city: str = "Saint-Brieuc",
) -> str:
    """A PID as French RIS send it: site ID and INS in PID-3, birth name (L) and used name (D), PID-32 status."""
    ids = f"{local}^^^{FACILITY}&1.2.250.1.71.4.2.2.1234&ISO^PI"
    if ins:
        ids += f"~{ins}^^^{INS_AUTHORITY}^INS"
    fields = [
        "PID",
        "1",
        "",
        ids,
        "",
        f"{xpn(family, given, 'L')}~{xpn('Le Guen', given, 'D')}",
        "",
        "19850322",
        "F",
        "",
        "",
        f"12 rue des Goélands^^{city}^^22000^FRA^H",
        "",
        "^PRN^PH^^^^^^^^^0296000000",
    ]
    fields += [""] * (32 - len(fields)) + [status]
    return "|".join(fields)


def xpn(family: str, given: str, kind: str) -> str:
    """An XPN name: family^given^second given^^^^type (component 7, ``L`` birth name, ``D`` used name)."""
    parts = [family, *given.split("^")]
    return "^".join(parts + [""] * (6 - len(parts)) + [kind])


def message(*segments: str, charset: str = "latin-1") -> bytes:
    return "\r".join(segments).encode(charset) + b"\r"


def send(port: int, payload: bytes, *, raw: bool = False) -> hl7.Message:
    """Send one framed message (``raw``: ``payload`` is sent as it is) and parse the acknowledgement."""
    with socket.create_connection(("127.0.0.1", port), timeout=60) as sock:
        sock.sendall(payload if raw else frame(payload))
        answer = b""
        while not answer.endswith(b"\x1c\r"):
            chunk = sock.recv(65536)
            assert chunk, f"connection closed before the acknowledgement: {answer!r}"
            answer += chunk
    assert answer.startswith(b"\x0b")
    return hl7.parse(answer[1:-2].decode("latin-1"))


def msa(ack: hl7.Message) -> tuple[str, str, str]:
    seg = ack.segment("MSA")
    return str(seg(1)), str(seg(2)), ack.unescape(str(seg(3))) if len(seg) > 3 else ""


def identity(rt: Runtime, local: str, issuer: str = SITE) -> LocalIdentity | None:
    with rt.db.sessions() as s:
        return s.execute(
            select(LocalIdentity).where(LocalIdentity.issuer == issuer, LocalIdentity.local_id == local)
        ).scalar_one_or_none()


@pytest.fixture
def listener(runtime: Runtime) -> Iterator[Hl7Listener]:
    store.forget_indexes()
    feed.forget_feeds()
    add_source(runtime.db, FACILITY, SITE)
    running = start_hl7_listener(runtime, "127.0.0.1", 0)
    try:
        yield running
    finally:
        running.stop()
        store.forget_indexes()
        feed.forget_feeds()


def test_adt_a01_creates_the_identity_in_the_mpi_with_ins_and_accented_names(
    runtime: Runtime, listener: Hl7Listener
) -> None:
    ack = send(listener.port, message(msh("ADT^A01", "A01-0001"), "EVN|A01|20261202083000", pid("IPP7001")))
    assert msa(ack)[:2] == ("AA", "A01-0001")
    row = identity(runtime, "IPP7001")
    assert row is not None
    assert (row.birth_name, row.used_name, row.given_names) == ("Lefèvre", "Le Guen", "Éloïse Marie")
    assert (row.birth_date, row.sex, row.ins, row.ins_status) == ("19850322", "F", INS, "VALI")
    assert (row.city, row.postcode, row.phone) == ("Saint-Brieuc", "22000", "0296000000")


def test_utf8_message_is_read_by_its_msh18(runtime: Runtime, listener: Hl7Listener) -> None:
    body = message(
        msh("ADT^A04", "A04-0001", charset="UNICODE UTF-8"), pid("IPP7002", "Kerbrat-Hervé"), charset="utf-8"
    )
    assert msa(send(listener.port, body))[0] == "AA"
    row = identity(runtime, "IPP7002")
    assert row is not None and row.birth_name == "Kerbrat-Hervé"


def test_a08_updates_the_identity_and_a_resent_control_id_is_not_applied_twice(
    runtime: Runtime, listener: Hl7Listener
) -> None:
    send(listener.port, message(msh("ADT^A01", "C-1"), pid("IPP7003")))
    ack = send(listener.port, message(msh("ADT^A08", "C-2"), pid("IPP7003", city="Lannion")))
    assert msa(ack)[0] == "AA"
    row = identity(runtime, "IPP7003")
    assert row is not None and row.city == "Lannion"
    again = send(listener.port, message(msh("ADT^A08", "C-2"), pid("IPP7003", city="Paimpol")))
    assert msa(again)[0] == "AA" and "duplicate" in msa(again)[2]
    row = identity(runtime, "IPP7003")
    assert row is not None and row.city == "Lannion"
    with runtime.db.sessions() as s:
        kinds = [m.message_type for m in s.execute(select(Hl7Message).order_by(Hl7Message.id)).scalars()]
    assert kinds == ["ADT^A01", "ADT^A08"]


def test_a40_merge_goes_to_the_review_queue_and_merges_nothing(
    runtime: Runtime, listener: Hl7Listener
) -> None:
    send(
        listener.port,
        message(msh("ADT^A01", "M-1"), pid("IPP7010", "Tanguy", "Maëlys", ins="", status="PROV")),
    )
    send(
        listener.port,
        message(msh("ADT^A01", "M-2"), pid("IPP7011", "Tanguy", "Maelys", ins="", status="PROV")),
    )
    before = identity(runtime, "IPP7010"), identity(runtime, "IPP7011")
    assert before[0] is not None and before[1] is not None
    merge = message(
        msh("ADT^A40", "M-3"),
        "EVN|A40|20261202090000",
        pid("IPP7011", "Tanguy", "Maelys", ins="", status="PROV"),
        f"MRG|IPP7010^^^{FACILITY}^PI",
    )
    ack = send(listener.port, merge)
    assert msa(ack)[0] == "AA" and "review" in msa(ack)[2]
    prior, survivor = identity(runtime, "IPP7010"), identity(runtime, "IPP7011")
    assert prior is not None and survivor is not None
    assert prior.master_id == before[0].master_id != survivor.master_id
    queue = [e for e in review.review_queue(runtime.db) if e.local_id == "IPP7010"]
    assert len(queue) == 1
    assert queue[0].candidate_master_id == survivor.master_id and "A40" in queue[0].reason
    # The officer sees the MPI's own evidence for the pair: the same person, but for an accent.
    entry = queue[0]
    assert entry.score is not None and entry.score >= 8.0 and f"MPI score {entry.score:.1f}" in entry.reason
    assert {"family", "given", "birth_date", "sex"} <= set(entry.contributions)
    assert entry.contributions["birth_date"] > 0 and entry.contributions["family"] > 0


def test_a40_of_two_unlike_identities_shows_the_officer_their_disagreement(
    runtime: Runtime, listener: Hl7Listener
) -> None:
    prior = pid("IPP7012", "Tanguy", "Maëlys", ins="", status="PROV")
    other = pid("IPP7013", "Le Goff", "Erwan", ins="", status="PROV", city="Brest")
    other = other.replace("|19850322|F|", "|19610704|M|")
    send(listener.port, message(msh("ADT^A01", "M-4"), prior))
    send(listener.port, message(msh("ADT^A01", "M-5"), other))
    merge = message(msh("ADT^A40", "M-6"), other, f"MRG|IPP7012^^^{FACILITY}^PI")
    code, _control, text = msa(send(listener.port, merge))
    assert code == "AA" and "review" in text, text
    [entry] = [e for e in review.review_queue(runtime.db) if e.local_id == "IPP7012"]
    # The RIS asks; the evidence says the given names, birth date and sex disagree (the used name, phone and
    # address that pid() gives both agree).
    assert entry.score is not None and f"MPI score {entry.score:.1f}" in entry.reason
    c = entry.contributions
    assert c["birth_date"] < 0 and c["sex"] < 0 and c["given"] < 0
    assert c["phone"] > 0 and entry.score == pytest.approx(sum(c.values()), abs=0.1)


def test_a40_with_different_qualified_ins_is_refused(runtime: Runtime, listener: Hl7Listener) -> None:
    other = "1790622987654"
    send(listener.port, message(msh("ADT^A01", "Q-1"), pid("IPP7020", status="QUAL")))
    send(
        listener.port,
        message(
            msh("ADT^A01", "Q-2"), pid("IPP7021", "Morvan", "Yann", ins=other + ins_key(other), status="QUAL")
        ),
    )
    merge = message(
        msh("ADT^A40", "Q-3"),
        pid("IPP7021", "Morvan", "Yann", ins=other + ins_key(other), status="QUAL"),
        "MRG|IPP7020^^^^PI",
    )
    ack = send(listener.port, merge)
    assert msa(ack)[0] == "AE" and "qualified INS" in ack.unescape(str(ack.segment("ERR")(8)))
    [letter] = deadletter.list_dead_letters(runtime.db)
    assert letter.control_id == "Q-3" and "qualified INS" in letter.reason


def test_malformed_message_gets_an_ar_and_lands_in_the_dead_letters_with_its_bytes(
    runtime: Runtime, listener: Hl7Listener
) -> None:
    broken = b"MSH|^~\\&|XPLORE-RIS|" + FACILITY.encode() + b"|ARCHIPEL|REGION|20261202||ADT^A01|\rPID|1\r"
    ack = send(listener.port, broken)
    code, _control, reason = msa(ack)
    assert code == "AR" and "MSH-10" in reason
    assert "101" in str(ack.segment("ERR")(3))
    letters = deadletter.list_dead_letters(runtime.db)
    assert len(letters) == 1 and letters[0].ack_code == "AR" and letters[0].facility == FACILITY
    _letter, raw = deadletter.get_dead_letter(runtime.db, letters[0].id)
    assert raw == broken


def test_frame_without_start_block_and_text_without_msh_are_refused(
    runtime: Runtime, listener: Hl7Listener
) -> None:
    assert msa(send(listener.port, b"not hl7 at all\x1c\r", raw=True))[0] == "AR"
    assert msa(send(listener.port, b"PID|1||X\r"))[0] == "AR"
    assert len(deadletter.list_dead_letters(runtime.db)) == 2


def test_unknown_sender_is_refused_then_replayed_after_it_is_registered(
    runtime: Runtime, listener: Hl7Listener
) -> None:
    body = message(msh("ADT^A01", "S-1", facility="CLINIQUE-RANCE"), pid("IPP9001"))
    code, control, reason = msa(send(listener.port, body))
    assert (code, control) == ("AE", "S-1") and "unknown sender" in reason
    assert identity(runtime, "IPP9001", "SITE-RANCE") is None
    [letter] = deadletter.list_dead_letters(runtime.db)
    again = deadletter.replay(runtime, letter.id, "admin")
    assert again.code == "AE" and deadletter.list_dead_letters(runtime.db)[0].replays == 1
    add_source(runtime.db, "CLINIQUE-RANCE", "SITE-RANCE")
    assert deadletter.replay(runtime, letter.id, "admin").code == "AA"
    assert identity(runtime, "IPP9001", "SITE-RANCE") is not None
    assert deadletter.list_dead_letters(runtime.db) == []
    [done] = deadletter.list_dead_letters(runtime.db, state="resolved")
    assert done.resolved_by == "admin"
    with pytest.raises(deadletter.AlreadyResolved):
        deadletter.replay(runtime, letter.id, "admin")


def test_unsupported_type_and_missing_patient_id_get_an_ae(runtime: Runtime, listener: Hl7Listener) -> None:
    code, _c, reason = msa(send(listener.port, message(msh("SIU^S12", "U-1"), pid("IPP1"))))
    assert code == "AE" and "SIU^S12" in reason
    no_id = message(msh("ADT^A01", "U-2"), "PID|1||||Nom^Prenom")
    code, _c, reason = msa(send(listener.port, no_id))
    assert code == "AE" and "PID-3" in reason


def test_a40_with_the_same_qualified_ins_is_linked_by_the_mpi_hard_rule(
    runtime: Runtime, listener: Hl7Listener
) -> None:
    send(listener.port, message(msh("ADT^A01", "I-1"), pid("IPP7030", status="QUAL")))
    send(listener.port, message(msh("ADT^A01", "I-2"), pid("IPP7031", status="QUAL")))
    merge = message(msh("ADT^A40", "I-3"), pid("IPP7031", status="QUAL"), f"MRG|IPP7030^^^{FACILITY}^PI")
    code, _control, text = msa(send(listener.port, merge))
    assert code == "AA", text
    prior, survivor = identity(runtime, "IPP7030"), identity(runtime, "IPP7031")
    assert prior is not None and survivor is not None and prior.master_id == survivor.master_id
    assert [e for e in review.review_queue(runtime.db) if e.local_id in ("IPP7030", "IPP7031")] == []


def test_the_same_message_resent_on_two_connections_at_once_is_applied_once(
    runtime: Runtime, listener: Hl7Listener
) -> None:
    body = message(msh("ADT^A01", "D-1"), pid("IPP7040"))
    with ThreadPoolExecutor(2) as pool:
        answers = list(pool.map(lambda _: msa(send(listener.port, body)), range(2)))
    assert [a[0] for a in answers] == ["AA", "AA"]
    assert sum("duplicate" in a[2] for a in answers) == 1
    with runtime.db.sessions() as s:
        assert len(list(s.execute(select(Hl7Message.id)).scalars())) == 1


def test_an_ins_with_a_wrong_key_is_left_out_and_the_rest_of_the_identity_kept(
    runtime: Runtime, listener: Hl7Listener
) -> None:
    wrong = INS[:-2] + f"{(int(INS[-2:]) + 1) % 97:02d}"
    assert msa(send(listener.port, message(msh("ADT^A01", "K-1"), pid("IPP7050", ins=wrong))))[0] == "AA"
    row = identity(runtime, "IPP7050")
    assert row is not None and (row.birth_name, row.ins) == ("Lefèvre", "")


def test_a_message_over_the_size_limit_gets_an_ar(runtime: Runtime) -> None:
    add_source(runtime.db, FACILITY, SITE)
    small = start_hl7_listener(runtime, "127.0.0.1", 0, max_bytes=4096)
    try:
        assert msa(send(small.port, message(msh("ADT^A01", "L-1"), pid("IPP7060"))))[0] == "AA"
        big = message(msh("ADT^A01", "L-2"), pid("IPP7061"), "NTE|1||" + "x" * 10_000)
        code, _control, reason = msa(send(small.port, big))
        assert code == "AR" and "larger than 4096" in reason
        [whole] = deadletter.list_dead_letters(runtime.db)  # within the 64 KiB kept: kept whole, replayable
        assert not whole.truncated and deadletter.get_dead_letter(runtime.db, whole.id)[1] == big
        with socket.create_connection(("127.0.0.1", small.port), timeout=60) as sock:
            sock.sendall(frame(big) + frame(message(msh("ADT^A01", "L-3"), pid("IPP7062"))))
            answers = b""
            while answers.count(b"\x1c\r") < 2:
                chunk = sock.recv(65536)
                assert chunk, answers
                answers += chunk
        assert [a[1:4] for a in answers.split(b"\x1c\r")[:2]] == [b"MSH", b"MSH"]
        assert b"MSA|AR" in answers.split(b"\x1c\r")[0] and b"MSA|AA|L-3" in answers.split(b"\x1c\r")[1]
    finally:
        small.stop()


def test_a_message_over_the_size_limit_is_kept_truncated_and_replayed_only_once_corrected(
    runtime: Runtime,
) -> None:
    add_source(runtime.db, FACILITY, SITE)
    small = start_hl7_listener(runtime, "127.0.0.1", 0, max_bytes=4096)
    try:
        big = message(msh("ADT^A01", "T-1"), pid("IPP7090"), "NTE|1||" + "x" * 100_000, "NTE|2||fin")
        code, control, reason = msa(send(small.port, big))
        assert (code, control) == ("AR", "T-1") and "larger than 4096" in reason
    finally:
        small.stop()
    [letter] = deadletter.list_dead_letters(runtime.db)
    kept = deadletter.get_dead_letter(runtime.db, letter.id)[1]
    assert letter.truncated and letter.received_size == len(big) and len(kept) < 4096
    assert big.startswith(kept) and kept.endswith(b"\r") and b"PID|" in kept  # whole segments only
    assert (letter.facility, letter.control_id, letter.message_type) == (FACILITY, "T-1", "ADT^A01")
    with pytest.raises(deadletter.NeedsCorrection):
        deadletter.replay(runtime, letter.id, "admin")  # half a message is never applied
    assert identity(runtime, "IPP7090") is None
    officer = Principal("admin-hl7", "admin", kind="user")
    fixed = deadletter.readable(kept).replace("|T-1|", "|T-1-FIXED|")
    corrected = deadletter.correct(runtime.db, letter.id, fixed, officer)
    assert corrected.corrected and corrected.corrected_by == "admin-hl7"
    assert deadletter.replay(runtime, letter.id, "admin-hl7").code == "AA"
    assert identity(runtime, "IPP7090") is not None
    assert deadletter.get_dead_letter(runtime.db, letter.id)[1] == kept  # the original as received is kept
    assert (
        deadletter.get_correction(runtime.db, letter.id)
        == fixed.replace("\n", "\r").encode("latin-1") + b"\r"
    )


def test_a_malformed_message_is_corrected_then_replayed_and_the_correction_audited(
    runtime: Runtime, listener: Hl7Listener
) -> None:
    broken = message(
        "MSH|^~\\&|XPLORE-RIS|" + FACILITY + "|ARCHIPEL|REGION|20261202||ADT^A01||P|2.5|||AL|NE|FRA|8859/1",
        pid("IPP7095"),
    )
    code, _control, reason = msa(send(listener.port, broken))
    assert code == "AR" and "MSH-10" in reason
    [letter] = deadletter.list_dead_letters(runtime.db)
    officer = Principal("admin-hl7", "admin", kind="user")
    with pytest.raises(deadletter.CorrectionInvalid, match="MSH-10"):
        deadletter.correct(runtime.db, letter.id, deadletter.readable(broken), officer)
    text = deadletter.readable(broken).replace("|ADT^A01||P|", "|ADT^A01|C-95|P|")
    deadletter.correct(runtime.db, letter.id, text, officer, source="127.0.0.1")
    assert deadletter.replay(runtime, letter.id, "admin-hl7").code == "AA"
    row = identity(runtime, "IPP7095")
    assert row is not None and row.birth_name == "Lefèvre"  # the Latin-1 correction was read as Latin-1
    assert deadletter.get_dead_letter(runtime.db, letter.id)[1] == broken
    with runtime.db.sessions() as s:
        events = list(
            s.execute(select(AuditEvent).where(AuditEvent.action == "hl7-dead-letter-corrected")).scalars()
        )
    assert [(e.actor, e.object) for e in events] == [("admin-hl7", f"dead-letter {letter.id}")]


def test_a31_person_update_feeds_the_mpi_like_a08(runtime: Runtime, listener: Hl7Listener) -> None:
    send(listener.port, message(msh("ADT^A28", "P-28"), pid("IPP7070")))
    assert msa(send(listener.port, message(msh("ADT^A31", "P-31"), pid("IPP7070", city="Dinan"))))[0] == "AA"
    row = identity(runtime, "IPP7070")
    assert row is not None and row.city == "Dinan"


@contextmanager
def database_down(rt: Runtime) -> Iterator[None]:
    """The runtime's database refuses every connection inside the block: on PostgreSQL it stops allowing
    connections and ends the open ones; on SQLite its files are moved away and a folder takes the file's place."""
    engine = rt.db.engine
    if engine.dialect.name == "sqlite":
        path = Path(str(engine.url.database))
        aside = path.parent / "aside"
        aside.mkdir()
        engine.dispose()
        moved = [f for f in (path, *(path.with_name(path.name + s) for s in ("-wal", "-shm"))) if f.exists()]
        for f in moved:
            f.rename(aside / f.name)
        path.mkdir()
        try:
            yield
        finally:
            path.rmdir()
            for f in moved:
                (aside / f.name).rename(f)
            engine.dispose()
        return
    name = str(engine.url.database)
    admin = sqlalchemy.create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as c:
            c.exec_driver_sql(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
            c.exec_driver_sql(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (name,)
            )
        try:
            yield
        finally:
            with admin.connect() as c:
                c.exec_driver_sql(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
            engine.dispose()
    finally:
        admin.dispose()


def test_while_the_database_is_down_a_message_gets_an_ae_asking_to_resend_and_the_connection_stays_up(
    runtime: Runtime, listener: Hl7Listener
) -> None:
    body = message(msh("ADT^A01", "DB-1"), pid("IPP7080"))
    with database_down(runtime):
        with socket.create_connection(("127.0.0.1", listener.port), timeout=60) as sock:
            answers = b""
            for payload in (frame(body), b"no start block\x1c\r"):
                sock.sendall(payload)
                while not answers.endswith(b"\x1c\r"):
                    chunk = sock.recv(65536)
                    assert chunk, f"connection closed before the acknowledgement: {answers!r}"
                    answers += chunk
                answers += b"|"  # the end of this answer is seen; the next one is read after it
        first, second = (hl7.parse(a.strip(b"|")[1:].decode("latin-1")) for a in answers.split(b"\x1c\r")[:2])
        code, control, reason = msa(first)
        assert (code, control) == ("AE", "DB-1") and "send it again later" in reason, reason
        assert "207" in str(first.segment("ERR")(3))
        assert msa(second)[0] == "AE" and "send it again later" in msa(second)[2]
    assert identity(runtime, "IPP7080") is None
    assert deadletter.list_dead_letters(runtime.db) == []  # nothing could be kept: the RIS keeps it
    assert msa(send(listener.port, body))[0] == "AA"  # the RIS sends it again once the database is back
    assert identity(runtime, "IPP7080") is not None
