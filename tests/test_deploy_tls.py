"""TLS for DICOM (the listener, with and without client certificates) and for HTTP (uvicorn), against real peers:
dcmtk's echoscu and storescu, and httpx checking the server's certificate against the test CA."""

from __future__ import annotations

import socket
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import uvicorn
from sqlalchemy import select

from archipel.cli.services import http_tls
from archipel.platform.runtime import Runtime
from archipel.platform.tls import TlsSettingError
from archipel.radiology.dimse.listener import Listener, dicom_tls, start_listener
from archipel.radiology.dimse.nodes import DicomNode
from archipel.radiology.models import Instance
from archipel.radiology.samples import SyntheticPatient, ct_series
from tests.dimse_peers import dcmtk, write_files
from tests.pki import Pki, make_pki
from tests.support import free_port, wait_until

# TLS does not depend on the index: one database kind is enough.
pytestmark = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


def _tls_listener(runtime: Runtime, pki: Pki, *, require_client_cert: bool) -> Listener:
    with runtime.db.write() as s:
        for aet in ("ECHOSCU", "STORESCU"):
            s.add(DicomNode(ae_title=aet, host="127.0.0.1", port=104, site="SITE-A"))
    runtime.settings.dicom_tls_cert = str(pki.server.cert)
    runtime.settings.dicom_tls_key = str(pki.server.key)
    runtime.settings.dicom_tls_ca = str(pki.ca) if require_client_cert else ""
    return start_listener(runtime, "127.0.0.1", 0)


@pytest.fixture
def mutual_tls_listener(runtime: Runtime, pki: Pki) -> Iterator[Listener]:
    listener = _tls_listener(runtime, pki, require_client_cert=True)
    try:
        yield listener
    finally:
        listener.stop()


def _echo(port: int, *tls: str) -> int:
    return dcmtk("echoscu", *tls, "-aec", "ARCHIPEL", "127.0.0.1", str(port), timeout=30).returncode


def test_dcmtk_echoes_and_stores_over_mutual_tls_and_plain_or_unknown_peers_are_refused(
    mutual_tls_listener: Listener, runtime: Runtime, pki: Pki, patient: SyntheticPatient, tmp_path: Path
) -> None:
    port = mutual_tls_listener.port
    client = ("+tls", str(pki.client.key), str(pki.client.cert), "+cf", str(pki.ca))
    assert _echo(port, *client) == 0

    files = write_files(tmp_path / "ct", ct_series(patient, 2))
    run = dcmtk("storescu", *client, "-aec", "ARCHIPEL", "127.0.0.1", str(port), *map(str, files), timeout=60)
    assert run.returncode == 0, run.stderr
    with runtime.db.sessions() as s:
        stored = set(s.execute(select(Instance.sop_uid)).scalars())
    assert {f.stem for f in files} <= stored

    # A plain association, TLS without a client certificate, and a certificate the CA did not sign: refused.
    assert _echo(port) != 0
    assert _echo(port, "+tla", "+cf", str(pki.ca)) != 0
    assert _echo(port, "+tls", str(pki.stranger.key), str(pki.stranger.cert), "+cf", str(pki.ca)) != 0
    # ... and the listener still serves the good peer afterwards.
    assert _echo(port, *client) == 0


def test_a_peer_that_connects_and_sends_nothing_does_not_hold_up_other_tls_associations(
    mutual_tls_listener: Listener, pki: Pki
) -> None:
    with socket.create_connection(("127.0.0.1", mutual_tls_listener.port)):
        # The silent peer's handshake waits in its own thread; a second peer is served meanwhile.
        client = ("+tls", str(pki.client.key), str(pki.client.cert), "+cf", str(pki.ca))
        assert _echo(mutual_tls_listener.port, *client) == 0


def test_a_tls_listener_without_ca_takes_anonymous_tls_clients_but_not_plain_ones(
    runtime: Runtime, pki: Pki
) -> None:
    listener = _tls_listener(runtime, pki, require_client_cert=False)
    try:
        assert _echo(listener.port, "+tla", "+cf", str(pki.ca)) == 0
        assert _echo(listener.port) != 0
    finally:
        listener.stop()


def test_half_set_or_missing_tls_files_are_refused_with_the_setting_to_fix(
    runtime: Runtime, pki: Pki
) -> None:
    runtime.settings.dicom_tls_cert = str(pki.server.cert)
    with pytest.raises(TlsSettingError, match="dicom_tls_key is empty"):
        dicom_tls(runtime.settings)
    runtime.settings.dicom_tls_key = str(pki.server.key)
    runtime.settings.dicom_tls_ca = str(pki.ca.with_name("nowhere.crt"))
    with pytest.raises(TlsSettingError, match=r"dicom_tls_ca: no file 'nowhere\.crt'"):
        dicom_tls(runtime.settings)
    runtime.settings.dicom_tls_cert = runtime.settings.dicom_tls_key = runtime.settings.dicom_tls_ca = ""
    assert dicom_tls(runtime.settings) is None


def test_the_api_answers_healthz_over_https_with_a_certificate_the_ca_signed(
    runtime: Runtime, pki: Pki
) -> None:
    from archipel.app import create_app

    runtime.settings.http_tls_cert = str(pki.server.cert)
    runtime.settings.http_tls_key = str(pki.server.key)
    port = free_port()
    config = uvicorn.Config(
        create_app(), host="127.0.0.1", port=port, log_level="warning", **http_tls(runtime.settings)
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        wait_until(lambda: server.started, timeout=20, what="uvicorn over TLS")
        r = httpx.get(f"https://localhost:{port}/healthz", verify=ssl.create_default_context(cafile=pki.ca))
        assert r.status_code == 200 and r.json() == {"status": "ok"}
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"https://localhost:{port}/healthz")  # the system's CAs do not know ours
        with pytest.raises(httpx.RemoteProtocolError):
            httpx.get(f"http://localhost:{port}/healthz")
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def test_the_dicom_probe_answers_over_mutual_tls_with_the_listeners_own_certificate(
    mutual_tls_listener: Listener, pki: Pki
) -> None:
    from typer.testing import CliRunner

    from archipel.cli import app

    env = {
        "ARCHIPEL_DICOM_TLS_CERT": str(pki.server.cert),
        "ARCHIPEL_DICOM_TLS_KEY": str(pki.server.key),
        "ARCHIPEL_DICOM_TLS_CA": str(pki.ca),
    }
    probe = ["dicom-probe", "--port", str(mutual_tls_listener.port), "--timeout", "5"]
    assert CliRunner().invoke(app, probe, env=env).exit_code == 0
    # Without TLS settings the probe speaks plain DICOM, which the TLS listener refuses.
    plain = CliRunner().invoke(app, probe, env={k: None for k in env})
    assert plain.exit_code == 1 and "no answer in DICOM" in plain.output
