"""HL7 v2 commands (``archipel hl7 …``): the MLLP listener, the registered senders, the dead-letter list."""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from archipel.cli.common import DataOpt, app, configure_logging, console, out, setup

hl7_app = typer.Typer(
    help="HL7 v2 from the sites' RIS: listener, senders, dead letters.", no_args_is_help=True
)
sources_app = typer.Typer(
    help="Senders (MSH-4 facility, MSH-3 application) and their sites.", no_args_is_help=True
)
dead_app = typer.Typer(help="Messages refused or unreadable, kept to be replayed.", no_args_is_help=True)
hl7_app.add_typer(sources_app, name="sources")
hl7_app.add_typer(dead_app, name="dead-letters")
app.add_typer(hl7_app, name="hl7")


def _operator() -> Any:
    from archipel.platform.authn import Principal

    return Principal(subject=os.environ.get("USER", "cli"), role="admin", kind="user")


@hl7_app.command("listen")
def hl7_listen(
    port: Annotated[int | None, typer.Option("--port", help="MLLP port (setting hl7_port, 2575).")] = None,
    host: Annotated[str | None, typer.Option("--host", help="Bind address (setting hl7_host).")] = None,
    data: DataOpt = None,
) -> None:
    """Run the MLLP listener only (``archipel serve`` runs it beside the DICOM listener)."""
    from archipel.radiology.hl7.listener import start_hl7_listener

    rt = setup(data, hl7_port=port, hl7_host=host)
    configure_logging()
    listener = start_hl7_listener(rt, rt.settings.hl7_host, rt.settings.hl7_port)
    console.print(f"listening for HL7 (MLLP) on {rt.settings.hl7_host}:{listener.port}")
    signal.sigwait({signal.SIGINT, signal.SIGTERM})
    listener.stop()


@sources_app.command("add")
def hl7_sources_add(
    facility: Annotated[str, typer.Argument(help="Sending facility (MSH-4) of the RIS.")],
    site: Annotated[str, typer.Option("--site", help="Site (issuer) whose patient IDs the RIS sends.")],
    application: Annotated[
        str, typer.Option("--application", help="Only this sending application (MSH-3); default: any.")
    ] = "",
    data: DataOpt = None,
) -> None:
    """Accept messages from a RIS, as coming from ``--site``."""
    from archipel.radiology.hl7.sources import SourceError, add_source

    rt = setup(data)
    try:
        src = add_source(rt.db, facility, site, application)
    except (SourceError, ValueError) as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from exc
    console.print(f"HL7 sender {src.facility} {src.application or '(any application)'} -> site {src.site}")


@sources_app.command("list")
def hl7_sources_list(data: DataOpt = None) -> None:
    """List the registered senders."""
    from archipel.radiology.hl7.sources import list_sources

    rt = setup(data)
    table = Table("facility", "application", "site")
    for src in list_sources(rt.db):
        table.add_row(src.facility, src.application or "*", src.site)
    out.print(table)


@dead_app.command("list")
def hl7_dead_list(
    every: Annotated[bool, typer.Option("--all", help="Resolved ones too.")] = False,
    data: DataOpt = None,
) -> None:
    """List the dead letters (open ones by default), newest first."""
    from archipel.radiology.hl7.deadletter import list_dead_letters

    rt = setup(data)
    # One tab-separated line per letter (the reasons are long; a table would cut them), under a header line.
    typer.echo("id\treceived\tfacility\tcontrol_id\ttype\tack\tstate\treplays\treason")
    for d in list_dead_letters(rt.db, None if every else "open"):
        when = f"{d.received_at:%Y-%m-%dT%H:%M:%S}"
        fields = [
            d.id,
            when,
            d.facility,
            d.control_id,
            d.message_type,
            d.ack_code,
            d.state,
            d.replays,
            d.reason,
        ]
        typer.echo("\t".join(str(f) for f in fields))


@dead_app.command("show")
def hl7_dead_show(
    dead_id: Annotated[int, typer.Argument(help="Dead letter id.")], data: DataOpt = None
) -> None:
    """Show a dead letter and its message as received (the reading is audited: it holds patient data)."""
    from archipel.platform import audit
    from archipel.radiology.hl7.deadletter import (
        DeadLetterNotFound,
        get_correction,
        get_dead_letter,
        readable,
    )

    rt = setup(data)
    try:
        letter, raw = get_dead_letter(rt.db, dead_id)
    except DeadLetterNotFound as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from exc
    audit.record(
        rt.db,
        _operator(),
        audit.PATIENT_RECORD,
        "hl7-dead-letter-read",
        obj=f"dead-letter {dead_id}",
        source="cli",
    )
    for key, value in letter.as_dict().items():
        out.print(f"{key}: {value}", markup=False, highlight=False)
    out.print("message:")
    out.print(readable(raw), markup=False, highlight=False)
    corrected = get_correction(rt.db, dead_id)
    if corrected is not None:
        out.print("corrected message:")
        out.print(readable(corrected), markup=False, highlight=False)


def _correct(rt: Any, dead_id: int, file: Path) -> None:
    from archipel.radiology.hl7.deadletter import (
        AlreadyResolved,
        CorrectionInvalid,
        DeadLetterNotFound,
        correct,
    )

    text = sys.stdin.read() if str(file) == "-" else file.read_text(encoding="utf-8")
    try:
        letter = correct(rt.db, dead_id, text, _operator(), source="cli")
    except (DeadLetterNotFound, AlreadyResolved, CorrectionInvalid) as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from exc
    console.print(
        f"dead letter {dead_id} corrected by {letter.corrected_by}; the message as received is kept"
    )


FileOpt = Annotated[
    Path | None,
    typer.Option(
        "--file",
        help="The corrected message, as `show` prints it (segments on their own lines, UTF-8; - for stdin).",
    ),
]


@dead_app.command("correct")
def hl7_dead_correct(
    dead_id: Annotated[int, typer.Argument(help="Dead letter id.")],
    file: Annotated[
        Path,
        typer.Option(
            "--file",
            help="The corrected message, as `show` prints it (segments on their own lines, UTF-8; - for stdin).",
        ),
    ],
    data: DataOpt = None,
) -> None:
    """Correct a dead letter's message before replaying it (audited; the message as received is kept)."""
    _correct(setup(data), dead_id, file)


@dead_app.command("replay")
def hl7_dead_replay(
    dead_id: Annotated[int, typer.Argument(help="Dead letter id.")],
    file: FileOpt = None,
    data: DataOpt = None,
) -> None:
    """Apply a dead letter again (after the fix; its correction if it has one, or ``--file``'s, kept first);
    it is resolved when it is accepted."""
    from archipel.radiology.hl7.deadletter import (
        AlreadyResolved,
        DeadLetterNotFound,
        NeedsCorrection,
        replay,
    )

    rt = setup(data)
    if file is not None:
        _correct(rt, dead_id, file)
    try:
        result = replay(rt, dead_id, _operator().subject)
    except (DeadLetterNotFound, AlreadyResolved, NeedsCorrection) as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from exc
    if result.code != "AA":
        console.print(f"[red]refused again ({result.code}):[/red] {result.reason}")
        raise typer.Exit(1)
    console.print(f"dead letter {dead_id} accepted: {result.reason or 'applied'}")
