"""C-STORE: every storage SOP class, acknowledged only once the instance is durable."""

from __future__ import annotations

import logging

from pynetdicom import evt

from archipel.radiology.archive import Archive
from archipel.radiology.dicomfile import InvalidInstance
from archipel.radiology.dimse.nodes import NodeRegistry

log = logging.getLogger("archipel.dimse")

OUT_OF_RESOURCES = 0xA700


def handle_store(event: evt.Event, archive: Archive, nodes: NodeRegistry) -> int | tuple[int, str]:
    """EVT_C_STORE: store the received data set as it came and return the DIMSE status."""
    principal = nodes.principal(event.assoc)
    node = nodes.node_of(event.assoc)
    try:
        data = event.encoded_dataset(include_meta=True)
        archive.store(data, source_ae=principal.subject, default_issuer=node.site if node else "")
    except InvalidInstance as exc:
        log.warning(
            "event=store_refused calling_ae=%s code=0x%04X reason=%s", principal.subject, exc.code, exc
        )
        return exc.code
    except OSError:
        log.exception("event=store_failed calling_ae=%s", principal.subject)
        return OUT_OF_RESOURCES
    return 0x0000
