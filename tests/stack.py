"""The platform scaled out on this machine: separate ``archipel api``, ``archipel dicom`` and ``archipel worker``
processes on loopback, sharing a fresh PostgreSQL database, a Redis database of their own and one object store.

Each process has its OWN data dir, so nothing is shared on local disk: whatever a process needs from another has
to go through PostgreSQL, Redis or the object store, as it would across machines. Used by
``tests/test_scale_out.py``, ``tests/test_soak.py`` and ``bench/scale.py``; see docs/scaling.md and decision 0043.
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

import httpx

if TYPE_CHECKING:
    from tests.s3_support import S3Bucket

from tests.support import (
    ArchipelServer,
    archipel_cmd,
    create_pg_database,
    free_port,
    port_answers,
    wait_until,
)

SITE = "SITE-A"
#: The AE title the harness's senders (storescu) use; registered as a node of SITE-A.
SENDER_AET = "STORESCU"
#: Redis databases a stack may take (0 is left to the tests that use Redis directly).
REDIS_DATABASES = range(1, 16)
_REDIS_CLAIM = "archipel-test-stack:claim"
S3_REGION = "us-east-1"


@dataclass
class Service:
    """One process of the stack: its command line, its own data dir and its log file."""

    name: str
    args: list[str]
    data: Path
    log: Path
    env: dict[str, str]
    port: int = 0
    proc: subprocess.Popen[bytes] | None = None
    #: Resident memory (kB) when the service came up, for the soak test's growth figure.
    rss_start_kb: int = 0
    #: Where this run of the process begins in its log (a restart appends to the same file).
    log_offset: int = 0

    def start(self) -> None:
        """Start the process in a session of its own (so a kill reaches everything it started)."""
        self.data.mkdir(parents=True, exist_ok=True)
        self.log_offset = self.log.stat().st_size if self.log.exists() else 0
        with self.log.open("ab") as logf:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "archipel.cli", *self.args, "--data", str(self.data)],
                env={**self.env, "ARCHIPEL_DATA": str(self.data)},
                stdout=logf,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_text(self) -> str:
        """The whole log, every run of the process."""
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def current_log(self) -> str:
        """The log of the process's current run only."""
        if not self.log.exists():
            return ""
        with self.log.open("rb") as f:
            f.seek(self.log_offset)
            return f.read().decode(errors="replace")

    def check_running(self) -> None:
        """Fail with the log's end when the process has exited."""
        if self.proc is not None and self.proc.poll() is not None:
            raise AssertionError(f"{self.name} exited ({self.proc.returncode}):\n{self.log_text()[-3000:]}")

    def rss_kb(self) -> int:
        """Resident memory of the process now (kB; 0 when it is gone)."""
        if not self.alive:
            return 0
        assert self.proc is not None
        try:
            status = Path(f"/proc/{self.proc.pid}/status").read_text()
        except OSError:
            return 0
        line = next((x for x in status.splitlines() if x.startswith("VmRSS:")), "VmRSS: 0 kB")
        return int(line.split()[1])

    def kill(self) -> None:
        """SIGKILL the process and its children, as a crash would."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def stop(self, timeout: float = 15) -> None:
        """SIGTERM, then SIGKILL after ``timeout`` seconds."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.kill()


@dataclass
class StackConfig:
    """How many processes of each kind, and the settings every process gets."""

    apis: int = 2
    listeners: int = 2
    workers: int = 2
    worker_concurrency: int = 1
    #: Seconds before Redis hands a dead worker's task to another one (short, so that a test sees it happen).
    visibility_timeout: int = 10
    #: Settings naming the object store (:func:`s3_object_store`); empty: a folder every process shares.
    object_store: dict[str, str] = field(default_factory=dict)
    extra_env: dict[str, str] = field(default_factory=dict)


def _claim_redis_database() -> int:
    """An empty Redis database number, claimed for this stack (parallel test runs each get their own)."""
    import redis

    for number in REDIS_DATABASES:
        client = redis.Redis(host="127.0.0.1", port=6379, db=number)
        try:
            if client.dbsize() == 0 and client.set(_REDIS_CLAIM, str(os.getpid()), nx=True, ex=3 * 3600):
                return number
        finally:
            client.close()
    raise RuntimeError("no free Redis database (1-15) for the test stack")


def _release_redis_database(number: int) -> None:
    import redis

    client = redis.Redis(host="127.0.0.1", port=6379, db=number)
    try:
        client.flushdb()
    finally:
        client.close()


def _audit_signing_key(folder: Path) -> Path:
    """An Ed25519 key (PEM) made for this run, in a folder apart from every data dir, as a mounted secret."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "audit-signing.pem"
    pem = Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    path.write_bytes(pem)
    path.chmod(0o600)
    return path


def s3_object_store(bucket: S3Bucket) -> dict[str, str]:
    """Settings that put the archive's blobs, the slide sources and the OME-Zarr pyramids in ``bucket``."""
    return {
        "ARCHIPEL_BLOB_URL": bucket.url("blobs"),
        "ARCHIPEL_WSI_SOURCE_URL": bucket.url("slide-sources"),
        "ARCHIPEL_S3_ENDPOINT_URL": bucket.endpoint,
        "ARCHIPEL_S3_REGION": S3_REGION,
    }


def object_store_env(shared: Path) -> dict[str, str]:
    """Settings naming a folder as the one object store every process shares (when no S3 bucket is given)."""
    return {
        "ARCHIPEL_BLOB_URL": f"file://{(shared / 'blobs').resolve()}",
        "ARCHIPEL_WSI_SOURCE_URL": f"file://{(shared / 'slide-sources').resolve()}",
    }


class Stack:
    """The scaled-out platform on loopback; a context manager that brings it up and kills all of it at the end.

    ``admin`` runs CLI commands against the shared database and logs users in (through the first API process).
    On an error inside the ``with`` block, the end of every process's log is written to stderr.
    """

    def __init__(self, root: Path, config: StackConfig | None = None) -> None:
        self.root = root
        self.config = config or StackConfig()
        self.logs = root / "logs"
        self.apis: list[Service] = []
        self.listeners: list[Service] = []
        self.workers: list[Service] = []
        self.env: dict[str, str] = {}
        self.redis_db = -1
        self._drop_db: Any = None
        self.admin: ArchipelServer | None = None
        self._worker_count = 0

    # --- bring up -----------------------------------------------------------------------------------------

    def __enter__(self) -> Stack:
        try:
            self._up()
        except BaseException:
            self._show_logs()
            self._down()
            raise
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc_type is not None:
            self._show_logs()
        self._down()

    def _up(self) -> None:
        self.logs.mkdir(parents=True, exist_ok=True)
        db_url, self._drop_db = create_pg_database()
        self.redis_db = _claim_redis_database()
        self.env = {
            **os.environ,
            "ARCHIPEL_DATABASE_URL": db_url,
            "ARCHIPEL_BROKER_URL": f"redis://127.0.0.1:6379/{self.redis_db}",
            "ARCHIPEL_BROKER_VISIBILITY_TIMEOUT": str(self.config.visibility_timeout),
            # One signing key for every process, made for this run: a token from one API works on the other.
            "ARCHIPEL_SECRET_KEY": secrets.token_hex(32),
            "ARCHIPEL_AUDIT_SIGNING_KEY": str(_audit_signing_key(self.root / "secrets")),
            "ARCHIPEL_COOKIE_SECURE": "false",
            **(self.config.object_store or object_store_env(self.root / "shared")),
            **self.config.extra_env,
        }
        admin = ArchipelServer(self.root / "admin", env=self.env)
        self.admin = admin
        # The schema first, once: processes started together would otherwise race to migrate it.
        archipel_cmd("db", "upgrade", data=admin.data, env=self.env)
        for i in range(self.config.apis):
            port = free_port()
            self.apis.append(self._service(f"api{i + 1}", ["api", "--http-port", str(port)], port))
        for i in range(self.config.listeners):
            port = free_port()
            self.listeners.append(self._service(f"dicom{i + 1}", ["dicom", "--dicom-port", str(port)], port))
        for _ in range(self.config.workers):
            self.add_worker(wait=False)
        for svc in self.services:
            svc.start()
        # The accounts, issuer and node through the CLI while the services start (each command is a process).
        with ThreadPoolExecutor(4) as pool:
            steps = [
                pool.submit(admin.cli, "identity", "issuers", "add", SITE),
                pool.submit(admin.add_node, SENDER_AET, 104, SITE),
                pool.submit(admin.add_user, "pathologist", "pathologist", SITE),
                pool.submit(admin.add_user, "radiologist", "radiologist", SITE),
            ]
            for step in steps:
                step.result()
        admin.http_port = self.apis[0].port
        for svc in self.services:
            self._wait_ready(svc)

    def _service(self, name: str, args: list[str], port: int = 0) -> Service:
        return Service(name, args, self.root / name, self.logs / f"{name}.log", self.env, port)

    def add_worker(self, wait: bool = True) -> Service:
        """One more ``archipel worker`` with a data dir of its own (started and ready when ``wait``)."""
        self._worker_count += 1
        args = ["worker", "--concurrency", str(self.config.worker_concurrency), "--no-drop-folder"]
        svc = self._service(f"worker{self._worker_count}", args)
        self.workers.append(svc)
        if wait:
            svc.start()
            self._wait_ready(svc)
        return svc

    def restart(self, svc: Service) -> None:
        """Kill ``svc`` (SIGKILL) and start it again on the same port and data dir; wait until it is ready."""
        svc.kill()
        svc.start()
        self._wait_ready(svc)

    def _wait_ready(self, svc: Service, timeout: float = 90) -> None:
        def ready() -> bool:
            svc.check_running()
            if svc.name.startswith("api"):
                try:
                    return httpx.get(f"http://127.0.0.1:{svc.port}/healthz", timeout=1).status_code == 200
                except httpx.HTTPError:
                    return False
            if svc.name.startswith("dicom"):
                # The log, not a TCP probe: every probe leaves a pending association on the listener.
                return "event=dicom_listening" in svc.current_log() and port_answers("127.0.0.1", svc.port)
            return " ready." in svc.current_log()

        wait_until(ready, timeout, f"{svc.name} to be ready")
        svc.rss_start_kb = svc.rss_kb()

    # --- use ----------------------------------------------------------------------------------------------

    @property
    def services(self) -> list[Service]:
        return [*self.apis, *self.listeners, *self.workers]

    def api_url(self, index: int = 0) -> str:
        return f"http://127.0.0.1:{self.apis[index].port}"

    def headers(self, user: str) -> dict[str, str]:
        """Bearer headers for ``pathologist`` or ``radiologist`` (valid on every API process)."""
        assert self.admin is not None
        return self.admin.headers(user)

    # --- tear down ----------------------------------------------------------------------------------------

    def _down(self) -> None:
        for svc in self.services:
            svc.kill()
        if self.redis_db >= 0:
            _release_redis_database(self.redis_db)
            self.redis_db = -1
        if self._drop_db is not None:
            # A killed process's server session may take a moment to end: DROP ... WITH (FORCE) ends it.
            deadline = time.monotonic() + 10
            while True:
                try:
                    self._drop_db()
                    break
                except Exception:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.5)
            self._drop_db = None

    def _show_logs(self, lines: int = 40) -> None:
        for svc in self.services:
            tail = "\n".join(svc.log_text().splitlines()[-lines:])
            sys.stderr.write(f"\n----- {svc.name} ({svc.log}) -----\n{tail}\n")
