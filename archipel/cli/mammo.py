"""Screening commands: ``archipel mammo import`` (a programme's history from CSV), ``archipel mammo forms import``
(L1 forms for live intake from CSV) and ``archipel mammo metrics``."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path
from typing import Annotated

import typer

from archipel.cli.common import DataOpt, app, console, counted_progress, out, setup

mammo_app = typer.Typer(
    help="Screening mammography: import history, L1 forms for live intake, programme metrics.",
    no_args_is_help=True,
)
app.add_typer(mammo_app, name="mammo")

PROTOCOLS = ("fr-depistage", "eu-blinded")


def _fail(message: str) -> typer.Exit:
    console.print(f"[red]error:[/red] {message}")
    return typer.Exit(2)


def _date(value: str | None, name: str) -> date | None:
    if not value:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise _fail(f"{name} {value!r} is not a date (YYYY-MM-DD)") from None


@mammo_app.command("import")
def import_cmd(
    file: Annotated[Path, typer.Argument(help="CSV with the columns of docs/mammo.md.")],
    protocol: Annotated[str, typer.Option("--protocol", help="fr-depistage or eu-blinded.")],
    programme: Annotated[
        str, typer.Option("--programme", help="Programme code (default: the protocol).")
    ] = "",
    data: DataOpt = None,
) -> None:
    """Load historical episodes (two reads, decision, outcome); bad lines are listed with their reason."""
    from archipel.mammo.history import HistoryError, count_rows, import_history

    if protocol not in PROTOCOLS:
        raise _fail(f"unknown protocol {protocol!r}; choose one of: {', '.join(PROTOCOLS)}")
    if not file.is_file():
        raise _fail(f"no file {file}")
    rt = setup(data)
    try:
        with counted_progress("episodes", count_rows(file)) as (tick, _finish):
            summary = import_history(rt.db, file, programme or protocol, protocol, on_line=tick)
    except (HistoryError, UnicodeDecodeError) as exc:
        raise _fail(str(exc)) from exc
    out.print(f"imported {summary.imported}, refused {len(summary.refused)}")
    for line, reason in summary.refused:
        out.print(f"  line {line}: {reason}")
    if summary.refused:
        raise typer.Exit(1)


@mammo_app.command("metrics")
def metrics_cmd(
    programme: Annotated[str, typer.Option("--programme", help="Programme code.")] = "",
    start: Annotated[str | None, typer.Option("--from", help="First screening date (YYYY-MM-DD).")] = None,
    end: Annotated[str | None, typer.Option("--to", help="Last screening date (YYYY-MM-DD).")] = None,
    fmt: Annotated[str, typer.Option("--format", help="json or csv.")] = "json",
    data: DataOpt = None,
) -> None:
    """Print the programme's figures (recall rate, cancer detection rate, PPV, L2-only share, CTI rate, interval
    cancers, delays, and one entry per reader)."""
    from sqlalchemy import select

    from archipel.mammo import metrics, metrics_export
    from archipel.mammo.models import Programme

    if fmt not in ("json", "csv"):
        raise _fail("--format is json or csv")
    lo, hi = _date(start, "--from"), _date(end, "--to")
    if lo and hi and hi < lo:
        raise _fail("--to is before --from")
    rt = setup(data)
    with rt.db.sessions() as s:
        progs = list(s.execute(select(Programme).order_by(Programme.id)).scalars())
        chosen = [p for p in progs if p.code == programme] if programme else progs
        if not chosen:
            raise _fail(f"no programme {programme!r}" if programme else "no screening programme yet")
        if len(chosen) > 1:
            raise _fail(
                f"several programmes; choose one with --programme: {', '.join(p.code for p in chosen)}"
            )
        figures = metrics.programme_metrics(s, chosen[0], lo, hi)
    if fmt == "csv":
        out.print(metrics_export.as_csv(figures), end="", markup=False, highlight=False)
    else:
        out.print_json(json.dumps(figures))


@mammo_app.command("deadlines")
def deadlines_cmd(
    programme: Annotated[str, typer.Option("--programme", help="Programme code.")] = "",
    state: Annotated[str, typer.Option("--state", help="fine, at_risk or late (all when empty).")] = "",
    warning_days: Annotated[
        int, typer.Option("--warning-days", help="Days before the deadline that are at risk.")
    ] = 3,
    fmt: Annotated[str, typer.Option("--format", help="table or json.")] = "table",
    data: DataOpt = None,
) -> None:
    """List the episodes whose results letter is not sent yet, most urgent first: due date, days left (negative
    once late) and the stage each waits at."""
    import os

    from sqlalchemy import select

    from archipel.mammo import deadlines
    from archipel.mammo.models import Programme
    from archipel.platform import audit
    from archipel.platform.authn import Principal
    from archipel.platform.db import utcnow

    if fmt not in ("table", "json"):
        raise _fail("--format is table or json")
    if state and state not in deadlines.STATES:
        raise _fail(f"--state is one of {', '.join(deadlines.STATES)}")
    if warning_days < 0:
        raise _fail("--warning-days is 0 or more")
    rt = setup(data)
    with rt.db.sessions() as s:
        progs = list(s.execute(select(Programme).order_by(Programme.id)).scalars())
        chosen = [p for p in progs if p.code == programme] if programme else progs
        if not chosen:
            raise _fail(f"no programme {programme!r}" if programme else "no screening programme yet")
        rows = [
            {"programme": prog.code, **due.row()}
            for prog in chosen
            for due in deadlines.watch(s, prog, utcnow().date(), warning_days, state)
        ]
    # The list names women: the operator (an administrator at the command line) reads it on the record.
    audit.record(
        rt.db,
        Principal(subject=os.environ.get("USER", "cli"), role="admin"),
        audit.QUERY,
        "read:screening-programme",
        obj="results-letter deadlines of " + ", ".join(p.code for p in chosen),
        source="cli",
        purpose=audit.OPERATIONS,
        detail=f"{len(rows)} episodes listed from the command line",
    )
    if fmt == "json":
        out.print_json(json.dumps(rows))
        return
    for r in rows:
        out.print(
            f"{r['programme']}\t{r['episode_id']}\t{r['issuer']}/{r['patient_id']}\t{r['screen_date']}\t"
            f"due {r['due']}\t{r['days_left']:+d} d\t{r['state']}\t{r['stage']}",
            markup=False,
            highlight=False,
        )
    late = sum(1 for r in rows if r["state"] == deadlines.LATE)
    risk = sum(1 for r in rows if r["state"] == deadlines.AT_RISK)
    out.print(f"{len(rows)} results not sent: {late} late, {risk} at risk", markup=False, highlight=False)


forms_app = typer.Typer(help="L1 forms of the French programme for live intake.", no_args_is_help=True)
mammo_app.add_typer(forms_app, name="forms")


@forms_app.command("import")
def forms_import_cmd(
    file: Annotated[Path, typer.Argument(help="CSV of L1 forms, with the columns of docs/mammo.md.")],
    programme: Annotated[str, typer.Option("--programme", help="Programme code (fr-depistage protocol).")],
    reader: Annotated[
        str, typer.Option("--reader", help="L1 radiologist of the lines whose l1_reader is empty.")
    ] = "",
    data: DataOpt = None,
) -> None:
    """Load L1 forms for exams arrived or still to come, matched to their episodes and studies as the API does.
    The file loads whole or not at all: bad lines are listed with their reason and nothing is stored."""
    import os

    from archipel.mammo import l1_import
    from archipel.platform import audit
    from archipel.platform.authn import Principal

    if not file.is_file():
        raise _fail(f"no file {file}")
    rt = setup(data)
    try:
        l1_import.check_programme(rt.db, programme)
        forms, refused = l1_import.parse(file.read_bytes(), programme, reader)
        with counted_progress("L1 forms", len(forms)) as (tick, _finish):
            summary = l1_import.load(rt.db, programme, forms, rt.clock(), refused, on_line=tick)
    except l1_import.FormsFileError as exc:
        raise _fail(str(exc)) from exc
    if summary.refused:
        out.print(f"refused {len(summary.refused)} line(s); nothing was loaded")
        for line, reason in summary.refused:
            out.print(f"  line {line}: {reason}", markup=False, highlight=False)
        raise typer.Exit(1)
    operator = Principal(subject=os.environ.get("USER", "cli"), role="operator")
    for form in summary.stored:
        audit.record(
            rt.db,
            operator,
            audit.IMPORT,
            "create:screening-episode",
            patient=form.patient,
            obj=f"L1 form of screening episode {form.episode_id}",
            detail=f"{file.name} line {form.line}",
        )
    waiting = summary.awaiting_images
    out.print(
        f"loaded {len(summary.stored)} L1 form(s): {len(summary.stored) - waiting} with their images, "
        f"{waiting} awaiting images (on the reconciliation list)"
    )
