"""C-MOVE and C-GET SCP: send matching instances as stored, to a registered node or back on the association.

The identifier is matched on the unique keys the standard requires for a retrieve (PS3.4 C.4.2.2.1): the
Patient ID, Study, Series or SOP Instance UIDs (lists allowed at the retrieve level), plus any higher-level
unique keys given. Only data the caller may read (``access.read_scope``) are matched, inside the SQL; for C-MOVE
also only what the destination node may read, so a move cannot hand data to a node that could not retrieve it
itself. Each request is checked and audited once per patient through :func:`access.check`, as
DICOM Instances Transferred (both C-MOVE and C-GET send copies by C-STORE, PS3.15 A.5.3.5).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from pydicom.dataset import Dataset
from pynetdicom import evt
from pynetdicom.presentation import PresentationContext, build_context
from sqlalchemy import Select, select

from archipel.platform import access, access_facts, audit, confidentiality
from archipel.platform.authn import Principal
from archipel.platform.db import Database
from archipel.platform.runtime import Runtime
from archipel.radiology import visibility
from archipel.radiology.dimse.nodes import NodeRegistry, node_principal
from archipel.radiology.dimse.sending import load_stored, retrieve_contexts
from archipel.radiology.dimse.store import failure
from archipel.radiology.dimse.transport import set_nodelay
from archipel.radiology.models import Instance, Patient, Series, Study

log = logging.getLogger("archipel.dimse")

VERIFICATION = "1.2.840.10008.1.1"
PENDING = 0xFF00
CANCELLED = 0xFE00
#: PS3.4 C.4.2.1.5 / C.4.3.1.4: Failed, identifier does not match SOP class.
IDENTIFIER_MISMATCH = 0xA900
#: PS3.4 C.4.2.1.5 / C.4.3.1.4: Failed, unable to process.
UNABLE_TO_PROCESS = 0xC000
#: PS3.7 C.5.12: Refused, not authorised.
NOT_AUTHORISED = 0x0124

PATIENT_ROOT = ("PATIENT", "STUDY", "SERIES", "IMAGE")
STUDY_ROOT = ("STUDY", "SERIES", "IMAGE")
#: Retrieve SOP classes (MOVE and GET) and the query/retrieve levels of their information model.
RETRIEVE_LEVELS: dict[str, tuple[str, ...]] = {
    "1.2.840.10008.5.1.4.1.2.1.2": PATIENT_ROOT,
    "1.2.840.10008.5.1.4.1.2.1.3": PATIENT_ROOT,
    "1.2.840.10008.5.1.4.1.2.2.2": STUDY_ROOT,
    "1.2.840.10008.5.1.4.1.2.2.3": STUDY_ROOT,
    "1.2.840.10008.5.1.4.1.2.3.2": ("PATIENT", "STUDY"),
    "1.2.840.10008.5.1.4.1.2.3.3": ("PATIENT", "STUDY"),
    "1.2.840.10008.5.1.4.1.2.4.2": STUDY_ROOT,
    "1.2.840.10008.5.1.4.1.2.4.3": STUDY_ROOT,
    "1.2.840.10008.5.1.4.1.2.5.3": STUDY_ROOT,
}
#: Composite Instance Retrieve Without Bulk Data: pynetdicom strips bulk data, so bytes cannot stay unchanged.
WITHOUT_BULK_DATA_GET = "1.2.840.10008.5.1.4.1.2.5.3"
#: The unique key of each level, and the column it matches.
UNIQUE_KEYS: dict[str, tuple[str, Any]] = {
    "PATIENT": ("PatientID", Patient.patient_id),
    "STUDY": ("StudyInstanceUID", Study.study_uid),
    "SERIES": ("SeriesInstanceUID", Series.series_uid),
    "IMAGE": ("SOPInstanceUID", Instance.sop_uid),
}


#: The columns :func:`retrieve_statement` selects, in order.
RetrieveSelect = Select[str, str, str, str, str, str, str, str, str]


class IdentifierError(ValueError):
    """A retrieve identifier that does not fit the information model; the message names the key."""


@dataclass(frozen=True)
class RetrieveMatch:
    """One instance to send."""

    sop_uid: str
    sop_class_uid: str
    transfer_syntax: str
    blob_key: str
    patient: str
    site: str
    study_uid: str
    confidentiality: str


def _values(identifier: Dataset, keyword: str) -> list[str]:
    value = identifier.get(keyword)
    if value is None:
        return []
    items = value.split("\\") if isinstance(value, str) else list(value)
    return [str(v).strip() for v in items if str(v).strip()]


def retrieve_statement(
    sop_class: str, identifier: Dataset, scopes: Sequence[access.ReadScope]
) -> RetrieveSelect:
    """The query selecting the instances a retrieve identifier names, restricted to what every one of
    ``scopes`` may read (the caller's; for C-MOVE also the destination's).

    Raises :class:`IdentifierError` for a missing or unknown level, or a missing unique key.
    """
    levels = RETRIEVE_LEVELS.get(sop_class)
    if levels is None:
        raise IdentifierError(f"unsupported retrieve SOP class {sop_class}")
    level = str(identifier.get("QueryRetrieveLevel", "") or "").strip().upper()
    if level not in levels:
        raise IdentifierError(f"QueryRetrieveLevel {level!r} not in {'/'.join(levels)}")
    stmt = (
        select(
            Instance.sop_uid,
            Instance.sop_class_uid,
            Instance.transfer_syntax,
            Instance.blob_key,
            Patient.issuer,
            Patient.patient_id,
            Study.site,
            Study.study_uid,
            Study.confidentiality,
        )
        .join(Series, Instance.series_pk == Series.id)
        .join(Study, Series.study_pk == Study.id)
        .join(Patient, Study.patient_pk == Patient.id)
    )
    for current in levels[: levels.index(level) + 1]:
        keyword, column = UNIQUE_KEYS[current]
        values = _values(identifier, keyword)
        if current == level and not values:
            raise IdentifierError(f"missing unique key {keyword} at level {level}")
        if current == "PATIENT" and len(values) > 1:
            raise IdentifierError("PatientID must be a single value")
        if values:
            stmt = stmt.where(column.in_(values))
    issuer = str(identifier.get("IssuerOfPatientID", "") or "").strip()
    if issuer:
        stmt = stmt.where(Patient.issuer == issuer)
    for scope in scopes:
        stmt = stmt.where(visibility.condition(scope))
    return stmt.order_by(Study.id, Series.series_number, Series.id, Instance.instance_number, Instance.id)


def find_matches(db: Database, stmt: RetrieveSelect) -> list[RetrieveMatch]:
    """Run a :func:`retrieve_statement`."""
    with db.sessions() as s:
        return [
            RetrieveMatch(
                sop_uid=r.sop_uid,
                sop_class_uid=r.sop_class_uid,
                transfer_syntax=r.transfer_syntax,
                blob_key=r.blob_key,
                patient=f"{r.issuer}/{r.patient_id}",
                site=r.site,
                study_uid=r.study_uid,
                confidentiality=r.confidentiality,
            )
            for r in s.execute(stmt)
        ]


def _authorise(
    db: Database, principal: Principal, matches: list[RetrieveMatch], op: str, source: str
) -> None:
    """Check and audit the request once per patient; raises :class:`access.AccessDenied`."""
    by_patient: dict[str, list[RetrieveMatch]] = {}
    for m in matches:
        by_patient.setdefault(m.patient, []).append(m)
    if not by_patient:
        by_patient[""] = []
    for patient, items in by_patient.items():
        studies = sorted({m.study_uid for m in items})
        access.check(
            db,
            principal,
            access.READ,
            access.Resource(
                "study",
                site=items[0].site if items else "",
                patient=patient,
                ident=f"{op} instances={len(items)} studies={','.join(studies)}",
                confidentiality=confidentiality.decode(items[0].confidentiality) if items else frozenset(),
            ),
            event_type=audit.INSTANCES_TRANSFERRED,
            source=source,
        )


def _source(event: evt.Event) -> str:
    requestor = event.assoc.requestor
    return f"dimse:{requestor.ae_title.strip()}@{requestor.address}"


def _scope(db: Database, principal: Principal) -> access.ReadScope:
    _resource, facts = access_facts.load(db, principal)
    return access.read_scope(principal, facts)


def _prepare(
    event: evt.Event, rt: Runtime, principal: Principal, others: Sequence[Principal], op: str
) -> list[RetrieveMatch] | Dataset:
    """The matches of the request (what ``principal`` and each of ``others`` may all read), or a failure status
    to answer with."""
    sop_class = str(event.request.AffectedSOPClassUID)
    try:
        identifier = event.identifier
        scopes = [_scope(rt.db, p) for p in (principal, *others)]
        matches = find_matches(rt.db, retrieve_statement(sop_class, identifier, scopes))
        _authorise(rt.db, principal, matches, op, _source(event))
    except IdentifierError as exc:
        log.warning("event=retrieve_refused op=%s calling_ae=%s reason=%s", op, principal.subject, exc)
        return failure(IDENTIFIER_MISMATCH, str(exc))
    except access.AccessDenied as exc:
        log.warning("event=retrieve_denied op=%s calling_ae=%s reason=%s", op, principal.subject, exc)
        return failure(NOT_AUTHORISED, exc.reason)
    except Exception as exc:
        log.exception("event=retrieve_failed op=%s calling_ae=%s", op, principal.subject)
        return failure(UNABLE_TO_PROCESS, f"cannot process the identifier: {type(exc).__name__}")
    log.info("event=retrieve_started op=%s calling_ae=%s instances=%d", op, principal.subject, len(matches))
    return matches


def _sub_operations(
    event: evt.Event, rt: Runtime, matches: list[RetrieveMatch], unchanged: bool = True
) -> Iterator[tuple[int, Dataset | None]]:
    """Yield (Pending, instance) per match, or (Cancel, None) once a C-CANCEL has arrived."""
    for m in matches:
        if event.is_cancelled:
            log.info("event=retrieve_cancelled calling_ae=%s", event.assoc.requestor.ae_title.strip())
            yield CANCELLED, None
            return
        try:
            stored = load_stored(rt.blobs, m.blob_key, m.transfer_syntax, unchanged)
        except Exception:
            log.exception("event=retrieve_blob_unreadable sop_uid=%s blob=%s", m.sop_uid, m.blob_key)
            # A data set without SOP Class UID makes pynetdicom's send fail, which it counts as a failed
            # sub-operation and lists in Failed SOP Instance UID List: the accounting the standard asks for.
            stored = Dataset()
            stored.SOPInstanceUID = m.sop_uid
        yield PENDING, stored


def _options(contexts: list[PresentationContext]) -> dict[str, Any]:
    """Keyword arguments of the association pynetdicom opens to the move destination."""
    return {"contexts": contexts, "evt_handlers": [(evt.EVT_CONN_OPEN, set_nodelay)]}


def handle_move(event: evt.Event, rt: Runtime, nodes: NodeRegistry) -> Iterator[Any]:
    """EVT_C_MOVE: yield the destination, the number of sub-operations, then each instance."""
    principal = nodes.principal(event.assoc)
    destination = nodes.destination(str(event.move_destination))
    if destination is None:
        log.warning(
            "event=move_refused calling_ae=%s destination=%s reason=unknown_destination",
            principal.subject,
            str(event.move_destination).strip(),
        )
        yield None, None
        return
    prepared = _prepare(
        event, rt, principal, [node_principal(destination)], f"C-MOVE to {destination.ae_title}"
    )
    if isinstance(prepared, Dataset):
        # pynetdicom can only report a failure after associating with the destination and counting one
        # sub-operation; the association carries just Verification and sends nothing.
        yield destination.host, destination.port, _options([build_context(VERIFICATION)])
        yield 1
        yield prepared, None
        return
    contexts = retrieve_contexts({(m.sop_class_uid, m.transfer_syntax) for m in prepared})
    yield destination.host, destination.port, _options(contexts)
    yield len(prepared)
    yield from _sub_operations(event, rt, prepared)


def handle_get(event: evt.Event, rt: Runtime, nodes: NodeRegistry) -> Iterator[Any]:
    """EVT_C_GET: yield the number of sub-operations, then each instance."""
    principal = nodes.principal(event.assoc)
    prepared = _prepare(event, rt, principal, [], "C-GET")
    if isinstance(prepared, Dataset):
        yield 1
        yield prepared, None
        return
    yield len(prepared)
    unchanged = str(event.request.AffectedSOPClassUID) != WITHOUT_BULK_DATA_GET
    yield from _sub_operations(event, rt, prepared, unchanged)
