"""The fast ingest path: shared commits across threads, the known-series cache, and no blob left by a refusal."""

from __future__ import annotations

import errno
import fcntl
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from sqlalchemy import Connection, delete, func, select, text

from archipel.platform.db import Database, GroupCommit
from archipel.platform.runtime import Runtime
from archipel.radiology.archive import Archive, DuplicateConflict
from archipel.radiology.dicomfile import InvalidInstance
from archipel.radiology.models import Instance, Patient, Series, Study
from archipel.radiology.samples import SyntheticPatient, ct_series, to_bytes


def count(rt: Runtime, model: type) -> int:
    with rt.db.sessions() as s:
        return int(s.execute(select(func.count()).select_from(model)).scalar_one())


def blob_count(rt: Runtime) -> int:
    return sum(1 for _ in rt.blobs.keys(older_than=None))


def test_concurrent_stores_of_shared_series_index_each_instance_once(
    archive: Archive, runtime: Runtime, patient: SyntheticPatient
) -> None:
    series = [ct_series(patient, 12, rows=16, cols=16, key=f"concurrent-{k}") for k in range(3)]
    payloads = [to_bytes(ds) for one in series for ds in one]
    errors: list[BaseException] = []

    def send(share: list[bytes]) -> None:
        try:
            for data in share:
                archive.store(data, default_issuer="SITE-A")
        except BaseException as exc:
            errors.append(exc)

    # Interleaved shares: every thread writes into every series at the same time.
    threads = [threading.Thread(target=send, args=(payloads[i::6],)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert count(runtime, Instance) == len(payloads)
    assert count(runtime, Series) == 3
    assert count(runtime, Study) == 3
    assert count(runtime, Patient) == 1
    assert blob_count(runtime) == len(payloads)


def test_a_failing_unit_is_undone_alone_and_its_batch_is_committed(runtime: Runtime) -> None:
    commit = GroupCommit(runtime.db)
    with runtime.db.write_connection() as c:
        c.execute(text("CREATE TABLE gc_probe (n INTEGER PRIMARY KEY)"))
    results: dict[int, object] = {}
    start = threading.Barrier(8)

    def unit(n: int) -> None:
        def write(c: Connection) -> int:
            c.execute(text("INSERT INTO gc_probe (n) VALUES (:n)"), {"n": n})
            if n == 3:
                raise ValueError("unit 3 refuses")
            return n

        start.wait()
        try:
            results[n] = commit.run(write)
        except ValueError as exc:
            results[n] = exc

    threads = [threading.Thread(target=unit, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert isinstance(results[3], ValueError)
    assert {n: r for n, r in results.items() if n != 3} == {n: n for n in range(8) if n != 3}
    with runtime.db.engine.connect() as c:
        stored = sorted(c.execute(text("SELECT n FROM gc_probe")).scalars())
    assert stored == [n for n in range(8) if n != 3]


def test_a_series_deleted_after_it_was_cached_is_created_again(
    archive: Archive, runtime: Runtime, patient: SyntheticPatient
) -> None:
    first, second = ct_series(patient, 2, rows=16, cols=16, key="cached-series")
    archive.store(to_bytes(first))
    with runtime.db.write() as s:
        s.execute(delete(Instance))
        s.execute(delete(Series))
    assert archive.store(to_bytes(second)).status == "stored"
    with runtime.db.sessions() as s:
        series_pk = s.execute(select(Instance.series_pk)).scalar_one()
        assert s.execute(select(Series.series_uid).where(Series.id == series_pk)).scalar_one() == (
            second.SeriesInstanceUID
        )


def test_a_refused_conflicting_copy_leaves_no_blob(
    archive: Archive, runtime: Runtime, patient: SyntheticPatient
) -> None:
    ds = ct_series(patient, 1, rows=16, cols=16)[0]
    archive.store(to_bytes(ds))
    ds.SeriesDescription = "changed"
    with pytest.raises(DuplicateConflict):
        archive.store(to_bytes(ds))
    assert blob_count(runtime) == 1


def test_bytes_that_do_not_parse_leave_no_blob(archive: Archive, runtime: Runtime) -> None:
    with pytest.raises(InvalidInstance):
        archive.store(b"\0" * 128 + b"DICM" + b"\xff" * 64)
    assert blob_count(runtime) == 0


def test_a_series_sent_under_another_study_is_refused_and_leaves_no_blob(
    archive: Archive, runtime: Runtime, patient: SyntheticPatient
) -> None:
    first, second = ct_series(patient, 2, rows=16, cols=16, key="moved-series")
    archive.store(to_bytes(first))
    second.StudyInstanceUID = "1.2.826.0.1.3680043.10.1379.999"
    with pytest.raises(InvalidInstance, match="belongs to another study"):
        archive.store(to_bytes(second))
    assert count(runtime, Instance) == 1
    assert blob_count(runtime) == 1


def test_sqlite_writers_of_two_processes_take_turns_through_the_kernel(tmp_path: Path) -> None:
    db = Database(f"sqlite:///{tmp_path / 'index.sqlite'}")
    with db.write_connection() as conn:
        conn.exec_driver_sql("CREATE TABLE t (x INTEGER)")
    # Another process takes the writers' turn and holds it a while, as a listener process writing would.
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from archipel.platform.db import WriterTurn\n"
            "turn = WriterTurn(sys.argv[1]); turn.acquire(); print('held', flush=True); time.sleep(0.5)\n"
            "turn.release(); time.sleep(5)",
            str(tmp_path / "index.sqlite"),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "held\n"
        started = time.monotonic()
        with db.write_connection() as conn:
            waited = time.monotonic() - started
            conn.exec_driver_sql("INSERT INTO t VALUES (1)")
        # It waited for the other process's turn (rather than found SQLite free and went ahead), and came in
        # as soon as it was given back, not after a busy-handler sleep.
        assert 0.3 < waited < 2
    finally:
        holder.kill()
        holder.wait()
    with db.sessions() as s:
        assert s.execute(text("SELECT count(*) FROM t")).scalar_one() == 1
    db.dispose()


def test_writers_go_on_where_the_filesystem_has_no_file_locks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(fd: int, operation: int) -> None:
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(fcntl, "flock", refuse)
    db = Database(f"sqlite:///{tmp_path / 'index.sqlite'}")
    for _ in range(2):
        with db.write_connection() as conn:
            conn.exec_driver_sql("CREATE TABLE IF NOT EXISTS t (x INTEGER)")
            conn.exec_driver_sql("INSERT INTO t VALUES (1)")
    with db.sessions() as s:
        assert s.execute(text("SELECT count(*) FROM t")).scalar_one() == 2
    db.dispose()
