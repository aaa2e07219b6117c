"""The DICOM listener: one pynetdicom AE serving every registered node, several associations at once."""

from __future__ import annotations

import logging
import socket
from dataclasses import dataclass
from typing import Any

from pynetdicom import AE, evt
from pynetdicom.presentation import AllStoragePresentationContexts, QueryRetrievePresentationContexts

from archipel.platform.runtime import Runtime
from archipel.radiology.archive import Archive
from archipel.radiology.dicomfile import SUPPORTED_TRANSFER_SYNTAXES
from archipel.radiology.dimse.find import handle_find
from archipel.radiology.dimse.nodes import NodeRegistry
from archipel.radiology.dimse.retrieve import handle_get, handle_move
from archipel.radiology.dimse.store import handle_store

log = logging.getLogger("archipel.dimse")

VERIFICATION = "1.2.840.10008.1.1"


@dataclass
class Listener:
    """A running DICOM listener; ``stop()`` closes it."""

    server: Any
    port: int

    def stop(self) -> None:
        self.server.shutdown()


def _nodelay(event: evt.Event) -> None:
    sock = event.assoc.dul.socket.socket if event.assoc.dul.socket else None
    if sock is not None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def build_ae(rt: Runtime) -> AE:
    """The application entity with every presentation context we accept."""
    ae = AE(ae_title=rt.settings.ae_title)
    ae.maximum_associations = rt.settings.max_associations
    ae.maximum_pdu_size = 0
    ae.network_timeout = 60
    ae.acse_timeout = 30
    ae.dimse_timeout = 120
    ts = list(SUPPORTED_TRANSFER_SYNTAXES)
    ae.add_supported_context(VERIFICATION)
    for cx in AllStoragePresentationContexts:
        if cx.abstract_syntax is not None:
            # SCP/SCU role selection lets C-GET send the same storage classes back on the association.
            ae.add_supported_context(cx.abstract_syntax, ts, scu_role=True, scp_role=True)
    for cx in QueryRetrievePresentationContexts:
        if cx.abstract_syntax is not None:
            ae.add_supported_context(cx.abstract_syntax)
    return ae


def start_listener(rt: Runtime, host: str, port: int) -> Listener:
    """Start serving on ``host:port`` in background threads and return at once."""
    ae = build_ae(rt)
    archive = Archive(rt.db, rt.blobs, rt.settings.duplicate_policy)
    nodes = NodeRegistry(rt.db)
    handlers: list[Any] = [
        (evt.EVT_CONN_OPEN, _nodelay),
        (evt.EVT_REQUESTED, nodes.on_requested),
        (evt.EVT_C_STORE, handle_store, [archive, nodes]),
        (evt.EVT_C_FIND, handle_find, [rt, nodes]),
        (evt.EVT_C_MOVE, handle_move, [rt, nodes]),
        (evt.EVT_C_GET, handle_get, [rt, nodes]),
    ]
    server = ae.start_server((host, port), block=False, evt_handlers=handlers)
    assert server is not None
    actual = server.server_address[1]
    log.info("event=dicom_listening host=%s port=%d aet=%s", host, actual, rt.settings.ae_title)
    return Listener(server=server, port=actual)
