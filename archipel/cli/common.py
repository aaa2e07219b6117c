"""What every ``archipel`` subcommand shares: the Typer app, consoles, the ``--data`` option, runtime set-up."""

from __future__ import annotations

import logging
import os
import sys
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


def configure_logging(level: int = logging.INFO) -> None:
    logging.basicConfig(
        level=level, format="%(asctime)s %(levelname)s %(name)s %(message)s", stream=sys.stderr
    )
    logging.getLogger("pynetdicom").setLevel(logging.WARNING)
