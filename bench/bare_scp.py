"""A bare pynetdicom Storage SCP: writes each data set to a file (fsynced) and keeps no index.

It is the benchmark's floor for what pynetdicom itself costs per instance, next to Archipel and Orthanc.
Run it as ``python bench/bare_scp.py --port N --dir DIR``; it stops on SIGTERM.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import uuid
from pathlib import Path

from pynetdicom import AE, evt
from pynetdicom.presentation import AllStoragePresentationContexts

TRANSFER_SYNTAXES = ["1.2.840.10008.1.2.1", "1.2.840.10008.1.2"]


def serve(port: int, folder: Path) -> None:
    """Accept every storage class on ``127.0.0.1:port`` and write what arrives under ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)

    def nodelay(event: evt.Event) -> None:
        transport = event.assoc.dul.socket
        sock = transport.socket if transport is not None else None
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def store(event: evt.Event) -> int:
        data = event.encoded_dataset(include_meta=True)
        name = folder / f"{uuid.uuid4().hex}.dcm"
        fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o640)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        return 0x0000

    ae = AE(ae_title="BARESCP")
    ae.maximum_pdu_size = 0
    ae.maximum_associations = 16
    for cx in AllStoragePresentationContexts:
        if cx.abstract_syntax is not None:
            ae.add_supported_context(cx.abstract_syntax, TRANSFER_SYNTAXES)
    server = ae.start_server(
        ("127.0.0.1", port),
        block=False,
        evt_handlers=[(evt.EVT_CONN_OPEN, nodelay), (evt.EVT_C_STORE, store)],
    )
    assert server is not None
    signal.sigwait({signal.SIGINT, signal.SIGTERM})
    server.shutdown()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--dir", type=Path, required=True)
    args = parser.parse_args()
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
    serve(args.port, args.dir)


if __name__ == "__main__":
    main()
