"""The ``archipel`` command."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table
from sqlalchemy import select

from archipel.platform import settings as settings_mod
from archipel.platform.runtime import Runtime, get_runtime, reset_runtime

app = typer.Typer(help="Archipel regional imaging platform.", no_args_is_help=True, add_completion=False)
db_app = typer.Typer(help="Database schema.", no_args_is_help=True)
nodes_app = typer.Typer(help="DICOM nodes allowed to talk to us.", no_args_is_help=True)
users_app = typer.Typer(help="Local user accounts.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(nodes_app, name="nodes")
app.add_typer(users_app, name="users")

console = Console(stderr=True)
out = Console(soft_wrap=True)

DataOpt = Annotated[
    Path | None,
    typer.Option("--data", help="Data directory (default: $ARCHIPEL_DATA, else ./var).", show_default=False),
]


def _setup(data: Path | None, **overrides: Any) -> Runtime:
    """Apply the command-line settings, bring the schema up to date, and return the runtime."""
    from archipel.migrations import upgrade

    values = {k: v for k, v in overrides.items() if v is not None}
    if data is not None:
        values["data_dir"] = data
    base = settings_mod.Settings()
    settings_mod.configure(**{**base.model_dump(), **values})
    reset_runtime()
    rt = get_runtime()
    os.environ["ARCHIPEL_DATA"] = str(rt.settings.data_dir.resolve())
    upgrade(rt.settings.effective_database_url)
    return rt


def _logging(level: int = logging.INFO) -> None:
    logging.basicConfig(
        level=level, format="%(asctime)s %(levelname)s %(name)s %(message)s", stream=sys.stderr
    )
    logging.getLogger("pynetdicom").setLevel(logging.WARNING)


@db_app.command("upgrade")
def db_upgrade(data: DataOpt = None) -> None:
    """Create or migrate the index schema (Alembic)."""
    rt = _setup(data)
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
    from archipel.radiology.models import DicomNode

    if not 0 < len(ae_title.strip()) <= 16 or "\\" in ae_title:
        raise typer.BadParameter("an AE title has 1 to 16 characters and no backslash", param_hint="AE")
    if not 0 < port < 65536:
        raise typer.BadParameter("port must be 1-65535", param_hint="--port")
    rt = _setup(data)
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
    from archipel.radiology.models import DicomNode

    rt = _setup(data)
    table = Table("AE title", "host", "port", "site", "scope")
    with rt.db.sessions() as s:
        for n in s.execute(select(DicomNode).order_by(DicomNode.ae_title)).scalars():
            table.add_row(
                n.ae_title, n.host, str(n.port), n.site, "regional" if n.regional_consumer else "site"
            )
    out.print(table)


@users_app.command("create")
def users_create(
    name: Annotated[str, typer.Argument(help="User name.")],
    role: Annotated[str, typer.Option("--role", help="Role of the account.")],
    site: Annotated[str, typer.Option("--site", help="Organisation / site of the user.")] = "",
    password_stdin: Annotated[
        bool, typer.Option("--password-stdin", help="Read the password from stdin.")
    ] = False,
    data: DataOpt = None,
) -> None:
    """Create a local account; prints a generated password once unless one is given on stdin."""
    from archipel.platform.authn import create_user

    rt = _setup(data)
    password = sys.stdin.readline().rstrip("\r\n") if password_stdin else None
    try:
        with rt.db.write() as s:
            generated = create_user(s, name, role, password, site)
    except ValueError as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from exc
    console.print(f"user {name} created with role {role}")
    if password is None:
        out.print(f"password: {generated}")


@app.command("import")
def import_cmd(
    paths: Annotated[list[Path], typer.Argument(help="Files, folders, ZIP archives or DICOMDIRs.")],
    issuer: Annotated[str, typer.Option("--issuer", help="Issuer (site) of patient IDs without one.")] = "",
    data: DataOpt = None,
) -> None:
    """Import DICOM files into the archive, with a progress bar and a summary of what was refused."""
    from archipel.platform import audit
    from archipel.platform.authn import Principal
    from archipel.radiology.archive import Archive
    from archipel.radiology.importer import count_items, import_paths

    rt = _setup(data)
    archive = Archive(rt.db, rt.blobs, rt.settings.duplicate_policy)
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

        summary = import_paths(archive, paths, default_issuer=issuer, source="cli", on_item=tick)
    user = os.environ.get("USER", "cli")
    audit.record(
        rt.db,
        Principal(subject=user, role="operator"),
        audit.IMPORT,
        "import",
        detail=f"stored={summary.counts['stored']} refused={len(summary.refused)}",
    )
    counts = summary.counts
    out.print(
        f"stored {counts['stored']}, already stored {counts['already-stored']}, "
        f"replaced {counts['replaced']}, skipped {counts['skipped']}, refused {len(summary.refused)}"
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

    rt = _setup(data)
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


def _exit_with_parent(parent: int) -> None:
    """Leave when the ``serve`` process that started us is gone (even after a SIGKILL)."""
    import threading
    import time

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1)
        os._exit(0)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def _load_tasks() -> None:
    import archipel.radiology.tasks  # noqa: F401


@app.command("worker")
def worker(
    queues: Annotated[
        str, typer.Option("--queues", help="Comma-separated queues.")
    ] = "ingest,wsi,prefetch,notify",
    concurrency: Annotated[int, typer.Option("--concurrency")] = 2,
    data: DataOpt = None,
) -> None:
    """Run a Celery worker for the job queues."""
    from archipel.platform.jobs import celery_app, reset_celery

    _setup(data)
    _logging()
    if os.environ.get("ARCHIPEL_PARENT_PID"):
        _exit_with_parent(int(os.environ["ARCHIPEL_PARENT_PID"]))
    reset_celery()
    _load_tasks()
    celery = celery_app()
    celery.worker_main(
        [
            "worker",
            f"--queues={queues}",
            f"--concurrency={concurrency}",
            "--pool=threads",
            "--loglevel=INFO",
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
        ]
    )


@app.command("dicom")
def dicom_cmd(
    dicom_port: Annotated[int | None, typer.Option("--dicom-port")] = None,
    aet: Annotated[str | None, typer.Option("--aet")] = None,
    data: DataOpt = None,
) -> None:
    """Run a DICOM listener only."""
    from archipel.radiology.archive import Archive
    from archipel.radiology.dimse.listener import start_listener

    rt = _setup(data, dicom_port=dicom_port, ae_title=aet)
    _logging()
    Archive(rt.db, rt.blobs).sweep_orphans(rt.settings.orphan_grace_seconds)
    listener = start_listener(rt, rt.settings.dicom_host, rt.settings.dicom_port)
    signal.sigwait({signal.SIGINT, signal.SIGTERM})
    listener.stop()


@app.command("api")
def api_cmd(
    http_port: Annotated[int | None, typer.Option("--http-port")] = None,
    workers: Annotated[int, typer.Option("--workers")] = 1,
    data: DataOpt = None,
) -> None:
    """Run the HTTP API only."""
    import uvicorn

    rt = _setup(data, http_port=http_port)
    _logging()
    uvicorn.run(
        "archipel.app:create_app",
        factory=True,
        host=rt.settings.http_host,
        port=rt.settings.http_port,
        workers=workers,
        log_level="info",
    )


@app.command("serve")
def serve(
    http_port: Annotated[int | None, typer.Option("--http-port", help="HTTP port (8000).")] = None,
    dicom_port: Annotated[int | None, typer.Option("--dicom-port", help="DICOM port (11112).")] = None,
    aet: Annotated[str | None, typer.Option("--aet", help="Our AE title (ARCHIPEL).")] = None,
    host: Annotated[str | None, typer.Option("--host", help="HTTP bind address.")] = None,
    data: DataOpt = None,
) -> None:
    """Run everything on one machine: HTTP API, DICOM listener and a job worker."""
    import uvicorn

    from archipel.app import create_app
    from archipel.radiology.archive import Archive
    from archipel.radiology.dimse.listener import start_listener

    rt = _setup(data, http_port=http_port, dicom_port=dicom_port, ae_title=aet, http_host=host)
    _logging()
    swept = Archive(rt.db, rt.blobs).sweep_orphans(rt.settings.orphan_grace_seconds)
    log = logging.getLogger("archipel.serve")
    log.info("event=recovery_sweep orphans_removed=%d", swept)
    env = {
        **os.environ,
        "ARCHIPEL_DATA": str(rt.settings.data_dir.resolve()),
        "ARCHIPEL_PARENT_PID": str(os.getpid()),
    }
    worker_proc = subprocess.Popen(
        [sys.executable, "-m", "archipel.cli", "worker", "--concurrency", "2"], env=env
    )
    listener = start_listener(rt, rt.settings.dicom_host, rt.settings.dicom_port)
    try:
        uvicorn.run(create_app(), host=rt.settings.http_host, port=rt.settings.http_port, log_level="warning")
    finally:
        listener.stop()
        worker_proc.terminate()
        try:
            worker_proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            worker_proc.kill()


@app.command("demo")
def demo(data: DataOpt = None) -> None:
    """Load demo data (sites, patients, CT/MR/MG studies) and create demo accounts."""
    from archipel.demo import load_demo

    rt = _setup(data)
    load_demo(rt, out)


def main() -> None:
    """Entry point of the ``archipel`` command."""
    app()


if __name__ == "__main__":
    main()
