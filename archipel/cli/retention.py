"""Retention commands (``archipel retention …``): legal holds, and the run that deletes what has expired."""

from __future__ import annotations

import os
from typing import Annotated

import typer
from rich.table import Table

from archipel.cli.common import DataOpt, app, console, counted_progress, out, setup

retention_app = typer.Typer(
    help="Retention: legal holds, and deletion of what the retention rules let go.", no_args_is_help=True
)
hold_app = typer.Typer(help="Legal holds: a held patient or study is never deleted.", no_args_is_help=True)
retention_app.add_typer(hold_app, name="hold")
app.add_typer(retention_app, name="retention")


def _operator():  # type: ignore[no-untyped-def]
    from archipel.platform.authn import Principal

    return Principal(subject=os.environ.get("USER", "cli"), role="admin", kind="user")


@hold_app.command("add")
def hold_add(
    reason: Annotated[str, typer.Option("--reason", help="Why the record must be kept (required).")],
    patient: Annotated[str, typer.Option("--patient", help="A patient as ISSUER/PatientID.")] = "",
    study: Annotated[str, typer.Option("--study", help="A Study Instance UID.")] = "",
    data: DataOpt = None,
) -> None:
    """Hold a patient (every identity of its master patient) or a study."""
    from archipel.radiology.legal_holds import HoldError, add_hold

    if bool(patient) == bool(study):
        console.print("[red]error:[/red] give one of --patient or --study")
        raise typer.Exit(2)
    rt = setup(data)
    try:
        hold = add_hold(rt.db, "patient" if patient else "study", patient or study, reason, _operator())
    except HoldError as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from exc
    out.print(f"hold {hold.id} on {hold.scope} {hold.target}")


@hold_app.command("remove")
def hold_remove(
    hold_id: Annotated[int, typer.Argument(help="The hold's number (see `retention hold list`).")],
    reason: Annotated[str, typer.Option("--reason", help="Why the hold is lifted (required).")],
    data: DataOpt = None,
) -> None:
    """Lift a hold (it stays listed with --all, with who lifted it and why)."""
    from archipel.radiology.legal_holds import HoldError, lift_hold

    rt = setup(data)
    try:
        hold = lift_hold(rt.db, hold_id, reason, _operator())
    except HoldError as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from exc
    out.print(f"hold {hold.id} on {hold.scope} {hold.target} lifted")


@hold_app.command("list")
def hold_list(
    all_: Annotated[bool, typer.Option("--all", help="Lifted holds too.")] = False,
    data: DataOpt = None,
) -> None:
    """The active holds (with --all, the lifted ones too)."""
    from archipel.radiology.legal_holds import list_holds

    rt = setup(data)
    table = Table("id", "scope", "target", "reason", "by", "since", "lifted")
    for h in list_holds(rt.db, include_lifted=all_):
        lifted = f"{h.lifted_at:%Y-%m-%d} by {h.lifted_by}" if h.lifted_at else ""
        table.add_row(
            str(h.id), h.scope, h.target, h.reason, h.created_by, f"{h.created_at:%Y-%m-%d}", lifted
        )
    out.print(table)


@retention_app.command("run")
def run_cmd(
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="List what has expired; delete nothing.")
    ] = False,
    data: DataOpt = None,
) -> None:
    """Delete every study, document and rejected instance whose retention has expired and that no hold keeps.

    Each deletion is audited with the rule applied; blobs go only when nothing references them any more."""
    from archipel.platform.retention_rules import RetentionRuleError
    from archipel.radiology.retention import run_retention
    from archipel.radiology.retention_tasks import blob_forgetter, plan_now

    rt = setup(data)
    try:
        plan = plan_now(rt)
    except RetentionRuleError as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from exc
    table = Table("kind", "object", "patient", "rule", "expired on", "held")
    for item in [*plan.due, *plan.held]:
        table.add_row(
            item.kind,
            item.ident,
            item.patient,
            item.rule,
            item.expired_on.isoformat(),
            "held" if item.held else "",
        )
    out.print(table)
    out.print(f"{len(plan.due)} expired and due, {len(plan.held)} expired but held")
    if dry_run or not plan.due:
        if dry_run:
            out.print("dry run: nothing deleted")
        return
    with counted_progress("deleting", len(plan.due)) as (tick, _finish):
        summary = run_retention(rt.db, blob_forgetter(rt), plan.due, _operator(), progress=tick)
    d = summary.deleted
    out.print(
        f"deleted {d['study']} studies ({summary.instances} instances), {d['document']} documents, "
        f"{d['rejected']} rejected instances; {summary.blobs_deleted} blobs removed, "
        f"{summary.blobs_kept_shared} kept (still referenced); {len(plan.held)} held; {summary.failed} failed"
    )
    if summary.failed:
        raise typer.Exit(1)
