"""What every ``archipel`` subcommand shares: the Typer app, consoles, the ``--data`` option, runtime set-up."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console

if TYPE_CHECKING:
    from archipel.platform.runtime import Runtime

app = typer.Typer(help="Archipel regional imaging platform.", no_args_is_help=True, add_completion=False)

console = Console(stderr=True)
out = Console(soft_wrap=True)

DataOpt = Annotated[
    Path | None,
    typer.Option("--data", help="Data directory (default: $ARCHIPEL_DATA, else ./var).", show_default=False),
]


def setup(data: Path | None, **overrides: Any) -> Runtime:
    """Apply the command-line settings, bring the schema up to date, and return the runtime."""
    # Imported here, not at the top: settings and the runtime pull in pydantic-settings and SQLAlchemy (about
    # half a second), which ``archipel --help`` and the commands that need no database should not pay for.
    from archipel.migrations import ensure_current
    from archipel.platform import settings as settings_mod
    from archipel.platform.runtime import get_runtime, reset_runtime

    values = {k: v for k, v in overrides.items() if v is not None}
    if data is not None:
        values["data_dir"] = data
    base = settings_mod.Settings()
    settings_mod.configure(**{**base.model_dump(), **values})
    reset_runtime()
    rt = get_runtime()
    os.environ["ARCHIPEL_DATA"] = str(rt.settings.data_dir.resolve())
    ensure_current(rt.settings.effective_database_url)
    return rt


@contextmanager
def counted_progress(label: str, total: int) -> Iterator[tuple[Callable[..., None], Callable[[int], None]]]:
    """A progress bar over ``total`` items with count, percentage, rate per second and time left.

    Yields ``tick`` (counts one more item; takes and ignores any arguments, so it can be a loader's per-line
    callback) and ``finish`` (sets the count reached, e.g. when lines were skipped)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    columns = (
        TextColumn(f"[bold]{label}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.percentage:>3.0f}%"),
        TextColumn("{task.fields[rate]:.0f}/s"),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=console, transient=False) as bar:
        task = bar.add_task(label, total=total, rate=0.0)

        def tick(*_args: Any) -> None:
            bar.advance(task)
            t = bar.tasks[task]
            bar.update(task, rate=(t.completed / t.elapsed) if t.elapsed else 0.0)

        def finish(completed: int) -> None:
            bar.update(task, completed=completed)

        yield tick, finish


def configure_logging(level: int = logging.INFO) -> None:
    logging.basicConfig(
        level=level, format="%(asctime)s %(levelname)s %(name)s %(message)s", stream=sys.stderr
    )
    logging.getLogger("pynetdicom").setLevel(logging.WARNING)
