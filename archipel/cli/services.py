"""Service commands: serve, api, dicom, worker, and the demo data."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
from typing import TYPE_CHECKING, Annotated, Any

import typer

from archipel.cli.common import DataOpt, app, configure_logging, console, out, setup

if TYPE_CHECKING:
    from pathlib import Path

    from archipel.platform.runtime import Runtime
    from archipel.platform.settings import Settings

#: Seconds a stop waits for open responses before closing them: event streams (frozen-section worklists) and
#: WebSockets never end by themselves, and would hold the stop until the process is killed.
STOP_GRACE_SECONDS = 5


#: prctl(2): the signal a process gets when its parent dies.
_PR_SET_PDEATHSIG = 1


def _exit_with_parent(parent: int) -> None:
    """Leave when the ``serve`` process that started us is gone (even after a SIGKILL).

    On Linux the kernel kills us at once (``PR_SET_PDEATHSIG``): a listener of ``serve --dicom-listeners``
    holds the group's listening socket, which would keep the port taken from a ``serve`` started again. The
    watch thread covers other systems, and a parent that died before the signal was asked for. (The signal
    comes when the parent's thread that started us ends: ``serve`` starts its processes from its main thread.)
    """
    import contextlib
    import ctypes
    import threading
    import time

    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL))

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1)
        os._exit(0)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


#: uvicorn's settings for every HTTP process (``serve`` and ``api``): uvloop and httptools (``uvicorn[standard]``)
#: named rather than found, each response's writes sent in one system call (platform/http_protocol.py), and no
#: access log (a line per tile; the requests that matter are in the audit log).
HTTP_SERVER: dict[str, Any] = {
    "loop": "uvloop",
    "http": "archipel.platform.http_protocol:HttpProtocol",
    "access_log": False,
}


def http_app() -> Any:
    """The HTTP application (:func:`archipel.app.create_app`), its start-up heap then frozen out of the cyclic
    garbage collector: the collector's full passes otherwise walk every module, route and model object under
    load, a pause of milliseconds for every request in flight (docs/performance.md, "Tile service")."""
    import gc

    from archipel.app import create_app

    app = create_app()
    gc.collect()
    gc.freeze()
    return app


def refuse_embedded_secrets(command: str, data: Path | None) -> None:
    """Exit with a clear error when a shared deployment would fall back on keys made in the data dir.

    Each pod or machine has a data dir of its own: an API process would sign tokens no other one accepts, and
    each would sign audit checkpoints and frozen-section verdicts with a key of its own (decision 0042).
    """
    from archipel.platform.settings import Settings

    if os.environ.get("ARCHIPEL_PARENT_PID"):
        return  # started by ``archipel serve``, whose data dir (and keys) it shares
    settings = Settings(data_dir=data) if data is not None else Settings()
    missing = settings.missing_shared_secrets() if settings.shared_deployment else []
    if missing:
        why = "ARCHIPEL_PRODUCTION is on" if settings.production else "the index is not the embedded SQLite"
        console.print(
            f"[red]archipel {command}: {why}, so every process must share its keys: set "
            f"{' and '.join(missing)} (see docs/production.md). Refusing to start."
        )
        raise typer.Exit(2)


def http_tls(settings: Settings) -> dict[str, Any]:
    """uvicorn's TLS arguments from the ``http_tls_*`` settings (empty: plain HTTP); exits on a bad setting."""
    from archipel.platform.tls import TlsSettingError, tls_files

    try:
        files = tls_files(settings.http_tls_cert, settings.http_tls_key, prefix="http")
    except TlsSettingError as exc:
        console.print(f"[red]{exc}")
        raise typer.Exit(2) from exc
    return {"ssl_certfile": str(files.cert), "ssl_keyfile": str(files.key)} if files else {}


def check_dicom_tls(settings: Settings) -> None:
    """Exit with the setting to fix when the ``dicom_tls_*`` files are half set or missing."""
    from archipel.platform.tls import TlsSettingError
    from archipel.radiology.dimse.listener import dicom_tls

    try:
        dicom_tls(settings)
    except TlsSettingError as exc:
        console.print(f"[red]{exc}")
        raise typer.Exit(2) from exc


def _load_tasks() -> None:
    import archipel.mammo.deadline_warnings
    import archipel.mammo.priors
    import archipel.mammo.volumes
    import archipel.platform.notify_tasks
    import archipel.platform.storage_tasks
    import archipel.radiology.blob_sources
    import archipel.radiology.prefetch
    import archipel.radiology.retention_tasks
    import archipel.radiology.tasks
    import archipel.radiology.telerad_sla
    import archipel.radiology.tumorboard
    import archipel.wsi.blob_sources
    import archipel.wsi.tasks  # noqa: F401
    from archipel.mammo import intake
    from archipel.radiology import documents_expected

    intake.install()  # MG studies imported by a job are matched to their screening episodes too
    documents_expected.install()  # and reports that came before their images are linked to the study


@app.command("worker")
def worker(
    queues: Annotated[
        str, typer.Option("--queues", help="Comma-separated queues.")
    ] = "ingest,wsi,wsi-urgent,prefetch,notify",
    concurrency: Annotated[int, typer.Option("--concurrency")] = 2,
    drop_folder: Annotated[
        bool,
        typer.Option("--drop-folder/--no-drop-folder", help="Watch the wsi_drop_folder setting's folder."),
    ] = True,
    beat: Annotated[
        bool,
        typer.Option(
            "--beat/--no-beat", help="Also run the periodic tasks (one worker of a deployment does)."
        ),
    ] = False,
    data: DataOpt = None,
) -> None:
    """Run a Celery worker for the job queues (and watch the slide drop folder, when one is set)."""
    from archipel.platform import schedule, worker_heartbeat
    from archipel.platform.jobs import celery_app, reset_celery
    from archipel.wsi.dropfolder import start_drop_folder

    refuse_embedded_secrets("worker", data)
    rt = setup(data)
    configure_logging()
    if drop_folder:
        start_drop_folder(rt)
    if os.environ.get("ARCHIPEL_PARENT_PID"):
        _exit_with_parent(int(os.environ["ARCHIPEL_PARENT_PID"]))
    reset_celery()
    _load_tasks()
    celery = celery_app()
    # What ``archipel worker-probe`` (a Kubernetes exec probe) checks.
    worker_heartbeat.install(celery, worker_heartbeat.heartbeat_path(rt.settings))
    argv = [
        "worker",
        f"--queues={queues}",
        f"--concurrency={concurrency}",
        "--pool=threads",
        "--loglevel=INFO",
        "--without-gossip",
        "--without-mingle",
        "--without-heartbeat",
    ]
    if beat:
        celery.conf.beat_schedule = schedule.beat_schedule(rt.settings)
        argv += ["--beat", f"--schedule={rt.settings.data_dir / 'beat-schedule'}"]
    celery.worker_main(argv)


@app.command("dicom")
def dicom_cmd(
    dicom_port: Annotated[int | None, typer.Option("--dicom-port")] = None,
    aet: Annotated[str | None, typer.Option("--aet")] = None,
    reuse_port: Annotated[
        bool,
        typer.Option(
            "--reuse-port",
            help="Share the port with other listener processes of this user (SO_REUSEPORT): the kernel "
            "spreads new associations over them.",
        ),
    ] = False,
    listener_group: Annotated[
        str | None,
        typer.Option(
            "--listener-group",
            hidden=True,
            help="LISTEN_FD:BOARD_FD:SLOT:SLOTS, given by serve --dicom-listeners to the processes it starts.",
        ),
    ] = None,
    data: DataOpt = None,
) -> None:
    """Run a DICOM listener only."""
    if os.environ.get("ARCHIPEL_PARENT_PID"):
        # A listener of ``serve --dicom-listeners``: first of all, so that it holds the inherited socket no longer
        # than ``serve`` lives, even while it is starting.
        _exit_with_parent(int(os.environ["ARCHIPEL_PARENT_PID"]))
    from archipel.mammo import intake
    from archipel.radiology import documents_expected, telerad
    from archipel.radiology.archive import Archive
    from archipel.radiology.dimse.balance import ListenerGroup
    from archipel.radiology.dimse.listener import start_listener

    refuse_embedded_secrets("dicom", data)
    if listener_group is not None and reuse_port:
        raise typer.BadParameter("--listener-group and --reuse-port exclude each other")
    try:
        group = ListenerGroup.parse(listener_group) if listener_group is not None else None
    except (ValueError, OSError) as exc:
        raise typer.BadParameter(str(exc), param_hint="--listener-group") from exc
    rt = setup(data, dicom_port=dicom_port, ae_title=aet)
    check_dicom_tls(rt.settings)
    configure_logging()
    intake.install()  # screening studies received here are matched to their episodes, as under ``serve``
    telerad.install()  # a study that arrives here is linked to the reading requests waiting for its accession
    documents_expected.install()  # ... and to the reports that came before it
    Archive(rt.db, rt.blobs).sweep_orphans(_sweep_grace(rt, shared=True))
    listener = start_listener(
        rt, rt.settings.dicom_host, rt.settings.dicom_port, reuse_port=reuse_port, group=group
    )
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

    refuse_embedded_secrets("api", data)
    rt = setup(data, http_port=http_port)
    configure_logging()
    uvicorn.run(
        "archipel.cli.services:http_app",
        factory=True,
        host=rt.settings.http_host,
        port=rt.settings.http_port,
        workers=workers,
        log_level="info",
        timeout_graceful_shutdown=STOP_GRACE_SECONDS,
        **HTTP_SERVER,
        **http_tls(rt.settings),
    )


@app.command("serve")
def serve(
    http_port: Annotated[int | None, typer.Option("--http-port", help="HTTP port (8000).")] = None,
    dicom_port: Annotated[int | None, typer.Option("--dicom-port", help="DICOM port (11112).")] = None,
    hl7_port: Annotated[int | None, typer.Option("--hl7-port", help="HL7 MLLP port (2575).")] = None,
    aet: Annotated[str | None, typer.Option("--aet", help="Our AE title (ARCHIPEL).")] = None,
    host: Annotated[str | None, typer.Option("--host", help="HTTP bind address.")] = None,
    http_workers: Annotated[
        int,
        typer.Option(
            "--http-workers",
            envvar="ARCHIPEL_HTTP_WORKERS",
            min=1,
            help="HTTP worker processes (1: the API runs in this process).",
        ),
    ] = 1,
    dicom_listeners: Annotated[
        int,
        typer.Option(
            "--dicom-listeners",
            envvar="ARCHIPEL_DICOM_LISTENERS",
            min=1,
            help="DICOM listener processes on the DICOM port (1: the listener runs in this process).",
        ),
    ] = 1,
    data: DataOpt = None,
) -> None:
    """Run everything on one machine: HTTP API, DICOM listener and a job worker."""
    import uvicorn

    from archipel.platform.audit_checkpoints import CheckpointScheduler
    from archipel.radiology.archive import Archive
    from archipel.radiology.dimse.balance import ListenerGroup
    from archipel.radiology.dimse.listener import start_listener

    rt = setup(
        data, http_port=http_port, dicom_port=dicom_port, hl7_port=hl7_port, ae_title=aet, http_host=host
    )
    configure_logging()
    tls = http_tls(rt.settings)
    check_dicom_tls(rt.settings)
    swept = Archive(rt.db, rt.blobs).sweep_orphans(_sweep_grace(rt, shared=False))
    log = logging.getLogger("archipel.serve")
    log.info("event=recovery_sweep orphans_removed=%d", swept)
    if rt.settings.embedded_broker:
        from archipel.wsi.tasks import resume_conversions

        # The embedded broker does not redeliver a task that was running when the process died.
        log.info("event=conversions_resumed count=%d", resume_conversions(rt))
    env = {
        **os.environ,
        "ARCHIPEL_DATA": str(rt.settings.data_dir.resolve()),
        "ARCHIPEL_PARENT_PID": str(os.getpid()),
    }
    worker_proc = subprocess.Popen(
        [sys.executable, "-m", "archipel.cli", "worker", "--concurrency", "2", "--beat"], env=env
    )
    # Urgent (frozen-section) slides get a worker of their own, so they never wait behind routine conversions.
    urgent = ["worker", "--queues", "wsi-urgent", "--concurrency", "1", "--no-drop-folder"]
    urgent_proc = subprocess.Popen([sys.executable, "-m", "archipel.cli", *urgent], env=env)
    group = ListenerGroup.create(dicom_listeners) if dicom_listeners > 1 else None
    listener = start_listener(rt, rt.settings.dicom_host, rt.settings.dicom_port, group=group)
    # More listener processes serve the same socket, the least busy accepting (decision 0053): associations
    # then use more than one core, which one process cannot (the GIL). Each is an ``archipel dicom`` of its own.
    listener_procs = []
    if group is not None:
        inherited = (listener.fileno(), group.board.fd)
        listener_procs = [
            subprocess.Popen(
                [
                    *(sys.executable, "-m", "archipel.cli", "dicom"),
                    *("--listener-group", group.board.spec(slot, listener.fileno())),
                    *("--dicom-port", str(listener.port), "--aet", rt.settings.ae_title),
                ],
                env=env,
                pass_fds=inherited,
            )
            for slot in range(1, dicom_listeners)
        ]
        log.info("event=dicom_listeners count=%d port=%d", dicom_listeners, listener.port)
    from archipel.radiology.hl7.listener import start_hl7_listener

    # HL7 v2 from the sites' RIS (docs/hl7.md), beside the DICOM listener. A taken port stops only HL7: the
    # archive, viewers and portals go on, and the error says what to fix.
    hl7_listener = None
    try:
        hl7_listener = start_hl7_listener(rt, rt.settings.hl7_host, rt.settings.hl7_port)
    except OSError as exc:
        log.error("event=hl7_listener_failed port=%d error=%r", rt.settings.hl7_port, str(exc))
    # Signs the audit chain's head regularly and purges expired events (docs/audit.md).
    checkpoints = CheckpointScheduler(rt.db, rt.settings).start()
    try:
        if http_workers > 1:
            # Worker processes build the app themselves from the environment (ARCHIPEL_DATA and the rest), as
            # ``archipel api`` does; each holds its own tile caches (docs/tiles.md).
            uvicorn.run(
                "archipel.cli.services:http_app",
                factory=True,
                host=rt.settings.http_host,
                port=rt.settings.http_port,
                workers=http_workers,
                log_level="warning",
                timeout_graceful_shutdown=STOP_GRACE_SECONDS,
                **HTTP_SERVER,
                **tls,
            )
        else:
            uvicorn.run(
                http_app(),
                host=rt.settings.http_host,
                port=rt.settings.http_port,
                log_level="warning",
                timeout_graceful_shutdown=STOP_GRACE_SECONDS,
                **HTTP_SERVER,
                **tls,
            )
    finally:
        checkpoints.stop()
        if hl7_listener is not None:
            hl7_listener.stop()
        listener.stop()
        for proc in (worker_proc, urgent_proc, *listener_procs):
            proc.terminate()
        for proc in (worker_proc, urgent_proc, *listener_procs):
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()


@app.command("demo")
def demo(data: DataOpt = None) -> None:
    """Load demo data (sites, patients, CT/MR/MG studies) and create demo accounts."""
    from archipel.demo import load_demo

    rt = setup(data)
    load_demo(rt, out)


#: How old an orphan blob must be before a process that shares its store with others may remove it at start-up.
SHARED_STORE_GRACE = 600


def _sweep_grace(rt: Runtime, shared: bool) -> int:
    """The start-up sweep's grace period: the setting, but never less than :data:`SHARED_STORE_GRACE` when other
    processes may be writing to the same store (``archipel dicom`` listeners, or any process on PostgreSQL), so that
    a starting process never removes a blob another one has written and not yet indexed."""
    if shared or rt.db.engine.dialect.name != "sqlite":
        return max(rt.settings.orphan_grace_seconds, SHARED_STORE_GRACE)
    return rt.settings.orphan_grace_seconds
