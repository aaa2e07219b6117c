"""Registered DICOM nodes: the allow-list checked when an association is requested."""

from __future__ import annotations

import logging
import time

from pynetdicom import evt
from sqlalchemy import select

from archipel.platform.authn import Principal
from archipel.platform.db import Database
from archipel.radiology.models import DicomNode

log = logging.getLogger("archipel.dimse")

#: A-ASSOCIATE-RJ: rejected-permanent, service-user, calling AE title not recognised.
REJECT_CALLING_AE = (0x01, 0x01, 0x03)


class NodeRegistry:
    """Looks up the node for an (AE title, host) pair, with a short cache so lookups stay off the hot path."""

    def __init__(self, db: Database, ttl: float = 5.0) -> None:
        self.db = db
        self.ttl = ttl
        self._cache: dict[tuple[str, str], tuple[float, DicomNode | None]] = {}

    def find(self, ae_title: str, host: str) -> DicomNode | None:
        """The registered node with this AE title at this host, or ``None``."""
        key = (ae_title.strip(), host)
        hit = self._cache.get(key)
        now = time.monotonic()
        if hit is not None and now - hit[0] < self.ttl:
            return hit[1]
        with self.db.sessions() as s:
            node = (
                s.execute(
                    select(DicomNode).where(DicomNode.ae_title == key[0], DicomNode.host.in_([host, "*"]))
                )
                .scalars()
                .first()
            )
        self._cache[key] = (now, node)
        return node

    def node_of(self, assoc: object) -> DicomNode | None:
        """The registered node behind an association."""
        requestor = assoc.requestor  # type: ignore[attr-defined]
        return self.find(requestor.ae_title, requestor.address)

    def principal(self, assoc: object) -> Principal:
        """The principal of an accepted association's calling node."""
        requestor = assoc.requestor  # type: ignore[attr-defined]
        node = self.node_of(assoc)
        site = "" if node is None else ("*" if node.regional_consumer else node.site)
        return Principal(subject=requestor.ae_title.strip(), role="node", site=site, kind="node")

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
