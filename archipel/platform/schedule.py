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
    """One recurring task: its Celery name, queue and period in seconds; ``setting``, when given, names the
    setting that overrides the period (``notify_sweep_seconds``)."""

    name: str
    task: str
    queue: str
    seconds: float
    setting: str = ""

    def period(self, settings: object | None = None) -> float:
        """The period in seconds, from ``settings`` when they set one."""
        value = getattr(settings, self.setting, None) if settings is not None and self.setting else None
        return float(value) if value else self.seconds


_registry: dict[str, Periodic] = {}


def every(seconds: float, task: str, *, queue: str, name: str = "", setting: str = "") -> Periodic:
    """Run the Celery task named ``task`` on ``queue`` every ``seconds`` (or every ``settings.<setting>`` when that
    is set); registering the same name again replaces the earlier entry (modules are imported more than once
    under tests)."""
    if seconds <= 0:
        raise ValueError(f"a period must be positive, got {seconds!r} s for {task}")
    entry = Periodic(name or task, task, queue, float(seconds), setting)
    _registry[entry.name] = entry
    return entry


def registered() -> list[Periodic]:
    """The registered periodic tasks, by name."""
    return [_registry[k] for k in sorted(_registry)]


def beat_schedule(settings: object | None = None) -> dict[str, dict[str, Any]]:
    """Celery's ``beat_schedule`` for the registered tasks, with the periods ``settings`` override."""
    return {
        p.name: {"task": p.task, "schedule": p.period(settings), "options": {"queue": p.queue}}
        for p in registered()
    }
