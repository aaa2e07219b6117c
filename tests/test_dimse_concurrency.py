"""Several associations at once, and the ingest rate of one association, with real storescu peers."""

from __future__ import annotations

import subprocess
import time
from datetime import datetime
from pathlib import Path

from sqlalchemy import func, select

from archipel.migrations import upgrade
from archipel.platform.db import Database
from archipel.platform.storage import FileBlobStore
from archipel.radiology.archive import Archive
from archipel.radiology.models import Instance
from archipel.radiology.samples import SyntheticPatient, ct_series
from tests.dimse_peers import DCMTK_ENV, archive_look, dcmtk, write_files
from tests.support import ArchipelServer

SENDERS = ("STORE1", "STORE2", "STORE3", "STORE4")


def received_spans(server: ArchipelServer) -> dict[str, tuple[datetime, datetime, int]]:
    """First and last receipt time, and count, per sending AE title."""
    with archive_look(server) as look, look.db.sessions() as s:
        rows = s.execute(
            select(
                Instance.source_ae,
                func.min(Instance.received_at),
                func.max(Instance.received_at),
                func.count(),
            ).group_by(Instance.source_ae)
        ).all()
    return {ae: (first, last, n) for ae, first, last, n in rows}


def test_four_storescu_associations_are_served_at_once(server: ArchipelServer, tmp_path: Path) -> None:
    per_sender = 60
    commands = []
    for n, aet in enumerate(SENDERS):
        server.add_node(aet)
        patient = SyntheticPatient(f"CON{n:04d}", "PARALLEL^Sender", "19700101", "F", issuer="SITE-A")
        files = write_files(tmp_path / aet, ct_series(patient, per_sender, rows=128, cols=128))
        commands.append(
            [
                "storescu",
                "-aet",
                aet,
                "-aec",
                server.aet,
                "127.0.0.1",
                str(server.dicom_port),
                *map(str, files),
            ]
        )
    procs = [subprocess.Popen(c, env=DCMTK_ENV, stderr=subprocess.PIPE, text=True) for c in commands]
    for proc in procs:
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err

    spans = received_spans(server)
    assert all(spans[aet][2] == per_sender for aet in SENDERS)
    # Every pair of associations was receiving at the same time: none finished before another started.
    latest_start = max(spans[aet][0] for aet in SENDERS)
    earliest_end = min(spans[aet][1] for aet in SENDERS)
    assert latest_start < earliest_end


def direct_store_rate(files: list[Path], data: Path) -> float:
    """Instances per second of :meth:`Archive.store` alone on ``files``, in a fresh archive on the same disk."""
    db = Database(f"sqlite:///{data / 'index.sqlite'}")
    upgrade(db.url)
    archive = Archive(db, FileBlobStore(data / "blobs"))
    blobs = [f.read_bytes() for f in files]
    start = time.perf_counter()
    for blob in blobs:
        archive.store(blob)
    rate = len(blobs) / (time.perf_counter() - start)
    db.dispose()
    return rate


def test_one_association_ingests_nearly_as_fast_as_the_archive_can_store(
    server: ArchipelServer, tmp_path: Path
) -> None:
    """The DIMSE layer's cost, measured against the archive's own store rate on the same disk in the same run.

    The target is 110 instances/s on one association; whether a shared test machine reaches it depends on
    its fsync latency, which the archive's durability pays three times per instance. So the assertion is on
    the ratio, and the absolute rates are printed. Measured while writing this, the ratio was 0.75 to 0.85; the
    bound leaves room for a busy CI runner and still catches a per-message stall (Nagle's algorithm left on
    costs about 40 ms an instance: a ratio near 0.15).
    """
    count = 300
    server.add_node("RATESCU")
    patient = SyntheticPatient("RATE0001", "RATE^Sender", "19700101", "F", issuer="SITE-A")
    files = write_files(tmp_path / "files", ct_series(patient, count, rows=256, cols=256))
    run = dcmtk(
        "storescu",
        "-aet",
        "RATESCU",
        "-aec",
        server.aet,
        "127.0.0.1",
        str(server.dicom_port),
        *map(str, files),
    )
    assert run.returncode == 0, run.stderr
    first, last, stored = received_spans(server)["RATESCU"]
    assert stored == count
    dimse = (stored - 1) / (last - first).total_seconds()
    direct = direct_store_rate(files, tmp_path / "direct")
    print(f"one association: {dimse:.0f} instances/s; Archive.store alone: {direct:.0f}/s")
    assert dimse >= 0.35 * direct
