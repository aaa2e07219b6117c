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
patients_app = typer.Typer(help="Patients' access to their results.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(nodes_app, name="nodes")
app.add_typer(users_app, name="users")
app.add_typer(patients_app, name="patients")

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
    totp: Annotated[
        bool, typer.Option("--totp", help="Enrol a TOTP second factor and print its otpauth:// URI once.")
    ] = False,
    data: DataOpt = None,
) -> None:
    """Create a local account; prints a generated password once unless one is given on stdin."""
    from archipel.platform import mfa
    from archipel.platform.authn import create_user, find_user

    rt = _setup(data)
    password = sys.stdin.readline().rstrip("\r\n") if password_stdin else None
    uri = ""
    try:
        with rt.db.write() as s:
            generated = create_user(s, name, role, password, site)
            user = find_user(s, name)
            if totp and user is not None:
                uri = mfa.enrol(user, rt.settings.signing_key(), rt.settings.totp_issuer).uri
    except ValueError as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from exc
    console.print(f"user {name} created with role {role}")
    if password is None:
        out.print(f"password: {generated}")
    if uri:
        out.print(f"totp: {uri}")
    elif rt.settings.require_totp:
        console.print(f"this account needs TOTP to log in: archipel users totp-enrol {name}")


@users_app.command("totp-enrol")
def users_totp_enrol(
    name: Annotated[str, typer.Argument(help="User name.")],
    data: DataOpt = None,
) -> None:
    """Give an account a new TOTP secret (replacing any previous one); prints its otpauth:// URI once."""
    from archipel.platform import mfa
    from archipel.platform.authn import find_user

    rt = _setup(data)
    with rt.db.write() as s:
        user = find_user(s, name)
        if user is None:
            console.print(f"[red]error:[/red] no user {name!r}")
            raise typer.Exit(2)
        uri = mfa.enrol(user, rt.settings.signing_key(), rt.settings.totp_issuer).uri
    out.print(f"totp: {uri}")


@users_app.command("revoke")
def users_revoke(
    name: Annotated[str, typer.Argument(help="User name.")],
    data: DataOpt = None,
) -> None:
    """End every session of an account and lift its lock-out."""
    from archipel.platform import sessions, throttle
    from archipel.platform.db import utcnow
    from archipel.platform.login import account_key

    rt = _setup(data)
    count = sessions.revoke_all(rt.db, name, "revoked by operator", utcnow())
    with rt.db.write() as s:
        throttle.unlock(s, account_key(name))
    console.print(f"{count} session(s) of {name} ended; account unlocked")


@patients_app.command("access-code")
def patients_access_code(
    issuer: Annotated[str, typer.Argument(help="Issuer (site) of the patient ID.")],
    patient_id: Annotated[str, typer.Argument(help="The patient's ID at that issuer.")],
    email: Annotated[str, typer.Option("--email", help="Where one-time codes go by e-mail.")] = "",
    phone: Annotated[str, typer.Option("--phone", help="Where one-time codes go by SMS.")] = "",
    days: Annotated[int | None, typer.Option("--days", help="Days the code stays valid.")] = None,
    data: DataOpt = None,
) -> None:
    """Create a patient's access code and print it once (it is stored only as a salted hash)."""
    from datetime import timedelta

    from archipel.platform.db import utcnow
    from archipel.platform.patient_access import issue_access_code

    if bool(email) == bool(phone):
        raise typer.BadParameter("give exactly one of --email or --phone", param_hint="--email/--phone")
    rt = _setup(data)
    valid = timedelta(days=days if days is not None else rt.settings.patient_code_days)
    if valid <= timedelta(0):
        raise typer.BadParameter("--days must be positive", param_hint="--days")
    try:
        with rt.db.write() as s:
            code = issue_access_code(
                s,
                f"{issuer}/{patient_id}",
                "email" if email else "sms",
                email or phone,
                now=utcnow(),
                valid_for=valid,
                created_by=os.environ.get("USER", "cli"),
            )
    except ValueError as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from exc
    console.print(f"access code for {issuer}/{patient_id}, valid {valid.days} days (shown once):")
    out.print(code)


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


# --- identity (MPI) commands: begin -------------------------------------------------------------------------
identity_app = typer.Typer(help="Master patient index: issuers, identity imports, links and review.",
                           no_args_is_help=True)
issuers_app = typer.Typer(help="Issuers (sites) of local patient IDs.", no_args_is_help=True)
identity_app.add_typer(issuers_app, name="issuers")
app.add_typer(identity_app, name="identity")
ReasonOpt = Annotated[str, typer.Option("--reason", help="Why (kept in the history and the audit trail).")]


def _officer() -> Any:
    from archipel.platform.authn import Principal

    return Principal(subject=os.environ.get("USER", "cli"), role="identity-officer")


def _identity_error(exc: Exception) -> typer.Exit:
    console.print(f"[red]error:[/red] {exc}")
    return typer.Exit(2)


@issuers_app.command("add")
def identity_issuers_add(
    code: Annotated[str, typer.Argument(help="Issuer code, e.g. the site's code.")],
    name: Annotated[str, typer.Option("--name", help="Display name.")] = "",
    data: DataOpt = None,
) -> None:
    """Register an issuer of local patient IDs (identities of unknown issuers are refused)."""
    from archipel.platform.identity.service import IdentityError, add_issuer

    rt = _setup(data)
    try:
        with rt.db.write() as s:
            add_issuer(s, code, name)
    except IdentityError as exc:
        raise _identity_error(exc) from exc
    console.print(f"issuer {code} registered")


@issuers_app.command("list")
def identity_issuers_list(data: DataOpt = None) -> None:
    """List the registered issuers."""
    from archipel.platform.identity.service import known_issuers

    rt = _setup(data)
    with rt.db.sessions() as s:
        for code in sorted(known_issuers(s)):
            out.print(code)


@identity_app.command("import-csv")
def identity_import_csv(
    file: Annotated[Path, typer.Argument(help="CSV file: local_id, birth_name, used_name, given_names, ...")],
    source: Annotated[str, typer.Option("--source", help="Issuer (site) of the file's local IDs.")],
    data: DataOpt = None,
) -> None:
    """Import and link a site's identities; bad lines are listed with their number and reason."""
    from archipel.platform.identity.csvimport import count_lines, import_csv
    from archipel.platform.identity.service import IdentityError

    if not file.is_file():
        raise _identity_error(FileNotFoundError(f"no file {file}"))
    rt = _setup(data)
    columns = (TextColumn("[bold]identities"), BarColumn(), MofNCompleteColumn(),
               TextColumn("{task.percentage:>3.0f}%"), TextColumn("{task.fields[rate]:.0f}/s"),
               TimeRemainingColumn())
    try:
        with Progress(*columns, console=console, transient=False) as bar:
            task = bar.add_task("identities", total=count_lines(file), rate=0.0)

            def tick(_line: int, _outcome: Any, _error: str) -> None:
                bar.advance(task)
                t = bar.tasks[task]
                bar.update(task, rate=(t.completed / t.elapsed) if t.elapsed else 0.0)

            summary = import_csv(rt.db, file, source, on_line=tick)
            bar.update(task, completed=summary.total)
    except (IdentityError, UnicodeDecodeError) as exc:
        raise _identity_error(exc) from exc
    c = summary.counts
    out.print(f"linked {c['linked']}, review {c['review']}, new {c['new']}, manual {c['manual']}, "
              f"refused {len(summary.refused)}")
    if summary.ignored_columns:
        out.print(f"  ignored columns: {', '.join(summary.ignored_columns)}")
    for line, reason in summary.refused:
        out.print(f"  line {line}: {reason}")
    if summary.refused:
        raise typer.Exit(1)


@identity_app.command("links")
def identity_links(
    fmt: Annotated[str, typer.Option("--format", help="csv or table.")] = "table",
    data: DataOpt = None,
) -> None:
    """One row per local identity: issuer, local_id, master_id, status, score."""
    import csv as csv_mod

    from archipel.platform.identity.models import LocalIdentity

    if fmt not in ("csv", "table"):
        raise typer.BadParameter("choose csv or table", param_hint="--format")
    rt = _setup(data)
    cols = (LocalIdentity.issuer, LocalIdentity.local_id, LocalIdentity.master_id, LocalIdentity.status,
            LocalIdentity.score)
    with rt.db.sessions() as s:
        rows = s.execute(select(*cols).order_by(LocalIdentity.issuer, LocalIdentity.local_id))
        if fmt == "csv":
            writer = csv_mod.writer(sys.stdout, lineterminator="\n")
            writer.writerow(["issuer", "local_id", "master_id", "status", "score"])
            for r in rows:
                writer.writerow([r.issuer, r.local_id, r.master_id, r.status, "" if r.score is None else r.score])
            return
        table = Table("issuer", "local_id", "master", "status", "score")
        for r in rows:
            table.add_row(r.issuer, r.local_id, str(r.master_id), r.status, "" if r.score is None else str(r.score))
        out.print(table)


@identity_app.command("review")
def identity_review(data: DataOpt = None) -> None:
    """List the open review queue: which identity might belong to which master, and why."""
    from archipel.platform.identity.review import review_queue

    rt = _setup(data)
    table = Table("item", "issuer", "local_id", "master", "candidate", "score", "reason")
    for e in review_queue(rt.db):
        table.add_row(str(e.id), e.issuer, e.local_id, str(e.master_id), str(e.candidate_master_id),
                      "" if e.score is None else f"{e.score:.1f}", e.reason)
    out.print(table)


@identity_app.command("decide")
def identity_decide(
    item: Annotated[int, typer.Argument(help="Review item number.")],
    same: Annotated[bool, typer.Option("--same/--different", help="Same person, or different people.")],
    reason: ReasonOpt,
    data: DataOpt = None,
) -> None:
    """Resolve a review item: same person (link) or different people (never linked automatically)."""
    from archipel.platform.identity import review
    from archipel.platform.identity.service import IdentityError

    rt = _setup(data)
    try:
        (review.accept if same else review.different)(rt.db, _officer(), item, reason)
    except IdentityError as exc:
        raise _identity_error(exc) from exc
    console.print(f"review item {item} resolved: {'same person' if same else 'different people'}")


@identity_app.command("merge")
def identity_merge(
    source: Annotated[int, typer.Argument(help="Master to merge away.")],
    target: Annotated[int, typer.Argument(help="Master that stays.")],
    reason: ReasonOpt,
    data: DataOpt = None,
) -> None:
    """Merge one master patient into another (undo with `unmerge`)."""
    from archipel.platform.identity import review
    from archipel.platform.identity.service import IdentityError

    rt = _setup(data)
    try:
        merge_id = review.merge(rt.db, _officer(), source, target, reason)
    except IdentityError as exc:
        raise _identity_error(exc) from exc
    out.print(f"merge {merge_id}: master {source} merged into {target}")


@identity_app.command("unmerge")
def identity_unmerge(
    merge_id: Annotated[int, typer.Argument(help="Merge number printed by `merge`.")],
    reason: ReasonOpt,
    data: DataOpt = None,
) -> None:
    """Undo a merge, restoring both masters exactly."""
    from archipel.platform.identity import review
    from archipel.platform.identity.service import IdentityError

    rt = _setup(data)
    try:
        review.unmerge(rt.db, _officer(), merge_id, reason)
    except IdentityError as exc:
        raise _identity_error(exc) from exc
    out.print(f"merge {merge_id} undone")


@identity_app.command("unlink")
def identity_unlink(
    issuer: Annotated[str, typer.Argument(help="Issuer of the local ID.")],
    local_id: Annotated[str, typer.Argument(help="Local patient ID.")],
    reason: ReasonOpt,
    data: DataOpt = None,
) -> None:
    """Take a local identity off its master; it is never linked to those identities again."""
    from archipel.platform.identity import review
    from archipel.platform.identity.service import IdentityError

    rt = _setup(data)
    try:
        master = review.unlink(rt.db, _officer(), issuer, local_id, reason)
    except IdentityError as exc:
        raise _identity_error(exc) from exc
    out.print(f"{issuer}/{local_id} now on master {master}")


# --- identity (MPI) commands: end ---------------------------------------------------------------------------


def main() -> None:
    """Entry point of the ``archipel`` command."""
    app()


if __name__ == "__main__":
    main()
