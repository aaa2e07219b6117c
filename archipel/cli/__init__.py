"""The ``archipel`` command: one Typer app, its subcommands grouped by concern in this package."""

from __future__ import annotations

from archipel.cli import (  # noqa: F401  (they register their commands)
    accounts,
    archive,
    audit,
    documents,
    export,
    hl7,
    identity,
    mammo,
    notify,
    probes,
    retention,
    services,
    storage,
    tiles,
    tumorboard,
    wsi,
    wsi_convert,
)
from archipel.cli.common import app


def main() -> None:
    """Entry point of the ``archipel`` command."""
    app()
