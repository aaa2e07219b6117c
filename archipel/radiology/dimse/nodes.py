"""Registered DICOM nodes: the allow-list checked when an association is requested, and C-MOVE destinations."""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
import time

from pynetdicom import evt
from sqlalchemy import select

from archipel.platform.authn import Principal
from archipel.platform.db import Database
from archipel.radiology.models import DicomNode

log = logging.getLogger("archipel.dimse")

#: A-ASSOCIATE-RJ: rejected-permanent, service-user, calling AE title not recognised.
REJECT_CALLING_AE = (0x01, 0x01, 0x03)
#: A registered host of ``*`` accepts the AE title from any address (it can never be a C-MOVE destination).
ANY_HOST = "*"


def node_principal(node: DicomNode) -> Principal:
    """The principal a registered node acts as: its site, or every site for a regional consumer."""
    return Principal(
        subject=node.ae_title.strip(),
        role="node",
        site="*" if node.regional_consumer else node.site,
        kind="node",
    )


def _addresses(host: str) -> set[str]:
    """The host itself and, for a name, the IPv4 addresses it resolves to (none if it does not resolve)."""
    found = {host}
    with contextlib.suppress(OSError):
        found.update(socket.gethostbyname_ex(host)[2])
    return found


class NodeRegistry:
    """Looks up the node for an (AE title, host) pair, with a short cache so lookups stay off the hot path."""

    def __init__(self, db: Database, ttl: float = 5.0) -> None:
        self.db = db
        self.ttl = ttl
        self._cache: dict[tuple[str, str], tuple[float, DicomNode | None]] = {}
        self._lock = threading.Lock()

    def _candidates(self, ae_title: str) -> list[DicomNode]:
        with self.db.sessions() as s:
            return list(s.execute(select(DicomNode).where(DicomNode.ae_title == ae_title)).scalars())

    def find(self, ae_title: str, host: str) -> DicomNode | None:
        """The registered node with this AE title at this address (or registered for any host), or ``None``.

        A node registered by host name matches the addresses the name resolves to.
        """
        key = (ae_title.strip(), host)
        now = time.monotonic()
        with self._lock:
            hit = self._cache.get(key)
        if hit is not None and now - hit[0] < self.ttl:
            return hit[1]
        candidates = self._candidates(key[0])
        node = next((n for n in candidates if n.host == host), None)
        if node is None:
            node = next((n for n in candidates if n.host != ANY_HOST and host in _addresses(n.host)), None)
        if node is None:
            node = next((n for n in candidates if n.host == ANY_HOST), None)
        with self._lock:
            self._cache[key] = (now, node)
        return node

    def destination(self, ae_title: str) -> DicomNode | None:
        """The node a C-MOVE to ``ae_title`` is sent to: registered with a real host, or ``None``."""
        candidates = [n for n in self._candidates(ae_title.strip()) if n.host != ANY_HOST and n.port > 0]
        return min(candidates, key=lambda n: n.id) if candidates else None

    def node_of(self, assoc: object) -> DicomNode | None:
        """The registered node behind an association."""
        requestor = assoc.requestor  # type: ignore[attr-defined]
        return self.find(requestor.ae_title, requestor.address)

    def principal(self, assoc: object) -> Principal:
        """The principal of an accepted association's calling node."""
        requestor = assoc.requestor  # type: ignore[attr-defined]
        node = self.node_of(assoc)
        if node is None:
            # Only reachable if the node was removed after the association was accepted: it sees nothing.
            return Principal(subject=requestor.ae_title.strip(), role="node", site="\x00", kind="node")
        return node_principal(node)

    def on_requested(self, event: evt.Event) -> None:
        """EVT_REQUESTED: reject associations from unregistered AE title / host pairs."""
        requestor = event.assoc.requestor
        primitive = requestor.primitive
        calling = str(primitive.calling_ae_title if primitive is not None else requestor.ae_title).strip()
        if self.find(calling, requestor.address) is None:
            log.warning(
                "event=association_rejected calling_ae=%s host=%s reason=unregistered",
                calling,
                requestor.address,
            )
            event.assoc.acse.send_reject(*REJECT_CALLING_AE)
            # As pynetdicom's own rejection does: wait until the A-ASSOCIATE-RJ is out (the peer then closes),
            # or the server would close the socket first and the peer would only see an abort.
            event.assoc.kill()
