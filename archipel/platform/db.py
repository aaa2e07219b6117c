"""Database engine, sessions and the declarative base shared by every module.

SQLite (the embedded default) runs in WAL mode with ``synchronous=FULL``: a commit returns only once the WAL is
on disk, which the archive's durability contract relies on.
"""

from __future__ import annotations

import fcntl
import logging
import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Generic, TypeVar

from sqlalchemy import Connection, DateTime, Engine, MetaData, create_engine, event
from sqlalchemy.orm import DeclarativeBase, Session, sessionmaker
from sqlalchemy.types import TypeDecorator

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    """Declarative base of every ORM model in Archipel."""

    metadata = MetaData(naming_convention=NAMING)


class UTCDateTime(TypeDecorator[datetime]):
    """A timezone-aware UTC timestamp on every backend (SQLite drops the zone)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("naive datetime given where a UTC timestamp is required")
        return value.astimezone(UTC) if value is not None else None

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value


def utcnow() -> datetime:
    """The current time, timezone-aware, in UTC."""
    return datetime.now(UTC)


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=FULL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.close()


def _sqlite_autocommit_driver(dbapi_conn: Any, _record: Any) -> None:
    # Let SQLAlchemy emit BEGIN itself, so that writers can take the lock up front (BEGIN IMMEDIATE)
    # instead of failing with SQLITE_BUSY when a read transaction upgrades to a write.
    dbapi_conn.isolation_level = None


def _sqlite_begin(conn: Any) -> None:
    if conn.get_execution_options().get("archipel_write"):
        conn.exec_driver_sql("BEGIN IMMEDIATE")
    else:
        conn.exec_driver_sql("BEGIN")


def make_engine(url: str) -> Engine:
    """Create an engine for ``url``, with the SQLite pragmas applied to every connection."""
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})
        event.listen(engine, "connect", _sqlite_autocommit_driver)
        event.listen(engine, "connect", _sqlite_pragmas)
        event.listen(engine, "begin", _sqlite_begin)
        return engine
    return create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=20)


_LOG = logging.getLogger("archipel.db")


class WriterTurn:
    """The turn of SQLite writers: a lock between this process's threads, then one between processes.

    SQLite lets one writer in at a time, and one that finds the database locked sleeps in its busy handler
    (1, 2, 5, 10 ms and longer) before it looks again: two processes that write often (the listener processes
    of ``serve --dicom-listeners``, a worker beside them) lose milliseconds to each other at every collision.
    Writers that take this turn first wait in the kernel instead (``flock`` on a file beside the database),
    and the next is woken as soon as the previous one is done. Writers that do not take it (a plain session
    that writes) are still kept apart by SQLite itself; this only orders those that do. A filesystem without
    file locks leaves the ordering between processes to SQLite alone.
    """

    def __init__(self, database: str | None) -> None:
        self._threads = threading.Lock()
        self._path = f"{database}-writer" if database and database != ":memory:" else None
        self._fd: int | None = None
        self._pid = 0

    def acquire(self) -> None:
        """Wait for the turn (held by no other thread of this process and no other process)."""
        self._threads.acquire()
        if self._path is None:
            return
        try:
            if self._fd is None or self._pid != os.getpid():
                # A forked child shares its parent's open file, and with it the parent's lock: its own, then.
                self._fd = os.open(self._path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
                self._pid = os.getpid()
            fcntl.flock(self._fd, fcntl.LOCK_EX)
        except OSError as exc:
            _LOG.warning("event=sqlite_writer_lock_unavailable path=%s error=%r", self._path, str(exc))
            if self._fd is not None and self._pid == os.getpid():
                os.close(self._fd)
            self._path = self._fd = None

    def release(self) -> None:
        """Give the turn to the next writer."""
        try:
            if self._fd is not None and self._pid == os.getpid():
                fcntl.flock(self._fd, fcntl.LOCK_UN)
        finally:
            self._threads.release()


class Database:
    """One engine and its session factory."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = make_engine(url)
        is_sqlite = self.engine.dialect.name == "sqlite"
        self.sessions = sessionmaker(self.engine, expire_on_commit=False)
        self._writer = sessionmaker(
            self.engine.execution_options(archipel_write=True), expire_on_commit=False
        )
        # SQLite has one writer at a time: writers queue here rather than sleep and retry on SQLITE_BUSY.
        self._write_lock = WriterTurn(self.engine.url.database) if is_sqlite else None
        self._write_engine = self.engine.execution_options(archipel_write=True)
        #: Small write units from many threads, committed together (see :class:`GroupCommit`).
        self.group_commit = GroupCommit(self)

    @property
    def is_sqlite(self) -> bool:
        """True on the embedded SQLite index."""
        return self.engine.dialect.name == "sqlite"

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A session that commits on success and rolls back on error."""
        with self.sessions() as s:
            try:
                yield s
                s.commit()
            except BaseException:
                s.rollback()
                raise

    @contextmanager
    def write(self) -> Iterator[Session]:
        """A session for a read-modify-write transaction: it holds the write lock from its first statement."""
        lock = self._write_lock
        if lock is not None:
            lock.acquire()
        try:
            with self._writer() as s:
                try:
                    yield s
                    s.commit()
                except BaseException:
                    s.rollback()
                    raise
        finally:
            if lock is not None:
                lock.release()

    @contextmanager
    def write_connection(self) -> Iterator[Connection]:
        """A Core connection in a write transaction (``BEGIN IMMEDIATE`` on SQLite) that commits on success."""
        lock = self._write_lock
        if lock is not None:
            lock.acquire()
        try:
            with self._write_engine.begin() as conn:
                yield conn
        finally:
            if lock is not None:
                lock.release()

    def dispose(self) -> None:
        self.engine.dispose()


T = TypeVar("T")


class _Unit(Generic[T]):
    """One write unit waiting in a :class:`GroupCommit`, and its outcome once the batch is committed."""

    __slots__ = ("done", "error", "fn", "result")

    def __init__(self, fn: Callable[[Connection], T]) -> None:
        self.fn = fn
        self.done = False
        self.result: T | None = None
        self.error: BaseException | None = None


class GroupCommit:
    """Runs small write units from many threads in shared transactions: one commit for a whole batch.

    A commit on the index is a disk flush (``synchronous=FULL``), and with several DICOM associations
    storing at once the flush, not the SQL, is what each of them waits on. :meth:`run` queues a unit; the
    first waiting thread becomes the committer, runs every queued unit in one transaction (each inside a
    savepoint, so a unit that raises is undone alone and its exception goes back to its own caller) and
    commits once. Every caller returns only after the commit that holds its unit, or raises if it failed.
    There is no background thread: when nothing else is queued a unit is committed at once, by its caller.
    """

    def __init__(self, db: Database, max_batch: int = 64) -> None:
        self.db = db
        self.max_batch = max_batch
        self._queue: list[_Unit[Any]] = []
        self._committing = False
        self._cond = threading.Condition()

    def run(self, fn: Callable[[Connection], T]) -> T:
        """Run ``fn`` in a write transaction and return its result once that transaction is committed.

        ``fn`` may share the transaction with other units, so it must leave the connection usable when it
        raises (plain SQL statements; no commit or rollback of its own).
        """
        unit: _Unit[T] = _Unit(fn)
        with self._cond:
            self._queue.append(unit)
        while True:
            with self._cond:
                while not unit.done and self._committing:
                    self._cond.wait()
                if unit.done:
                    break
                self._committing = True
                batch, self._queue = self._queue[: self.max_batch], self._queue[self.max_batch :]
            try:
                self._commit(batch)
            finally:
                with self._cond:
                    self._committing = False
                    self._cond.notify_all()
        if unit.error is not None:
            raise unit.error
        return unit.result  # type: ignore[return-value]

    def _commit(self, batch: list[_Unit[Any]]) -> None:
        failure: BaseException | None = None
        try:
            with self.db.write_connection() as conn:
                for unit in batch:
                    if len(batch) == 1:
                        unit.result = unit.fn(conn)
                        continue
                    savepoint = conn.begin_nested()
                    try:
                        unit.result = unit.fn(conn)
                    except Exception as exc:
                        unit.error = exc
                        savepoint.rollback()
                    else:
                        savepoint.commit()
        except BaseException as exc:
            failure = exc
        with self._cond:
            for unit in batch:
                if failure is not None and unit.error is None:
                    unit.error = failure
                unit.done = True


_lock = threading.Lock()
_databases: dict[str, Database] = {}


def get_database(url: str) -> Database:
    """The process-wide :class:`Database` for ``url`` (one engine per URL)."""
    with _lock:
        db = _databases.get(url)
        if db is None:
            db = _databases[url] = Database(url)
        return db


def forget_databases() -> None:
    """Dispose of every engine (tests, and child processes after fork)."""
    with _lock:
        for db in _databases.values():
            db.dispose()
        _databases.clear()
