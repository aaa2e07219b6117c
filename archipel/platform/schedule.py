"""Work that recurs: a registry of periodic Celery tasks, run by the beat that ``archipel worker --beat`` (and
``archipel serve``) embeds.

Modules register at import time (``every(30, "platform.notify.deliver", queue="notify")``); the worker builds
Celery's ``beat_schedule`` from the registry once the task modules are loaded. A periodic task must be
idempotent and cheap when there is nothing to do: beat may fire it on two workers, or twice after a restart.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Periodic:
    """One recurring task: its Celery name, queue and period in seconds."""

    name: str
    task: str
    queue: str
    seconds: float


_registry: dict[str, Periodic] = {}


def every(seconds: float, task: str, *, queue: str, name: str = "") -> Periodic:
    """Run the Celery task named ``task`` on ``queue`` every ``seconds``; registering the same name again replaces
    the earlier entry (modules are imported more than once under tests)."""
    if seconds <= 0:
        raise ValueError(f"a period must be positive, got {seconds!r} s for {task}")
    entry = Periodic(name or task, task, queue, float(seconds))
    _registry[entry.name] = entry
    return entry


def registered() -> list[Periodic]:
    """The registered periodic tasks, by name."""
    return [_registry[k] for k in sorted(_registry)]


def beat_schedule() -> dict[str, dict[str, Any]]:
    """Celery's ``beat_schedule`` for the registered tasks."""
    return {p.name: {"task": p.task, "schedule": p.seconds, "options": {"queue": p.queue}} for p in registered()}
