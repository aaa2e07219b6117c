"""Storage lifecycle commands (``archipel storage …``): tier, verify, status."""

from __future__ import annotations

import json
import os
from typing import Annotated

import typer

from archipel.cli.common import DataOpt, app, console, counted_progress, out, setup

storage_app = typer.Typer(
    help="Storage lifecycle: move old blobs to the archive tier, replicate, verify fixity.",
    no_args_is_help=True,
)
app.add_typer(storage_app, name="storage")


def load_blob_sources() -> None:
    """Register the modules' blob references (instances, documents, slide sources) with the lifecycle."""
    import archipel.radiology.blob_sources
    import archipel.wsi.blob_sources  # noqa: F401


def _operator() -> str:
    return f"cli:{os.environ.get('USER', 'operator')}"


@storage_app.command("tier")
def tier_cmd(
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Show what would move; move nothing.")] = False,
    data: DataOpt = None,
) -> None:
    """Copy every blob not yet replicated to the replica store (when one is set), then move the blobs of studies
    older than ``storage_hot_days`` to the archive tier. Safe to interrupt and run again."""
    from archipel.platform.storage_tasks import plan_storage_run, runtime_stores, tier_and_replicate

    rt = setup(data)
    load_blob_sources()
    stores = runtime_stores(rt)
    if stores.archive is None and stores.replica is None:
        console.print("[red]error:[/red] neither archive_blob_url nor replica_blob_url is set: nothing to do")
        raise typer.Exit(2)
    plan = plan_storage_run(rt, dry_run=dry_run)
    if dry_run:
        size = sum(c.size for c in plan.tiering)
        out.print(f"would move {len(plan.tiering)} blobs ({size} bytes) to the archive tier")
    with counted_progress("storage", plan.total) as (tick, _finish):
        job_id, result = tier_and_replicate(rt, plan, dry_run=dry_run, created_by=_operator(), tick=tick)
    tiered = result.get("tiering")
    if tiered is not None and not dry_run:
        out.print(f"moved {tiered['moved']} of {tiered['candidates']} blobs ({tiered['bytes']} bytes), "
                  f"{tiered['failed']} failed")  # fmt: skip
    replicated = result.get("replication")
    if replicated is not None:
        out.print(f"replicated {replicated['replicated']} blobs, {replicated['failed']} failed")
    out.print(f"job {job_id}")
    failed = (tiered or {}).get("failed", 0) + (replicated or {}).get("failed", 0)
    if failed:
        raise typer.Exit(1)


@storage_app.command("verify")
def verify_cmd(
    everything: Annotated[bool, typer.Option("--all", help="Check every stored object now.")] = False,
    sample: Annotated[
        int | None, typer.Option("--sample", min=1, help="Check N objects chosen at random.")
    ] = None,
    data: DataOpt = None,
) -> None:
    """Re-read stored objects, compare each with its SHA-256, repair what is wrong from the other tier or the
    replica. Without options: the objects whose check is oldest, as many as one day of the fixity cycle.

    Exit 0 when every object checked is good (or repaired), 1 when some are still missing or corrupt.
    """
    from archipel.platform import fixity
    from archipel.platform.storage_tasks import verify_as_job

    rt = setup(data)
    load_blob_sources()
    if everything and sample is not None:
        console.print("[red]error:[/red] give --all or --sample, not both")
        raise typer.Exit(2)
    plan = fixity.fixity_plan(
        rt.db, rt.clock(), rt.settings.fixity_cycle_days, everything=everything, sample=sample
    )
    with counted_progress("fixity", len(plan)) as (tick, _finish):
        job_id, summary = verify_as_job(rt, plan, created_by=_operator(), tick=tick)
    out.print(
        f"checked {summary.checked}: ok {summary.ok}, repaired {summary.repaired}, "
        f"missing {summary.missing}, corrupt {summary.corrupt}"
    )
    for problem in summary.problems:
        out.print(f"  {problem['status']:8} {problem['store']}/{problem['key']}: {problem['detail']}")
    out.print(f"job {job_id}")
    if summary.unresolved:
        raise typer.Exit(1)


@storage_app.command("status")
def status_cmd(data: DataOpt = None) -> None:
    """The last fixity run, the objects by status and by tier, and the open problems, as JSON."""
    from archipel.platform import fixity

    rt = setup(data)
    out.print_json(json.dumps(fixity.fixity_status(rt.db)))
