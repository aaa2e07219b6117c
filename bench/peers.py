"""The storage targets the ingest benchmark sends to: Archipel, Orthanc and a bare pynetdicom SCP.

Each target starts fresh (its own empty folder, free loopback ports), answers ``count()`` with the number of
instances it holds, and stops. All of them run as subprocesses on loopback.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
from functools import partial
from pathlib import Path
from typing import Protocol

import httpx

from tests.support import ArchipelServer, free_port, port_answers, wait_until

#: The AE title storescu calls with; every target knows it as a node.
CALLING_AET = "STORESCU"
SITE = "BENCH"


class Target(Protocol):
    """A storage SCP under test."""

    name: str
    aet: str
    port: int
    #: Every port that accepts associations (several for a multi-process target).
    ports: list[int]

    def start(self) -> None:
        """Start with an empty store and return once it accepts associations."""

    def count(self) -> int:
        """How many instances the target holds."""

    def stop(self) -> None:
        """Stop and release its ports."""


def _stop_process(proc: subprocess.Popen[bytes] | None) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


class ArchipelTarget:
    """``archipel serve`` with a fresh data dir and the storescu AE registered as a node of site BENCH.

    With ``listeners`` > 1, that many more ``archipel dicom`` processes serve the same data dir on ports of
    their own (the many-process layout of the architecture, on one machine); associations are spread over
    all ports. With ``one_port`` as well, ``serve --dicom-listeners`` runs them on its own socket instead
    (the least busy process accepts each association, decision 0053).
    """

    aet = "ARCHIPEL"

    def __init__(self, root: Path, listeners: int = 1, one_port: bool = False) -> None:
        self.root = root
        self.listeners = listeners
        self.one_port = one_port
        kind = "listeners" if one_port else "proc"
        self.name = "archipel" if listeners == 1 else f"archipel-{listeners}{kind}"
        self.port = 0
        self.ports: list[int] = []
        self.server: ArchipelServer | None = None
        self.extra: list[subprocess.Popen[bytes]] = []
        self.starts = 0

    def start(self) -> None:
        # A new folder per start: the index database of this process is cached by its URL
        # (platform.db.get_database), and a folder removed and made again under the same name would leave
        # the cached engine on the deleted file, so the next start's migrations would miss the new one.
        self.starts += 1
        data = self.root / f"{self.name}-{self.starts}"
        shutil.rmtree(self.root / f"{self.name}-{self.starts - 1}", ignore_errors=True)
        shutil.rmtree(data, ignore_errors=True)
        data.mkdir(parents=True)
        env = {"ARCHIPEL_DICOM_HOST": "127.0.0.1"}
        if self.one_port:
            env["ARCHIPEL_DICOM_LISTENERS"] = str(self.listeners)
        self.server = ArchipelServer(data, env=env)
        self.server.add_node(CALLING_AET, site=SITE)
        self.server.start()
        self.port = self.server.dicom_port
        self.ports = [self.port]
        self.aet = self.server.aet
        if self.one_port:
            log = self.server.log
            wait_until(
                lambda: log.read_text().count("event=dicom_listening") == self.listeners,
                60,
                "every DICOM listener process",
            )
            return
        for k in range(1, self.listeners):
            port = free_port()
            log = (data / f"dicom-{k}.log").open("ab")
            self.extra.append(
                subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        "archipel.cli",
                        "dicom",
                        "--dicom-port",
                        str(port),
                        "--aet",
                        self.aet,
                    ],
                    env=self.server.env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            )
            wait_until(partial(port_answers, "127.0.0.1", port), 60, "an extra DICOM listener")
            self.ports.append(port)

    def count(self) -> int:
        assert self.server is not None
        with sqlite3.connect(f"file:{self.server.data / 'index.sqlite'}?mode=ro", uri=True) as c:
            return int(c.execute("SELECT count(*) FROM instances").fetchone()[0])

    def stop(self) -> None:
        for proc in self.extra:
            _stop_process(proc)
        self.extra = []
        if self.server is not None:
            self.server.stop()
            self.server = None


class OrthancTarget:
    """Orthanc on loopback with its default SQLite index, no plugins and no authentication."""

    aet = "ORTHANC"

    def __init__(self, root: Path, binary: str = "Orthanc", nodelay: bool = True) -> None:
        self.root = root
        self.binary = binary
        self.nodelay = nodelay
        # Without TCP_NODELAY in its environment Orthanc runs as Debian's service starts it: Nagle on.
        self.name = "orthanc" if nodelay else "orthanc-nagle"
        self.port = 0
        self.http_port = 0
        self.ports: list[int] = []
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        folder = self.root / self.name
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        self.port, self.http_port = free_port(), free_port()
        config = {
            "Name": "archipel-bench",
            "StorageDirectory": str(folder / "storage"),
            "IndexDirectory": str(folder / "index"),
            "DicomAet": self.aet,
            "DicomPort": self.port,
            "HttpPort": self.http_port,
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": False,
            "DicomCheckCalledAet": False,
            "DicomModalities": {"bench": [CALLING_AET, "127.0.0.1", 104]},
            "Plugins": [],
            "StorageCompression": False,
            "HttpDescribeErrors": True,
        }
        path = folder / "orthanc.json"
        path.write_text(json.dumps(config, indent=2))
        log = (folder / "orthanc.log").open("ab")
        # Orthanc's DICOM layer is dcmtk's, which turns Nagle off only when TCP_NODELAY is set.
        env = {k: v for k, v in os.environ.items() if k != "TCP_NODELAY"}
        if self.nodelay:
            env["TCP_NODELAY"] = "1"
        self.proc = subprocess.Popen([self.binary, str(path)], env=env, stdout=log, stderr=subprocess.STDOUT)

        def ready() -> bool:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"Orthanc exited; see {folder / 'orthanc.log'}")
            if not port_answers("127.0.0.1", self.port):
                return False
            try:
                return httpx.get(self._url("/system"), timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        wait_until(ready, 60, "Orthanc to answer")
        self.ports = [self.port]

    def _url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.http_port}{path}"

    def count(self) -> int:
        r = httpx.get(self._url("/statistics"), timeout=30)
        r.raise_for_status()
        return int(r.json()["CountInstances"])

    def stop(self) -> None:
        _stop_process(self.proc)
        self.proc = None


class BareScpTarget:
    """A pynetdicom listener that only writes files (``bench/bare_scp.py``): pynetdicom's own ceiling."""

    name = "bare-pynetdicom"
    aet = "BARESCP"

    def __init__(self, root: Path) -> None:
        self.root = root
        self.port = 0
        self.ports: list[int] = []
        self.proc: subprocess.Popen[bytes] | None = None
        self.folder = root / "bare"

    def start(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)
        self.folder.mkdir(parents=True)
        self.port = free_port()
        script = Path(__file__).with_name("bare_scp.py")
        log = (self.root / "bare.log").open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, str(script), "--port", str(self.port), "--dir", str(self.folder / "files")],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        wait_until(lambda: port_answers("127.0.0.1", self.port), 30, "the bare SCP to listen")
        self.ports = [self.port]

    def count(self) -> int:
        return sum(1 for _ in (self.folder / "files").glob("*.dcm"))

    def stop(self) -> None:
        _stop_process(self.proc)
        self.proc = None
