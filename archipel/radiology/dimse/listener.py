"""The DICOM listener: one pynetdicom AE serving every registered node, several associations at once."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from pynetdicom import AE, evt
from pynetdicom.presentation import AllStoragePresentationContexts, QueryRetrievePresentationContexts

from archipel.platform.runtime import Runtime
from archipel.platform.settings import Settings
from archipel.platform.tls import TlsFiles, server_context, tls_files
from archipel.radiology.archive import Archive
from archipel.radiology.dicomfile import SUPPORTED_TRANSFER_SYNTAXES
from archipel.radiology.dimse.balance import ListenerGroup
from archipel.radiology.dimse.find import handle_find
from archipel.radiology.dimse.nodes import NodeRegistry
from archipel.radiology.dimse.reactor import serve
from archipel.radiology.dimse.retrieve import handle_get, handle_move
from archipel.radiology.dimse.sending import install_unchanged_sending
from archipel.radiology.dimse.store import StoreService
from archipel.radiology.dimse.transport import set_nodelay

log = logging.getLogger("archipel.dimse")

VERIFICATION = "1.2.840.10008.1.1"
#: Lossless compressed syntaxes: accepting one of them never costs pixel fidelity.
LOSSLESS_COMPRESSED = frozenset(
    {
        "1.2.840.10008.1.2.4.57",
        "1.2.840.10008.1.2.4.70",
        "1.2.840.10008.1.2.4.80",
        "1.2.840.10008.1.2.4.90",
        "1.2.840.10008.1.2.4.201",
        "1.2.840.10008.1.2.4.202",
        "1.2.840.10008.1.2.5",
        "1.2.840.10008.1.2.4.110",
    }
)
#: Uncompressed syntaxes, best first: explicit VRs kept, then implicit, then the transfer-only encodings.
UNCOMPRESSED = ("1.2.840.10008.1.2.1", "1.2.840.10008.1.2", "1.2.840.10008.1.2.1.99", "1.2.840.10008.1.2.2")


def acceptance_order(syntaxes: tuple[str, ...]) -> list[str]:
    """``syntaxes`` in the order we pick from when a peer proposes several in one presentation context.

    pynetdicom accepts the first of *our* list that the peer proposed. Lossless compressed syntaxes come
    first (a sender holding the object compressed then sends it as it is), then uncompressed ones, and lossy
    syntaxes last, so that we never lead a sender to compress an image lossily for us.
    """
    lossless = [ts for ts in syntaxes if ts in LOSSLESS_COMPRESSED]
    plain = [ts for ts in UNCOMPRESSED if ts in syntaxes]
    lossy = [ts for ts in syntaxes if ts not in LOSSLESS_COMPRESSED and ts not in UNCOMPRESSED]
    return lossless + plain + lossy


@dataclass
class Listener:
    """A running DICOM listener; ``stop()`` closes it."""

    server: Any
    port: int

    def stop(self) -> None:
        """Stop accepting, and close the listening socket."""
        self.server.shutdown()

    def fileno(self) -> int:
        """The listening socket's descriptor (what a listener group's other processes inherit)."""
        return int(self.server.socket.fileno())


def build_ae(rt: Runtime) -> AE:
    """The application entity with every presentation context we accept."""
    install_unchanged_sending()
    ae = AE(ae_title=rt.settings.ae_title)
    ae.maximum_associations = rt.settings.max_associations
    ae.maximum_pdu_size = 0
    ae.network_timeout = 60
    ae.acse_timeout = 30
    ae.dimse_timeout = 120
    ts = acceptance_order(SUPPORTED_TRANSFER_SYNTAXES)
    ae.add_supported_context(VERIFICATION)
    for cx in AllStoragePresentationContexts:
        if cx.abstract_syntax is not None:
            # SCP/SCU role selection lets C-GET send the same storage classes back on the association.
            ae.add_supported_context(cx.abstract_syntax, ts, scu_role=True, scp_role=True)
    for cx in QueryRetrievePresentationContexts:
        if cx.abstract_syntax is not None:
            ae.add_supported_context(cx.abstract_syntax)
    return ae


def dicom_tls(settings: Settings) -> TlsFiles | None:
    """The listener's TLS files from the ``dicom_tls_*`` settings, or ``None`` for plain DICOM."""
    return tls_files(settings.dicom_tls_cert, settings.dicom_tls_key, settings.dicom_tls_ca, prefix="dicom")


def start_listener(
    rt: Runtime, host: str, port: int, *, reuse_port: bool = False, group: ListenerGroup | None = None
) -> Listener:
    """Start serving on ``host:port`` in background threads and return at once; with ``reuse_port``, share the
    port with the listeners of other processes (SO_REUSEPORT); with ``group``, serve the socket of a listener
    group by turns (:mod:`balance`: bound here for its first process, inherited by the others)."""
    ae = build_ae(rt)
    archive = Archive(rt.db, rt.blobs, rt.settings.duplicate_policy)
    nodes = NodeRegistry(rt.db)
    store = StoreService(archive, nodes, rt.db)
    handlers: list[Any] = [
        (evt.EVT_CONN_OPEN, set_nodelay),
        (evt.EVT_REQUESTED, nodes.on_requested),
        (evt.EVT_C_STORE, store.handle_store),
        (evt.EVT_RELEASED, store.on_association_end),
        (evt.EVT_ABORTED, store.on_association_end),
        (evt.EVT_CONN_CLOSE, store.on_association_end),
        (evt.EVT_C_FIND, handle_find, [rt, nodes]),
        (evt.EVT_C_MOVE, handle_move, [rt, nodes]),
        (evt.EVT_C_GET, handle_get, [rt, nodes]),
    ]
    tls = dicom_tls(rt.settings)
    server = serve(
        ae,
        (host, port),
        handlers,
        reuse_port=reuse_port,
        group=group,
        ssl_context=server_context(tls) if tls else None,
        incoming_sinks=store.incoming,
    )
    actual = server.server_address[1]
    log.info(
        "event=dicom_listening host=%s port=%d aet=%s tls=%s client_certs=%s",
        host,
        actual,
        rt.settings.ae_title,
        "on" if tls else "off",
        "required" if tls and tls.ca else "no",
    )
    return Listener(server=server, port=actual)
