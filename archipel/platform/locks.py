"""Named locks that hold across processes: one holder of a name at a time, whichever machine it runs on.

On PostgreSQL a lock is a session-level advisory lock on a connection of its own, held for as long as the work
runs. The server drops it when that connection ends, so a holder killed with SIGKILL (or a machine that dies)
frees it without any expiry to tune against how long the work takes (decision 0043). On the embedded SQLite index
every process shares one data dir, and a ``flock`` on a file in it does the same.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import os
from collections.abc import Iterator
from pathlib import Path

from sqlalchemy import text
from sqlalchemy.engine import Connection

from archipel.platform.db import Database

log = logging.getLogger("archipel.locks")


def lock_key(name: str) -> int:
    """The signed 64-bit advisory-lock key of ``name`` (stable across processes and versions)."""
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)


@contextlib.contextmanager
def try_exclusive(db: Database, name: str, folder: Path) -> Iterator[bool]:
    """Try to take the lock ``name`` without waiting; yields whether this caller holds it.

    ``folder`` holds the lock files on SQLite (a data-dir folder that every process of the platform shares).
    The lock is released when the block ends, or when the holding process dies.
    """
    if db.is_sqlite:
        with _file_lock(folder / f"{name}.lock") as held:
            yield held
        return
    key = lock_key(name)
    conn = db.engine.connect()
    try:
        held = bool(conn.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": key}).scalar())
        # Commit the implicit transaction: a session-level lock outlives it, and the connection should not sit
        # "idle in transaction" for the minutes the work takes.
        conn.commit()
        try:
            yield held
        finally:
            if held:
                _unlock(conn, key, name)
    finally:
        conn.close()


def _unlock(conn: Connection, key: int, name: str) -> None:
    try:
        conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": key})
        conn.commit()
    except Exception as exc:
        # A connection that cannot unlock is not handed back to the pool holding the lock: dropping it ends the
        # server session, and the server frees the lock.
        log.warning("event=lock_release_failed name=%s error=%r", name, str(exc))
        conn.invalidate()


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[bool]:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o640)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        yield True
    finally:
        os.close(fd)
