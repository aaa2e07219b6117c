"""Probe commands for an orchestrator (Kubernetes exec probes, compose health checks): cheap, no database.

Each exits 0 when the process it checks is alive and 1 with the reason on stderr otherwise. They read the
settings only: no schema check, no index, no broker, so that a probe every few seconds costs little.
"""

from __future__ import annotations

import ssl
from typing import Annotated

import typer

from archipel.cli.common import DataOpt, app, console

VERIFICATION = "1.2.840.10008.1.1"


@app.command("worker-probe")
def worker_probe(
    max_age: Annotated[
        float, typer.Option("--max-age", help="Seconds past which a heartbeat is stale.", min=1)
    ] = 60.0,
    data: DataOpt = None,
) -> None:
    """Exit 0 when this machine's worker touched its heartbeat file within --max-age seconds, else 1."""
    from archipel.platform import worker_heartbeat
    from archipel.platform.settings import Settings

    settings = Settings(data_dir=data) if data is not None else Settings()
    problem = worker_heartbeat.problem(worker_heartbeat.heartbeat_path(settings), max_age)
    if problem is not None:
        console.print(f"worker-probe: {problem}")
        raise typer.Exit(1)


@app.command("dicom-probe")
def dicom_probe(
    host: Annotated[str, typer.Option("--host", help="Listener address.")] = "127.0.0.1",
    port: Annotated[
        int | None, typer.Option("--port", help="Listener port (the dicom_port setting).")
    ] = None,
    timeout: Annotated[float, typer.Option("--timeout", min=0.1)] = 5.0,
    calling: Annotated[str, typer.Option("--calling-aet", help="The probe's AE title.")] = "ARCHIPEL-PROBE",
    data: DataOpt = None,
) -> None:
    """Ask the DICOM listener for an association (over TLS when the dicom_tls_* settings are set); exit 0 when
    it answers: a C-ECHO succeeds, or the association is rejected because the probe's AE title is not a
    registered node (the listener then read its node registry in the index, and answered in DICOM).

    Under TLS the probe presents the listener's own certificate as its client certificate (accepted when
    ``dicom_tls_ca`` signed it), and does not check the listener's name: it tests that the service answers,
    not who it is.
    """
    from pynetdicom import AE

    from archipel.platform.settings import Settings
    from archipel.platform.tls import TlsSettingError
    from archipel.radiology.dimse.listener import dicom_tls

    settings = Settings(data_dir=data) if data is not None else Settings()
    try:
        files = dicom_tls(settings)
    except TlsSettingError as exc:
        console.print(f"dicom-probe: {exc}")
        raise typer.Exit(1) from exc
    tls_args: tuple[ssl.SSLContext, str] | None = None
    if files is not None:
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        ctx.load_cert_chain(files.cert, files.key)
        tls_args = (ctx, host)
    ae = AE(ae_title=calling)
    ae.add_requested_context(VERIFICATION)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = ae.connection_timeout = timeout
    where = f"{settings.ae_title} at {host}:{port or settings.dicom_port}"
    assoc = ae.associate(host, port or settings.dicom_port, ae_title=settings.ae_title, tls_args=tls_args)
    if assoc.is_rejected:
        return
    if not assoc.is_established:
        console.print(f"dicom-probe: no answer in DICOM from {where}")
        raise typer.Exit(1)
    try:
        status = assoc.send_c_echo()
    finally:
        assoc.release()
    if not status or status.Status != 0:
        console.print("dicom-probe: the C-ECHO got no success status")
        raise typer.Exit(1)
