"""A worker's heartbeat file: touched by the Celery consumer while it runs, checked by ``archipel worker-probe``.

The file is touched from the consumer's own timer, so it goes stale when the consumer's loop hangs, and it is
removed when the consumer stops (the broker connection was lost, or the worker shuts down). Checking it costs a
``stat``: cheaper than ``celery inspect ping``, which starts a Celery client and a broadcast round trip through
the broker for every probe of every pod (decision 0042).
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from archipel.platform.settings import Settings

if TYPE_CHECKING:
    from celery import Celery

log = logging.getLogger("archipel.worker")

#: Seconds between two touches of the file.
INTERVAL = 10.0
#: Default age (seconds) past which ``archipel worker-probe`` calls the worker dead: several missed touches.
MAX_AGE = 60.0


def heartbeat_path(settings: Settings) -> Path:
    """The heartbeat file of this process's worker: the setting, else ``DATA/worker.alive``."""
    if settings.worker_heartbeat_file:
        return Path(settings.worker_heartbeat_file)
    return settings.data_dir / "worker.alive"


def touch(path: Path) -> None:
    """Create ``path`` or renew its modification time."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch()


def install(app: Celery, path: Path) -> None:
    """Make the workers of ``app`` keep ``path`` fresh while their consumer runs."""
    # Imported here: ``archipel worker-probe`` reads this module every few seconds and needs no Celery.
    from celery import bootsteps

    class Heartbeat(bootsteps.StartStopStep):
        """Consumer step: touch the file now (the consumer is connected), then every :data:`INTERVAL`."""

        requires = {"celery.worker.consumer.tasks:Tasks"}

        def __init__(self, parent: Any, **kwargs: Any) -> None:
            super().__init__(parent, **kwargs)
            self.timer_ref: Any = None

        def start(self, parent: Any) -> None:
            touch(path)
            self.timer_ref = parent.timer.call_repeatedly(INTERVAL, touch, (path,), priority=10)
            log.info("event=worker_heartbeat_started file=%s", path.name)

        def stop(self, parent: Any) -> None:
            if self.timer_ref is not None:
                self.timer_ref.cancel()
                self.timer_ref = None
            with contextlib.suppress(FileNotFoundError):
                path.unlink()

        def shutdown(self, parent: Any) -> None:
            self.stop(parent)

    app.steps["consumer"].add(Heartbeat)


def problem(path: Path, max_age: float = MAX_AGE, now: float | None = None) -> str | None:
    """Why the worker whose heartbeat is ``path`` is not alive, or ``None`` when its file is fresh."""
    try:
        mtime = os.stat(path).st_mtime
    except FileNotFoundError:
        return "no heartbeat file: the worker's consumer is not running (starting, or lost its broker)"
    age = (time.time() if now is None else now) - mtime
    if age > max_age:
        return f"heartbeat {age:.0f} s old (limit {max_age:g} s): the worker's consumer is stuck"
    return None
