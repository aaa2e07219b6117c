"""The running platform's shared resources, built once per process from the settings."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from archipel.platform.db import Database, get_database, utcnow
from archipel.platform.settings import Settings, get_settings
from archipel.platform.storage import BlobStore
from archipel.platform.storage_tiers import open_runtime_store


@dataclass
class Runtime:
    """Settings, index database and blob store of this process, and its clock (tests replace it)."""

    settings: Settings
    db: Database
    blobs: BlobStore
    clock: Callable[[], datetime] = field(default=utcnow)


_runtime: Runtime | None = None


def get_runtime() -> Runtime:
    """The process-wide runtime, built from :func:`get_settings` on first use."""
    global _runtime
    if _runtime is None:
        settings = get_settings()
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        _runtime = Runtime(
            settings=settings,
            db=get_database(settings.effective_database_url),
            blobs=open_runtime_store(settings),
        )
    return _runtime


def current_runtime() -> Runtime | None:
    """The process-wide runtime if one was built, without building it."""
    return _runtime


def reset_runtime() -> None:
    """Forget the runtime, so the next :func:`get_runtime` reads the settings again."""
    global _runtime
    _runtime = None
