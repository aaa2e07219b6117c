"""Archive commands: schema, DICOM nodes, import and jobs."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from archipel.cli.common import DataOpt, app, console, out, setup

db_app = typer.Typer(help="Database schema.", no_args_is_help=True)
nodes_app = typer.Typer(help="DICOM nodes allowed to talk to us.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(nodes_app, name="nodes")


@db_app.command("upgrade")
def db_upgrade(data: DataOpt = None) -> None:
    """Create or migrate the index schema (Alembic)."""
    rt = setup(data)
    console.print(f"schema up to date on {rt.db.engine.url.render_as_string(hide_password=True)}")


@nodes_app.command("add")
def nodes_add(
    ae_title: Annotated[str, typer.Argument(help="The node's AE title.")],
    host: Annotated[
        str, typer.Option("--host", help="Host name or IP the node connects from and listens on.")
    ],
    site: Annotated[str, typer.Option("--site", help="Site the node belongs to.")],
    port: Annotated[int, typer.Option("--port", help="Port C-MOVE sends to.")] = 104,
    regional: Annotated[bool, typer.Option("--regional", help="Regional consumer: sees every site.")] = False,
    data: DataOpt = None,
) -> None:
    """Register a DICOM node (or update its port, site and scope)."""
    from sqlalchemy import select

    from archipel.radiology.models import DicomNode

    if not 0 < len(ae_title.strip()) <= 16 or "\\" in ae_title:
        raise typer.BadParameter("an AE title has 1 to 16 characters and no backslash", param_hint="AE")
    if not 0 < port < 65536:
        raise typer.BadParameter("port must be 1-65535", param_hint="--port")
    rt = setup(data)
    with rt.db.write() as s:
        node = s.execute(
            select(DicomNode).where(DicomNode.ae_title == ae_title.strip(), DicomNode.host == host)
        ).scalar_one_or_none()
        if node is None:
            node = DicomNode(ae_title=ae_title.strip(), host=host)
            s.add(node)
        node.port, node.site, node.regional_consumer = port, site, regional
    console.print(
        f"node {ae_title} at {host}:{port} (site {site}{', regional' if regional else ''}) registered"
    )


@nodes_app.command("list")
def nodes_list(data: DataOpt = None) -> None:
    """List the registered DICOM nodes."""
    from sqlalchemy import select

    from archipel.radiology.models import DicomNode

    rt = setup(data)
    table = Table("AE title", "host", "port", "site", "scope")
    with rt.db.sessions() as s:
        for n in s.execute(select(DicomNode).order_by(DicomNode.ae_title)).scalars():
            table.add_row(
                n.ae_title, n.host, str(n.port), n.site, "regional" if n.regional_consumer else "site"
            )
    out.print(table)


@app.command("import")
def import_cmd(
    paths: Annotated[
        list[Path],
        typer.Argument(help="Files, folders, ZIP archives, DICOMDIRs or BagIt bags (folder or ZIP)."),
    ],
    issuer: Annotated[str, typer.Option("--issuer", help="Issuer (site) of patient IDs without one.")] = "",
    data: DataOpt = None,
) -> None:
    """Import DICOM files into the archive, with a progress bar and a summary of what was refused."""
    from archipel.mammo import intake as mammo_intake
    from archipel.platform import audit
    from archipel.platform.authn import Principal
    from archipel.radiology.archive import Archive
    from archipel.radiology.importer import count_items, import_paths

    rt = setup(data)
    archive = Archive(rt.db, rt.blobs, rt.settings.duplicate_policy)
    mammo_intake.install()  # imported MG studies are matched to their screening episodes
    existing = [p for p in paths if p.exists()]
    total = count_items(existing)
    columns = (
        TextColumn("[bold]import"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.percentage:>3.0f}%"),
        TextColumn("{task.fields[rate]:.1f} files/s"),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=console, transient=False) as bar:
        task = bar.add_task("import", total=total, rate=0.0)

        def tick(_name: str, _outcome: str) -> None:
            bar.advance(task)
            t = bar.tasks[task]
            bar.update(task, rate=(t.completed / t.elapsed) if t.elapsed else 0.0)

        operator = Principal(subject=os.environ.get("USER", "cli"), role="operator")
        summary = import_paths(
            archive, paths, default_issuer=issuer, source="cli", on_item=tick, actor=operator
        )
    audit.record(
        rt.db,
        operator,
        audit.IMPORT,
        "import",
        detail=f"stored={summary.counts['stored']} refused={len(summary.refused)}",
    )
    counts = summary.counts
    out.print(
        f"stored {counts['stored']}, already stored {counts['already-stored']}, "
        f"replaced {counts['replaced']}, skipped {counts['skipped']}, refused {len(summary.refused)}"
        + (f", documents restored {counts['documents']}" if counts["documents"] else "")
    )
    for item, reason in summary.refused:
        out.print(f"  refused {item}: {reason}")
    if summary.refused:
        raise typer.Exit(1)


@app.command("jobs")
def jobs_cmd(
    job_id: Annotated[str | None, typer.Argument(help="Show one job.")] = None,
    data: DataOpt = None,
) -> None:
    """List recent jobs, or show one, with state and progress."""
    from archipel.platform import jobs

    rt = setup(data)
    rows = [jobs.get_job(rt.db, job_id)] if job_id else jobs.list_jobs(rt.db)
    if job_id and rows[0] is None:
        console.print(f"[red]error:[/red] no job {job_id}")
        raise typer.Exit(2)
    table = Table("id", "kind", "state", "progress", "rate/s", "message", "error")
    for j in rows:
        assert j is not None
        table.add_row(
            j.id,
            j.kind,
            j.state,
            f"{j.percent:.0f}% ({j.done}/{j.total})",
            f"{j.rate:.1f}",
            j.message,
            j.error,
        )
    out.print(table)
