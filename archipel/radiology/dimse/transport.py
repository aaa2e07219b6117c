"""TCP settings of DICOM connections, inbound and outbound."""

from __future__ import annotations

import socket

from pynetdicom import evt


def set_nodelay(event: evt.Event) -> None:
    """EVT_CONN_OPEN: turn Nagle's algorithm off on the association's socket.

    DIMSE sends a small command PDU before each data set and waits for a small response; with Nagle on, each
    of those waits on the peer's delayed ACK (up to 40 ms on Linux), which caps a C-STORE stream near 25/s.
    """
    transport = event.assoc.dul.socket
    sock = transport.socket if transport is not None else None
    if sock is not None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
