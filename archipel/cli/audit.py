"""Audit trail commands (``archipel audit …``): verify, checkpoint, purge, export."""

from __future__ import annotations

import csv
import json
import os
import sys
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from archipel.cli.common import DataOpt, app, console, out, setup

audit_app = typer.Typer(
    help="Audit trail: verify the chain and its signed checkpoints, sign a checkpoint, purge, export.",
    no_args_is_help=True,
)
app.add_typer(audit_app, name="audit")


def _operator(role: str = "auditor"):  # type: ignore[no-untyped-def]
    from archipel.platform.authn import Principal

    return Principal(subject=os.environ.get("USER", "cli"), role=role, kind="user")


@audit_app.command("verify")
def verify_cmd(data: DataOpt = None) -> None:
    """Check the hash chain, every checkpoint's signature, and that each signed head is in the chain.

    Exit 0 when intact, 1 when something is wrong (each problem is printed with its event or checkpoint).
    """
    from archipel.platform import audit
    from archipel.platform.audit_signing import SigningKeyError, trusted_keys
    from archipel.platform.audit_verify import verify_trail

    rt = setup(data)
    try:
        keys = trusted_keys(rt.settings)
    except SigningKeyError as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from exc
    with rt.db.sessions() as s:
        report = verify_trail(s, keys)
    span = f"events {report.first_event}-{report.last_event}" if report.events else "no events"
    out.print(f"checked {report.events} events ({span}) and {report.checkpoints} checkpoints")
    if report.anchor is not None:
        out.print(f"chain starts at signed retention anchor (checkpoint {report.anchor})")
    if report.unsigned_tail:
        since = (
            f" (last checkpoint {report.last_checkpoint_at:%Y-%m-%d %H:%M:%S} UTC)"
            if report.last_checkpoint_at
            else ""
        )
        out.print(
            f"{report.unsigned_tail} events after the last checkpoint{since} are protected by the chain only"
        )
    if report.intact:
        out.print("audit trail intact")
        return
    for problem in report.problems:
        out.print(f"BROKEN {problem}")
    audit.record(
        rt.db,
        _operator(),
        audit.SECURITY_ALERT,
        "verify:audit",
        outcome=audit.FAILURE,
        purpose=audit.AUDIT_REVIEW,
        detail="; ".join(str(p) for p in report.problems[:20]),
    )
    raise typer.Exit(1)


@audit_app.command("checkpoint")
def checkpoint_cmd(data: DataOpt = None) -> None:
    """Sign a checkpoint of the chain's head now (``archipel serve`` also does it regularly)."""
    from archipel.platform.audit_checkpoints import write_checkpoint
    from archipel.platform.audit_signing import SigningKeyError

    rt = setup(data)
    try:
        c = write_checkpoint(rt.db, rt.settings)
    except SigningKeyError as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from exc
    if c is None:
        out.print("nothing to sign: no events, or the head is already signed")
    else:
        out.print(f"checkpoint {c.id}: event {c.event_id} hash {c.event_hash} signed by key {c.key_id}")


@audit_app.command("public-key")
def public_key_cmd(data: DataOpt = None) -> None:
    """Print the checkpoint signing key's public half (for ``audit_trusted_keys`` on another machine)."""
    from archipel.platform.audit_signing import key_id, load_signing_key, public_text

    rt = setup(data)
    key = load_signing_key(rt.settings)
    assert key is not None
    out.print(f"{public_text(key.public_key())}  key_id={key_id(key.public_key())}")


@audit_app.command("purge")
def purge_cmd(data: DataOpt = None) -> None:
    """Delete events older than the retention (``ARCHIPEL_AUDIT_RETENTION_DAYS``) and sign an anchor so the
    kept chain still verifies. Refused (exit 1) when the chain is broken."""
    from archipel.platform import audit
    from archipel.platform.audit_checkpoints import PurgeRefused, purge

    rt = setup(data)
    try:
        result = purge(rt.db, rt.settings)
    except PurgeRefused as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from exc
    audit.record(
        rt.db,
        _operator("admin"),
        audit.AUDIT_LOG_USED,
        "delete:audit",
        purpose=audit.OPERATIONS,
        detail=f"purged={result.purged} cutoff={result.cutoff.isoformat()}",
    )
    if result.anchor is None:
        out.print(
            f"nothing older than {result.cutoff:%Y-%m-%d} (retention {rt.settings.audit_retention_days} days)"
        )
    else:
        out.print(
            f"purged {result.purged} events older than {result.cutoff:%Y-%m-%d}; "
            f"chain anchored by checkpoint {result.anchor.id} at event {result.anchor.event_id}"
        )


class ExportFormat(StrEnum):
    """Formats of ``archipel audit export``."""

    fhir = "fhir"
    csv = "csv"


def _when(value: str | None, option: str) -> datetime | None:
    if not value:
        return None
    from datetime import UTC

    try:
        t = datetime.fromisoformat(value)
    except ValueError as exc:
        raise typer.BadParameter(f"not an ISO date or date-time: {value!r}", param_hint=option) from exc
    return t if t.tzinfo else t.replace(tzinfo=UTC)


@audit_app.command("export")
def export_cmd(
    fmt: Annotated[
        ExportFormat, typer.Option("--format", help="fhir (a Bundle of AuditEvents) or csv.")
    ] = ExportFormat.fhir,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="File to write (default: stdout).")
    ] = None,
    patient: Annotated[str, typer.Option("--patient", help="ISSUER/PatientID.")] = "",
    master: Annotated[int | None, typer.Option("--master", help="Master patient id.")] = None,
    actor: Annotated[str, typer.Option("--actor")] = "",
    since: Annotated[str | None, typer.Option("--since", help="ISO date or date-time (UTC).")] = None,
    until: Annotated[str | None, typer.Option("--until", help="ISO date or date-time (UTC).")] = None,
    data: DataOpt = None,
) -> None:
    """Export audit events as FHIR R4 AuditEvents (IHE BALP shape, a collection Bundle) or CSV."""
    from archipel.platform import audit
    from archipel.platform.audit_fhir import CSV_COLUMNS, Server, csv_row, to_fhir
    from archipel.platform.audit_search import AuditFilter, stream

    start, end = _when(since, "--since"), _when(until, "--until")
    if start and end and end <= start:
        raise typer.BadParameter("--until must be after --since", param_hint="--until")
    rt = setup(data)
    locals_: tuple[str, ...] = ()
    if master is not None:
        from archipel.platform.identity.service import locals_of

        locals_ = tuple(f"{i}/{lid}" for i, lid in locals_of(rt.db, master))
    f = AuditFilter(
        patient=patient, master=master, master_locals=locals_, actor=actor, since=start, until=end
    )
    sink = output.open("w", newline="") if output else sys.stdout
    n = 0
    try:
        with rt.db.sessions() as s:
            if fmt is ExportFormat.csv:
                writer = csv.writer(sink)
                writer.writerow(CSV_COLUMNS)
                for e in stream(s, f):
                    writer.writerow(csv_row(e))
                    n += 1
            else:
                # Streamed entry by entry: an export of years of events must not be held in memory.
                server = Server(rt.settings.ae_title, rt.settings.http_host)
                sink.write('{"resourceType": "Bundle", "type": "collection", "entry": [')
                for e in stream(s, f):
                    sink.write(("," if n else "") + "\n" + json.dumps({"resource": to_fhir(e, server)}))
                    n += 1
                sink.write("\n]}\n")
    finally:
        if output:
            sink.close()
    audit.record(
        rt.db,
        _operator(),
        audit.AUDIT_LOG_USED,
        "export:audit",
        patient=patient,
        master=master,
        purpose=audit.AUDIT_REVIEW,
        detail=f"format={fmt.value} events={n}",
    )
    console.print(f"exported {n} events as {fmt.value}")
