"""``archipel serve --dicom-listeners 2``: two listener processes on one DICOM port, one archive.

The kernel spreads new associations over the processes that share the port (SO_REUSEPORT), so that stores use
more than one core; both write the same index and blob store, and a series whose instances come in through
both processes is indexed once with all of them.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from sqlalchemy import func, select

from archipel.radiology.models import Series
from archipel.radiology.samples import SyntheticPatient, ct_series
from tests.dimse_peers import archive_look, dcmtk, write_files
from tests.support import ArchipelServer, wait_until

pytestmark = pytest.mark.e2e

ROUNDS = 30
#: CPU ticks (10 ms each) that each process must have spent on the stores: an idle one spends next to none.
BUSY = 8


def _listener_children(pid: int) -> list[int]:
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        for child in (task / "children").read_text().split():
            try:
                argv = Path(f"/proc/{child}/cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if b"dicom" in argv and b"--reuse-port" in argv:
                found.append(int(child))
    return found


def _ticks(pid: int) -> int:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def _store(srv: ArchipelServer, files: list[Path]) -> str:
    run = dcmtk("storescu", "-aec", srv.aet, "127.0.0.1", str(srv.dicom_port), *map(str, files))
    return "" if run.returncode == 0 else run.stdout + run.stderr


def test_two_listener_processes_share_the_dicom_port_and_index_one_series_sent_through_both(
    tmp_path: Path,
) -> None:
    srv = ArchipelServer(tmp_path / "data", env={"ARCHIPEL_DICOM_LISTENERS": "2"})
    srv.data.mkdir(parents=True)
    srv.add_node("STORESCU", site="SITE-A")
    srv.start()
    try:
        assert srv.proc is not None
        serve_pid = srv.proc.pid
        wait_until(lambda: len(_listener_children(serve_pid)) == 1, 60, "the second listener process")
        (child,) = _listener_children(serve_pid)
        wait_until(
            lambda: srv.log.read_text().count("event=dicom_listening") == 2, 60, "both listeners to listen"
        )
        patient = SyntheticPatient("LSN0001", "LISTENERS^Two", "19650303", "F", issuer="SITE-A")
        files = write_files(tmp_path / "series", ct_series(patient, ROUNDS * 4, key="two-listeners"))
        before = {pid: _ticks(pid) for pid in (serve_pid, child)}
        sent = 0
        with ThreadPoolExecutor(4) as pool:
            # Four associations at a time, each with a slice or two of the same series, until both processes
            # have clearly done some of the work (each new connection goes to either, as the kernel hashes it).
            while sent < len(files):
                batch = [files[sent + k : sent + k + 1] for k in range(4)]
                assert list(pool.map(lambda f: _store(srv, f), batch)) == [""] * 4
                sent += 4
                if all(_ticks(pid) - before[pid] >= BUSY for pid in before) and sent >= 40:
                    break
        assert all(_ticks(pid) - before[pid] >= BUSY for pid in before), "one process took every association"
        assert child in _listener_children(serve_pid)  # neither process fell over
        with archive_look(srv) as look:
            held = look.instances()
            assert {f.stem for f in files[:sent]} <= set(held)
            assert len(held) == sent
            with look.db.sessions() as s:
                assert s.scalar(select(func.count()).select_from(Series)) == 1
    finally:
        srv.stop()
    # Stopping serve stops its listener processes too: nothing holds the port any more.
    assert not Path(f"/proc/{child}").exists() or b"zombie" in Path(f"/proc/{child}/status").read_bytes()
