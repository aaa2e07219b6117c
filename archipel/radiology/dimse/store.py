"""C-STORE SCP: every storage SOP class, acknowledged only once the instance is durable.

Each instance passes the access policy (``create`` for the calling node) before anything is written.

Auditing is per association, not per instance: one IMPORT event per patient received, written when the
association is released or aborted or its connection drops, with the counts and study UIDs; refusals and
denials get events of their own. An audit write is a committed, hash-chained row, and one per instance would
halve the ingest rate of a single association. The price: instances acknowledged on an association that is
cut by a crash of this process are in the index but not in the audit trail.
"""

from __future__ import annotations

import logging
import re
import threading
from collections import Counter
from dataclasses import dataclass, field
from io import BytesIO
from typing import cast

from pydicom.dataset import Dataset
from pynetdicom import evt
from pynetdicom.dimse_primitives import C_STORE
from sqlalchemy.exc import OperationalError

from archipel.platform import access, audit
from archipel.platform.authn import Principal
from archipel.platform.db import Database
from archipel.radiology.archive import Archive, IncomingBlob
from archipel.radiology.dicomfile import InvalidInstance
from archipel.radiology.dimse import wire
from archipel.radiology.dimse.nodes import NodeRegistry
from archipel.radiology.dimse.reactor import ReceivedDataSet

log = logging.getLogger("archipel.dimse")

SUCCESS = 0x0000
#: PS3.4 B.2.3: Refused, out of resources (disk, database unavailable).
OUT_OF_RESOURCES = 0xA700
#: PS3.4 B.2.3: Error, cannot understand (unreadable data set, unexpected failure).
CANNOT_UNDERSTAND = 0xC000
#: PS3.7 C.5.12: Refused, not authorised.
NOT_AUTHORISED = 0x0124
#: ErrorComment is LO: at most 64 characters.
ERROR_COMMENT_MAX = 64


#: UIDs (quoted or not) inside a reason: the response names the instance already, and 64 characters are few.
_UID_IN_TEXT = re.compile(r"\s*'?\b\d+(?:\.\d+){2,}\b'?")


def failure(status: int, comment: str) -> Dataset:
    """A DIMSE response status with an Error Comment: the reason without UIDs, cut to LO's 64 characters."""
    ds = Dataset()
    ds.Status = status
    ds.ErrorComment = _UID_IN_TEXT.sub("", comment).replace("\\", "/").strip()[:ERROR_COMMENT_MAX]
    return ds


@dataclass
class AssociationIngest:
    """What one association has sent so far, summarised into the audit trail when it ends."""

    principal: Principal
    site: str
    source: str
    outcomes: Counter[str] = field(default_factory=Counter)
    #: ``issuer/PatientID`` -> Study Instance UIDs received for that patient.
    studies: dict[str, set[str]] = field(default_factory=dict)
    refused: Counter[int] = field(default_factory=Counter)
    denied: int = 0
    denied_reason: str = ""


def received_part10(event: evt.Event) -> bytes:
    """The received data set as a Part-10 file: what ``event.encoded_dataset()`` returns, encoded directly."""
    request = cast(C_STORE, event.request)
    header = wire.part10_header(
        str(request.AffectedSOPClassUID),
        str(request.AffectedSOPInstanceUID),
        str(event.context.transfer_syntax),
    )
    received = request.DataSet
    if isinstance(received, ReceivedDataSet) and received.part10[: received.start] == header:
        return received.part10  # joined once with this header already, as it arrived
    return header + cast(BytesIO, received).getvalue()


class StoreService:
    """The C-STORE handler and the per-association audit summary, over one archive."""

    def __init__(self, archive: Archive, nodes: NodeRegistry, db: Database) -> None:
        self.archive = archive
        self.nodes = nodes
        self.db = db
        self._open: dict[int, AssociationIngest] = {}
        self._lock = threading.Lock()

    def _ingest(self, assoc: object) -> AssociationIngest:
        key = id(assoc)
        with self._lock:
            ingest = self._open.get(key)
        if ingest is None:
            node = self.nodes.node_of(assoc)
            requestor = assoc.requestor  # type: ignore[attr-defined]
            ingest = AssociationIngest(
                principal=self.nodes.principal(assoc),
                site=node.site if node is not None else "",
                source=f"dimse:{requestor.ae_title.strip()}@{requestor.address}",
            )
            with self._lock:
                ingest = self._open.setdefault(key, ingest)
        return ingest

    def incoming(self, request: wire.StoreRequest, transfer_syntax: str) -> IncomingBlob | None:
        """The listener's sink factory (``reactor.SinkFactory``): the blob that a plain C-STORE data set is
        written to as it arrives, starting with the File Meta Information that :func:`received_part10` puts
        before it."""
        header = wire.part10_header(request.sop_class_uid, request.sop_instance_uid, transfer_syntax)
        return self.archive.receiving(header)

    def handle_store(self, event: evt.Event) -> int | Dataset:
        """EVT_C_STORE: store the received data set as it came and return the DIMSE status."""
        incoming = cast(IncomingBlob | None, getattr(event.request, "incoming", None))
        try:
            return self._handle_store(event, incoming)
        finally:
            # Whatever was not stored: a denial, a refusal before the archive took it, an unexpected failure.
            if incoming is not None and not incoming.taken:
                self.archive.drop(incoming, str(cast(C_STORE, event.request).AffectedSOPInstanceUID))

    def _handle_store(self, event: evt.Event, incoming: IncomingBlob | None) -> int | Dataset:
        ingest = self._ingest(event.assoc)
        calling = ingest.principal.subject
        decision = access.allow(
            ingest.principal, access.CREATE, access.Resource("instance", site=ingest.site)
        )
        if not decision.allowed:
            ingest.denied += 1
            ingest.denied_reason = decision.reason
            log.warning("event=store_denied calling_ae=%s reason=%s", calling, decision.reason)
            return failure(NOT_AUTHORISED, decision.reason)
        try:
            data = received_part10(event)
            result = self.archive.store(
                data, source_ae=calling, default_issuer=ingest.site, incoming=incoming
            )
        except InvalidInstance as exc:
            ingest.refused[exc.code] += 1
            log.warning("event=store_refused calling_ae=%s code=0x%04X reason=%s", calling, exc.code, exc)
            return failure(exc.code, exc.reason)
        except (OSError, OperationalError) as exc:
            ingest.refused[OUT_OF_RESOURCES] += 1
            log.exception("event=store_failed calling_ae=%s code=0x%04X", calling, OUT_OF_RESOURCES)
            return failure(OUT_OF_RESOURCES, f"cannot store now: {type(exc).__name__}")
        except Exception as exc:
            # pynetdicom would answer 0xC211 without a reason; keep the reason and the listener up.
            ingest.refused[CANNOT_UNDERSTAND] += 1
            log.exception("event=store_failed calling_ae=%s code=0x%04X", calling, CANNOT_UNDERSTAND)
            return failure(CANNOT_UNDERSTAND, f"internal error: {type(exc).__name__}")
        ingest.outcomes[result.status] += 1
        ingest.studies.setdefault(result.patient, set()).add(result.study_uid)
        return SUCCESS

    def on_association_end(self, event: evt.Event) -> None:
        """EVT_RELEASED / EVT_ABORTED / EVT_CONN_CLOSE: write the association's audit summary, once."""
        with self._lock:
            ingest = self._open.pop(id(event.assoc), None)
        if ingest is None:
            return
        try:
            self._audit(ingest)
        except Exception:
            log.exception("event=store_audit_failed calling_ae=%s", ingest.principal.subject)

    def _audit(self, ingest: AssociationIngest) -> None:
        counts = " ".join(f"{k}={v}" for k, v in sorted(ingest.outcomes.items()))
        for patient, studies in sorted(ingest.studies.items()):
            audit.record(
                self.db,
                ingest.principal,
                audit.IMPORT,
                f"{access.CREATE}:instance",
                patient=patient,
                obj="studies=" + ",".join(sorted(studies)),
                source=ingest.source,
                detail=f"association {counts}",
            )
        if ingest.refused:
            codes = " ".join(f"0x{code:04X}={n}" for code, n in sorted(ingest.refused.items()))
            audit.record(
                self.db,
                ingest.principal,
                audit.IMPORT,
                f"{access.CREATE}:instance",
                outcome="failure",
                source=ingest.source,
                detail=f"refused {codes}",
            )
        if ingest.denied:
            audit.record(
                self.db,
                ingest.principal,
                audit.IMPORT,
                f"{access.CREATE}:instance",
                outcome="denied",
                source=ingest.source,
                detail=f"denied={ingest.denied} {ingest.denied_reason}",
            )
        log.info(
            "event=store_association_end calling_ae=%s %s refused=%d denied=%d",
            ingest.principal.subject,
            counts or "stored=0",
            sum(ingest.refused.values()),
            ingest.denied,
        )
