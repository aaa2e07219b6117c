"""Test support: real services probes, and an ``archipel serve`` process driven from outside."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pyotp

if TYPE_CHECKING:
    from archipel.platform.db import Database
    from archipel.platform.settings import Settings

PG_ADMIN_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
REDIS_URL = "redis://127.0.0.1:6379/0"


def port_answers(host: str, port: int) -> bool:
    """Whether something accepts TCP connections on ``host:port``."""
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def postgres_available() -> bool:
    """Whether the local PostgreSQL server answers and lets us create databases."""
    if not port_answers("127.0.0.1", 5432):
        return False
    try:
        import sqlalchemy

        engine = sqlalchemy.create_engine(PG_ADMIN_URL)
        with engine.connect() as c:
            c.exec_driver_sql("SELECT 1")
        engine.dispose()
        return True
    except Exception:
        return False


def redis_available() -> bool:
    """Whether the local Redis server answers."""
    return port_answers("127.0.0.1", 6379)


_pg_admin: Any = None


def create_pg_database(template: str = "") -> tuple[str, Callable[[], None]]:
    """A fresh PostgreSQL database (a copy of ``template`` when given); returns its URL and a function that
    drops it."""
    import sqlalchemy

    global _pg_admin
    if _pg_admin is None:
        _pg_admin = sqlalchemy.create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    admin = _pg_admin
    name = f"archipel_test_{uuid.uuid4().hex[:12]}"
    with admin.connect() as c:
        c.exec_driver_sql(f'CREATE DATABASE "{name}"' + (f' TEMPLATE "{template}"' if template else ""))

    def drop() -> None:
        with admin.connect() as c:
            c.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    return f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}", drop


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(condition: Callable[[], bool], timeout: float = 30.0, what: str = "condition") -> None:
    """Poll ``condition`` until it holds; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def archipel_cmd(
    *args: str, data: Path, env: dict[str, str] | None = None, stdin: str | None = None, check: bool = True
) -> subprocess.CompletedProcess[str]:
    """Run the ``archipel`` command line in a subprocess."""
    full_env = {**os.environ, **(env or {}), "ARCHIPEL_DATA": str(data)}
    return subprocess.run(
        [sys.executable, "-m", "archipel.cli", *args, "--data", str(data)],
        input=stdin,
        capture_output=True,
        text=True,
        env=full_env,
        check=check,
        timeout=120,
    )


class ArchipelServer:
    """An ``archipel serve`` process on free loopback ports, with a data dir of its own."""

    def __init__(self, data: Path, env: dict[str, str] | None = None) -> None:
        self.data = data
        self.env = {**os.environ, **(env or {}), "ARCHIPEL_DATA": str(data)}
        self._own_hl7_port = "ARCHIPEL_HL7_PORT" not in self.env
        self.env.setdefault("ARCHIPEL_HL7_PORT", str(free_port()))  # the HL7 MLLP listener of ``serve``
        self.http_port = free_port()
        self.dicom_port = free_port()
        self.aet = "ARCHIPEL"
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = data / "serve.log"
        self._passwords: dict[str, str] = {}
        self._totp: dict[str, pyotp.TOTP] = {}
        self._last_step: dict[str, int] = {}
        self._tokens: dict[str, tuple[str, float]] = {}
        self._index: Database | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def cli(
        self, *args: str, stdin: str | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        """Run an ``archipel`` subcommand against this server's data dir and settings."""
        return archipel_cmd(*args, data=self.data, env=self.env, stdin=stdin, check=check)

    def settings(self) -> Settings:
        """The settings ``archipel serve`` reads for this server, as far as the test process needs them: its
        index, its signing key and its TOTP issuer come from the server's environment."""
        from archipel.platform.settings import Settings

        given = {"database_url": "ARCHIPEL_DATABASE_URL", "secret_key": "ARCHIPEL_SECRET_KEY"}
        given["totp_issuer"] = "ARCHIPEL_TOTP_ISSUER"
        return Settings(data_dir=self.data, **{k: self.env[v] for k, v in given.items() if v in self.env})

    def index(self) -> Database:
        """This server's index database, migrated, opened from the test process.

        Accounts and nodes are written here directly rather than through one ``archipel`` subprocess each
        (about a second of start-up and imports per call, a dozen calls per server); the command line
        itself is tested in test_cli."""
        if self._index is None:
            from archipel.migrations import ensure_current
            from archipel.platform.db import Database

            self.data.mkdir(parents=True, exist_ok=True)  # as the command would: an account may come first
            url = self.settings().effective_database_url
            ensure_current(url)
            self._index = Database(url)
        return self._index

    def add_user(self, name: str, role: str, site: str = "") -> str:
        """Create a user with a known password and an enrolled TOTP second factor, and remember both."""
        from archipel.platform.authn import create_user

        password = uuid.uuid4().hex
        with self.index().write() as s:
            create_user(s, name, role, password, site)
        self._enrol_totp(name)
        self._passwords[name] = password
        self._tokens.pop(name, None)
        return password

    def totp_code(self, user: str) -> str:
        """A TOTP code for ``user`` that the server has not seen yet: the current step's, else the next one's
        (the server accepts one step of drift). When both are spent, the account gets a new TOTP secret, as
        ``archipel users totp-enrol`` gives it, rather than the test waiting up to 30 s for the next step."""
        step = int(time.time()) // 30
        if self._last_step.get(user, 0) > step:
            self._enrol_totp(user)
        step = max(step, self._last_step.get(user, 0) + 1)
        self._last_step[user] = step
        return self._totp[user].at(step * 30)

    def _enrol_totp(self, user: str) -> None:
        from archipel.platform import mfa
        from archipel.platform.authn import find_user

        settings = self.settings()
        with self.index().write() as s:
            account = find_user(s, user)
            assert account is not None, user
            uri = mfa.enrol(account, settings.signing_key(), settings.totp_issuer).uri
        totp = pyotp.parse_uri(uri)
        assert isinstance(totp, pyotp.TOTP)
        self._totp[user] = totp
        self._last_step[user] = 0

    def add_node(self, aet: str, port: int = 104, site: str = "SITE-A", regional: bool = False) -> None:
        """Register a DICOM node at 127.0.0.1 (or update its port, site and scope), as ``nodes add`` does."""
        from sqlalchemy import select

        from archipel.radiology.models import DicomNode

        host = "127.0.0.1"
        with self.index().write() as s:
            node = s.execute(
                select(DicomNode).where(DicomNode.ae_title == aet, DicomNode.host == host)
            ).scalar_one_or_none()
            if node is None:
                node = DicomNode(ae_title=aet, host=host)
                s.add(node)
            node.port, node.site, node.regional_consumer = port, site, regional

    def start(self) -> ArchipelServer:
        """Start serving and wait until HTTP and DICOM answer.

        A port that :func:`free_port` found free can be taken before the server binds it (by another test's
        server, or as the local port of some outgoing connection): the server then exits with "address already
        in use", and it is started again on other ports, at most three times."""
        for attempt in range(3):
            try:
                return self._start_once()
            except AssertionError as exc:
                if "address already in use" not in str(exc).lower() or attempt == 2:
                    raise
                self.http_port, self.dicom_port = free_port(), free_port()
                if self._own_hl7_port:
                    self.env["ARCHIPEL_HL7_PORT"] = str(free_port())
        raise AssertionError("unreachable")

    def _start_once(self) -> ArchipelServer:
        self.data.mkdir(parents=True, exist_ok=True)
        logf = self.log.open("ab")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "archipel.cli",
                "serve",
                "--data",
                str(self.data),
                "--http-port",
                str(self.http_port),
                "--dicom-port",
                str(self.dicom_port),
                "--aet",
                self.aet,
            ],
            env=self.env,
            stdout=logf,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

        def ready() -> bool:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"archipel serve exited: {self.log.read_text()[-3000:]}")
            # HTTP first: each TCP probe of the DICOM port costs the listener an association thread (until the
            # probe closes), and probing it every 50 ms while HTTP starts up (slow under load) only adds work.
            try:
                if httpx.get(self.url + "/healthz", timeout=1).status_code != 200:
                    return False
            except httpx.HTTPError:
                return False
            return port_answers("127.0.0.1", self.dicom_port)

        wait_until(ready, 60, "archipel serve to answer")
        return self

    def token(self, user: str, fresh: bool = False) -> str:
        """A bearer token for a user created with :meth:`add_user` (password + TOTP login).

        Tokens are kept and reused while they have more than a minute left, so that callers may ask often
        without spending a TOTP code each time; ``fresh`` forces a new login.
        """
        cached = self._tokens.get(user)
        if cached is not None and not fresh and cached[1] - time.monotonic() > 60:
            return cached[0]
        r = httpx.post(
            self.url + "/api/auth/token",
            data={"username": user, "password": self._passwords[user], "totp": self.totp_code(user)},
        )
        r.raise_for_status()
        body = r.json()
        self._tokens[user] = (str(body["access_token"]), time.monotonic() + float(body["expires_in"]))
        return str(body["access_token"])

    def headers(self, user: str) -> dict[str, str]:
        """Authorization headers for ``user``."""
        return {"Authorization": f"Bearer {self.token(user)}"}

    def upload_slide(self, path: Path, meta: dict[str, str], user: str = "pathologist") -> str:
        """Upload a slide file through ``POST /api/slides`` as ``user``; return its slide ID (it converts after)."""
        with path.open("rb") as f:
            r = httpx.post(
                self.url + "/api/slides",
                headers=self.headers(user),
                data={"metadata": json.dumps(meta)},
                files={"file": (path.name, f, "application/octet-stream")},
                timeout=60,
            )
        assert r.status_code == 202, r.text
        return str(r.json()["slide_id"])

    def wait_converted(self, slide_id: str, user: str = "pathologist", timeout: float = 120) -> None:
        """Wait for a slide's conversion to end, as ``user`` sees it (fails at once if it failed)."""

        def converted() -> bool:
            state = httpx.get(f"{self.url}/api/slides/{slide_id}", headers=self.headers(user)).json()
            assert state["status"] != "failed", state
            return bool(state["status"] == "ready")

        wait_until(converted, timeout, "the slide's conversion")

    def stop(self) -> None:
        """Stop gracefully (SIGTERM to the whole process group)."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.proc = None
        self._close_index()

    def _close_index(self) -> None:
        if self._index is not None:
            self._index.dispose()
            self._index = None

    def kill(self) -> None:
        """SIGKILL the whole process group, as a crash would."""
        if self.proc is not None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        self.proc = None
