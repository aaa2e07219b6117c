"""``archipel serve --dicom-listeners 2``: two listener processes on one DICOM socket, one archive.

The processes serve the same listening socket, and a new association goes to the one that serves fewer
(decision 0053), so that stores use more than one core; both write the same index and blob store, and a series
whose instances come in through both processes is indexed once with all of them.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from sqlalchemy import func, select

from archipel.radiology.models import Series
from archipel.radiology.samples import SyntheticPatient, ct_series
from tests.dimse_peers import archive_look, scu
from tests.support import ArchipelServer, archipel_cmd, wait_until

pytestmark = pytest.mark.e2e

CT_IMAGE = "1.2.840.10008.5.1.4.1.1.2"
VERIFICATION = "1.2.840.10008.1.1"


def _listener_children(pid: int) -> list[int]:
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        for child in (task / "children").read_text().split():
            try:
                argv = Path(f"/proc/{child}/cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if b"dicom" in argv and b"--listener-group" in argv:
                found.append(int(child))
    return found


def _connections(pid: int, port: int) -> int:
    """How many established TCP connections to ``port`` the process ``pid`` holds."""
    established = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if int(fields[1].rsplit(":", 1)[1], 16) == port and fields[3] == "01":
                established.add(fields[9])
    held = 0
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:[") and target[8:-1] in established:
            held += 1
    return held


def _start_two_listeners(tmp_path: Path) -> tuple[ArchipelServer, int, int]:
    """``serve --dicom-listeners 2`` with both listeners listening: the server, serve's pid and the other's."""
    srv = ArchipelServer(tmp_path / "data", env={"ARCHIPEL_DICOM_LISTENERS": "2"})
    srv.data.mkdir(parents=True)
    srv.add_node("PYNETDICOM", site="SITE-A")
    srv.start()
    assert srv.proc is not None
    serve_pid = srv.proc.pid
    wait_until(lambda: len(_listener_children(serve_pid)) == 1, 60, "the second listener process")
    (child,) = _listener_children(serve_pid)
    wait_until(
        lambda: srv.log.read_text().count("event=dicom_listening") == 2, 60, "both listeners to listen"
    )
    return srv, serve_pid, child


def _gone(pid: int) -> bool:
    try:
        return b"zombie" in Path(f"/proc/{pid}/status").read_bytes()
    except FileNotFoundError:
        return True


def test_two_listener_processes_take_associations_in_turn_and_die_with_serve(tmp_path: Path) -> None:
    srv, serve_pid, child = _start_two_listeners(tmp_path)
    assocs = []
    try:
        assert srv.proc is not None
        processes = (serve_pid, child)

        def spread() -> list[int]:
            return [_connections(pid, srv.dicom_port) for pid in processes]

        for opened in range(1, 5):
            assocs.append(scu(srv, [(CT_IMAGE, [ExplicitVRLittleEndian])]))
            wait_until(lambda n=opened: sum(spread()) == n, 10, "the association to be served")
            # Each new association goes to the process that serves fewer: never two apart.
            assert max(spread()) - min(spread()) <= 1, spread()
        assert spread() == [2, 2]
        # One series sent through both processes is indexed once, with every instance.
        patient = SyntheticPatient("LSN0001", "LISTENERS^Two", "19650303", "F", issuer="SITE-A")
        sent = list(ct_series(patient, 24, key="two-listeners"))
        for k, ds in enumerate(sent):
            assert assocs[k % 4].send_c_store(ds).Status == 0x0000
        for assoc in assocs:
            assoc.release()
        wait_until(lambda: spread() == [0, 0], 10, "the associations to end")
        assert child in _listener_children(serve_pid)  # neither process fell over
        with archive_look(srv) as look:
            held = look.instances()
            assert set(held) == {str(ds.SOPInstanceUID) for ds in sent}
            with look.db.sessions() as s:
                assert s.scalar(select(func.count()).select_from(Series)) == 1
        # Only serve dies (not its process group): the listener that shares its socket must not outlive it,
        # or it would keep the DICOM port from the serve started next.
        os.kill(serve_pid, signal.SIGKILL)
        srv.proc.wait(10)
        wait_until(lambda: _gone(child), 0.5, "the orphaned listener process to be gone")
        port = srv.dicom_port
        srv.start()
        assert srv.dicom_port == port  # not moved to another port after "address already in use"
        assert srv.proc is not None
        wait_until(lambda: len(_listener_children(srv.proc.pid)) == 1, 60, "the new second listener")
        (child,) = _listener_children(srv.proc.pid)
        wait_until(
            lambda: srv.log.read_text().count("event=dicom_listening") >= 4, 60, "both listeners again"
        )
        echo = scu(srv, [(VERIFICATION, [ImplicitVRLittleEndian])])
        assert echo.send_c_echo().Status == 0x0000
        echo.release()
    finally:
        for assoc in assocs:
            if assoc.is_established:
                assoc.abort()
        srv.stop()
    # Stopping serve stops its listener processes too: nothing holds the port any more.
    assert _gone(child)


def test_a_malformed_listener_group_is_refused_with_a_clear_error(tmp_path: Path) -> None:
    run = archipel_cmd("dicom", "--listener-group", "3:4:five", data=tmp_path / "data", check=False)
    assert run.returncode == 2
    assert "not a listener group" in run.stderr and "LISTEN_FD:BOARD_FD:SLOT:SLOTS" in run.stderr
    both = archipel_cmd(
        "dicom", "--listener-group", "3:4:1:2", "--reuse-port", data=tmp_path / "data", check=False
    )
    assert both.returncode == 2 and "exclude each other" in both.stderr
