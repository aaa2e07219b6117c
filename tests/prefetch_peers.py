"""Peers of the prefetch tests: a real Orthanc (Debian's, with its DICOMweb plugin) holding its own patients
under its own PatientIDs, a node that accepts connections and never answers, and the MPI identities."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import threading
from pathlib import Path

import httpx
from pydicom.dataset import Dataset

from archipel.platform.db import Database
from archipel.platform.identity.intake import LocalIdentityInput, add_issuer
from archipel.platform.identity.service import register
from archipel.radiology.samples import to_bytes
from tests.support import free_port, wait_until

DICOMWEB_PLUGIN = Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so")


class OrthancPacs:
    """Orthanc on free loopback ports, storage in ``root``, answering C-FIND/C-MOVE/C-GET and DICOMweb."""

    def __init__(self, root: Path, aet: str = "ORTHANCB") -> None:
        self.root, self.aet = root, aet
        self.http_port, self.dicom_port = free_port(), free_port()
        config = {
            "Name": "archipel-prefetch-test",
            "DicomAet": aet,
            "StorageDirectory": str(root / "storage"),
            "IndexDirectory": str(root / "index"),
            "DicomPort": self.dicom_port,
            "HttpPort": self.http_port,
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": False,
            "DicomCheckCalledAet": False,
            "DicomAlwaysAllowFind": True,
            "DicomAlwaysAllowGet": True,
            "DicomAlwaysAllowMove": True,
            "DicomModalities": {},
            "DicomModalitiesInDatabase": True,
            "HttpDescribeErrors": True,
            "Plugins": [str(DICOMWEB_PLUGIN)] if DICOMWEB_PLUGIN.exists() else [],
            "DicomWeb": {"Enable": True, "Root": "/dicom-web/"},
        }
        root.mkdir(parents=True, exist_ok=True)
        (root / "orthanc.json").write_text(json.dumps(config))
        self.log = (root / "orthanc.log").open("ab")
        binary = shutil.which("Orthanc") or "/usr/sbin/Orthanc"
        self.proc = subprocess.Popen(
            [binary, str(root / "orthanc.json")], stdout=self.log, stderr=subprocess.STDOUT
        )
        wait_until(self._ready, 60, "Orthanc to answer")

    def _ready(self) -> bool:
        if self.proc.poll() is not None:
            raise RuntimeError(f"Orthanc exited; see {self.root / 'orthanc.log'}")
        try:
            return httpx.get(self.url("/system"), timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.http_port}{path}"

    @property
    def dicomweb(self) -> str:
        return self.url("/dicom-web")

    def know_destination(self, aet: str, port: int) -> None:
        """Declare our listener as a modality, so that a C-MOVE to ``aet`` reaches it."""
        body = {"AET": aet, "Host": "127.0.0.1", "Port": port}
        httpx.put(self.url(f"/modalities/{aet.lower()}"), json=body, timeout=30).raise_for_status()

    def upload(self, datasets: list[Dataset]) -> None:
        """Store ``datasets`` through Orthanc's REST API."""
        for ds in datasets:
            httpx.post(self.url("/instances"), content=to_bytes(ds), timeout=30).raise_for_status()

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


class SilentNode:
    """A TCP port that accepts connections and never says a word (a hung PACS)."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.accepted: list[socket.socket] = []
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted.append(conn)

    def close(self) -> None:
        for conn in self.accepted:
            conn.close()
        self.sock.close()


def closed_port() -> int:
    """A loopback port nobody listens on."""
    return free_port()


def person(db: Database, identities: list[tuple[str, str]], birth_name: str = "TESTPATIENT") -> int:
    """One invented person known at each ``(site, PatientID)``; their master id (the MPI links them)."""
    master = None
    for site, local_id in identities:
        with db.write() as s:
            add_issuer(s, site)
        outcome = register(
            db,
            LocalIdentityInput(
                issuer=site,
                local_id=local_id,
                birth_name=birth_name,
                given_names="CAMILLE",
                birth_date="19610412",
                sex="F",
                birth_place="75056",
                postcode="75011",
            ),
        )
        if master is not None and outcome.master_id != master:
            raise AssertionError(
                f"the MPI did not link {site}/{local_id} to master {master} ({outcome.status})"
            )
        master = outcome.master_id
    assert master is not None
    return master


class HungPacs:
    """A DICOM peer that accepts associations and every query, then never answers a C-FIND (a PACS stuck on
    its database): only our DIMSE timeout ends the wait."""

    def __init__(self, aet: str = "HUNGPACS") -> None:
        from pynetdicom import AE, evt
        from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelFind  # type: ignore[attr-defined]

        self.released = threading.Event()
        self.queries = 0
        ae = AE(ae_title=aet)
        ae.add_supported_context(StudyRootQueryRetrieveInformationModelFind)
        self.port = free_port()

        def on_find(event: object) -> object:
            self.queries += 1
            self.released.wait(120)
            yield 0x0000, None

        self.server = ae.start_server(
            ("127.0.0.1", self.port), block=False, evt_handlers=[(evt.EVT_C_FIND, on_find)]
        )

    def close(self) -> None:
        self.released.set()
        self.server.shutdown()
