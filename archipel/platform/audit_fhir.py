"""Audit events as FHIR R4 AuditEvent resources in the IHE BALP (Basic Audit Log Patterns) shape, and as CSV rows.

Mapping (see docs/audit.md):

- ``type``: the DICOM audit event ID (DCM 110110 Patient Record, 110112 Query, ...); ``subtype``: the RESTful
  interaction (``read``, ``search-type``, ``create``, ...) and our own action code;
- ``action`` C/R/U/D/E, ``outcome`` 0 / 4 (denied) / 8 (failed) with ``outcomeDesc``;
- agents as BALP has them: the user (``IRCP`` information recipient, or ``AUT`` author when they create; role,
  organisation, requestor), the client machine or DICOM node with its network address, and this server; data
  flowing to the client makes the client the Destination (DCM 110152) and the server the Source (110153);
- ``purposeOfEvent`` from HL7 v3 PurposeOfUse (``TREAT``, ``BTG`` for break-the-glass, ``PATADMIN``, ...);
- entities: the patient (Person / Patient role, by master id when known, else the local identifier) and the
  object (System Object / Domain Resource, or Query with the query text).
"""

from __future__ import annotations

import base64
import ipaddress
from dataclasses import dataclass
from typing import Any

from archipel.platform import audit
from archipel.platform.audit import AuditEvent

DCM = "http://dicom.nema.org/resources/ontology/DCM"
RESTFUL = "http://hl7.org/fhir/restful-interaction"
PARTICIPATION = "http://terminology.hl7.org/CodeSystem/v3-ParticipationType"
ACT_REASON = "http://terminology.hl7.org/CodeSystem/v3-ActReason"
ENTITY_TYPE = "http://terminology.hl7.org/CodeSystem/audit-entity-type"
OBJECT_ROLE = "http://terminology.hl7.org/CodeSystem/object-role"
SOURCE_TYPE = "http://terminology.hl7.org/CodeSystem/security-source-type"
ACTION_SYSTEM = "urn:archipel:audit-action"
ROLE_SYSTEM = "urn:archipel:role"
USER_SYSTEM = "urn:archipel:user"
SITE_SYSTEM = "urn:archipel:site"
MASTER_SYSTEM = "urn:archipel:master-patient"
AE_SYSTEM = "urn:dicom:ae"
ORGANIZATION_EXT = "urn:archipel:fhir:StructureDefinition/actor-organization"
CHAIN_HASH_EXT = "urn:archipel:fhir:StructureDefinition/audit-chain-hash"

EVENT_TYPES = {
    audit.INSTANCES_ACCESSED: "DICOM Instances Accessed",
    audit.INSTANCES_TRANSFERRED: "DICOM Instances Transferred",
    audit.EXPORT: "Export",
    audit.IMPORT: "Import",
    audit.PATIENT_RECORD: "Patient Record",
    audit.QUERY: "Query",
    audit.USER_AUTHENTICATION: "User Authentication",
    audit.AUDIT_LOG_USED: "Audit Log Used",
    audit.SECURITY_ALERT: "Security Alert",
}

#: Our action verb (before the colon) -> (FHIR AuditEvent.action, RESTful interaction or None).
VERBS: dict[str, tuple[str, str | None]] = {
    "read": ("R", "read"),
    "search": ("E", "search-type"),
    "create": ("C", "create"),
    "update": ("U", "update"),
    "delete": ("D", "delete"),
    "export": ("R", "read"),
    "administer": ("U", "update"),
}

PURPOSES = {
    audit.CARE: ("TREAT", "treatment"),
    audit.BREAK_GLASS: ("BTG", "break the glass"),
    audit.IDENTITY_MANAGEMENT: ("PATADMIN", "patient administration"),
    audit.PATIENT_REQUEST: ("PATRQT", "patient requested"),
    audit.OPERATIONS: ("HOPERAT", "healthcare operations"),
    audit.AUDIT_REVIEW: ("HCOMPL", "compliance"),
}

OUTCOMES = {audit.SUCCESS: "0", audit.DENIED: "4", audit.FAILURE: "8"}


@dataclass(frozen=True)
class Server:
    """This Archipel installation as the server agent and the audit source."""

    name: str
    address: str


def _address_type(address: str) -> str:
    """FHIR network-type: 2 for an IP address, 1 for a machine name."""
    try:
        ipaddress.ip_address(address)
    except ValueError:
        return "1"
    return "2"


def _verb(action: str) -> str:
    return action.split(":", 1)[0]


def _coding(system: str, code: str, display: str | None = None) -> dict[str, str]:
    c = {"system": system, "code": code}
    if display:
        c["display"] = display
    return c


def _purpose(e: AuditEvent) -> list[dict[str, Any]]:
    code, display = PURPOSES.get(e.purpose, ("", ""))
    if not code:
        return [{"text": e.purpose}] if e.purpose else []
    return [{"coding": [_coding(ACT_REASON, code, display)], "text": e.purpose}]


def _agents(e: AuditEvent, server: Server, to_client: bool) -> list[dict[str, Any]]:
    client_type = (
        _coding(DCM, "110152", "Destination Role ID")
        if to_client
        else _coding(DCM, "110153", "Source Role ID")
    )
    server_type = (
        _coding(DCM, "110153", "Source Role ID")
        if to_client
        else _coding(DCM, "110152", "Destination Role ID")
    )
    agents: list[dict[str, Any]] = []
    is_node = e.actor_kind == "node"
    if not is_node:
        user: dict[str, Any] = {
            "type": {
                "coding": [
                    _coding(PARTICIPATION, "IRCP", "information recipient")
                    if to_client
                    else _coding(PARTICIPATION, "AUT", "author")
                ]
            },
            "who": {"identifier": {"system": USER_SYSTEM, "value": e.actor}, "display": e.actor},
            "name": e.actor,
            "requestor": True,
            "purposeOfUse": _purpose(e),
        }
        if e.actor_role:
            user["role"] = [{"coding": [_coding(ROLE_SYSTEM, e.actor_role)], "text": e.actor_role}]
        if e.actor_site:
            user["extension"] = [
                {
                    "url": ORGANIZATION_EXT,
                    "valueReference": {
                        "identifier": {"system": SITE_SYSTEM, "value": e.actor_site},
                        "display": e.actor_site,
                    },
                }
            ]
        agents.append(user)
    client: dict[str, Any] = {"type": {"coding": [client_type]}, "requestor": is_node}
    if is_node:
        client["who"] = {"identifier": {"system": AE_SYSTEM, "value": e.actor}, "display": e.actor}
        client["altId"] = e.actor
        if e.actor_site:
            client["role"] = [{"coding": [_coding(SITE_SYSTEM, e.actor_site)], "text": e.actor_site}]
    else:
        client["who"] = {"display": e.source or "unknown"}
    if e.source:
        client["network"] = {"address": e.source, "type": _address_type(e.source)}
    agents.append(client)
    agents.append(
        {
            "type": {"coding": [server_type]},
            "who": {"identifier": {"system": AE_SYSTEM, "value": server.name}, "display": server.name},
            "requestor": False,
            "network": {"address": server.address, "type": _address_type(server.address)},
        }
    )
    return agents


def _entities(e: AuditEvent, verb: str) -> list[dict[str, Any]]:
    entities: list[dict[str, Any]] = []
    if e.master_id is not None or e.patient:
        if e.master_id is not None:
            ident = {"system": MASTER_SYSTEM, "value": str(e.master_id)}
        else:
            issuer, _, local = e.patient.partition("/")
            ident = {"system": f"urn:archipel:issuer:{issuer}", "value": local or issuer}
        patient: dict[str, Any] = {
            "what": {"type": "Patient", "identifier": ident},
            "type": _coding(ENTITY_TYPE, "1", "Person"),
            "role": _coding(OBJECT_ROLE, "1", "Patient"),
        }
        if e.patient:
            patient["detail"] = [{"type": "local-patient", "valueString": e.patient}]
        entities.append(patient)
    if e.object:
        if verb == "search":
            entities.append(
                {
                    "type": _coding(ENTITY_TYPE, "2", "System Object"),
                    "role": _coding(OBJECT_ROLE, "24", "Query"),
                    "query": base64.b64encode(e.object.encode()).decode(),
                }
            )
        else:
            entities.append(
                {
                    "what": {"identifier": {"value": e.object[:1000]}},
                    "type": _coding(ENTITY_TYPE, "2", "System Object"),
                    "role": _coding(OBJECT_ROLE, "4", "Domain Resource"),
                }
            )
    return entities


def to_fhir(e: AuditEvent, server: Server) -> dict[str, Any]:
    """One event as a FHIR R4 AuditEvent (a JSON-ready dict) in the BALP shape."""
    verb = _verb(e.action)
    action, interaction = VERBS.get(verb, ("E", None))
    subtype = [_coding(ACTION_SYSTEM, e.action)]
    if interaction:
        subtype.insert(0, _coding(RESTFUL, interaction, interaction))
    # Creation and import send data to the server; everything else sends it to the client.
    to_client = verb not in ("create", "update") and e.event_type != audit.IMPORT
    resource: dict[str, Any] = {
        "resourceType": "AuditEvent",
        "id": str(e.id),
        "extension": [{"url": CHAIN_HASH_EXT, "valueString": e.hash}],
        "type": _coding(DCM, e.event_type, EVENT_TYPES.get(e.event_type)),
        "subtype": subtype,
        "action": action,
        "recorded": e.at.isoformat().replace("+00:00", "Z"),
        "outcome": OUTCOMES.get(e.outcome, "8"),
        "purposeOfEvent": _purpose(e),
        "agent": _agents(e, server, to_client),
        "source": {
            "site": server.name,
            "observer": {"display": server.name},
            "type": [_coding(SOURCE_TYPE, "4", "Application Server")],
        },
    }
    if e.outcome != audit.SUCCESS and e.detail:
        resource["outcomeDesc"] = e.detail
    if not resource["purposeOfEvent"]:
        del resource["purposeOfEvent"]
    entities = _entities(e, verb)
    if entities:
        resource["entity"] = entities
    return resource


def bundle(
    events: list[AuditEvent], server: Server, *, total: int | None = None, links: dict[str, str] | None = None
) -> dict[str, Any]:
    """A Bundle of AuditEvents: a ``searchset`` with ``total`` and paging links, or a ``collection`` when
    ``total`` is ``None`` (exports)."""
    searchset = total is not None
    b: dict[str, Any] = {"resourceType": "Bundle", "type": "searchset" if searchset else "collection"}
    if searchset:
        b["total"] = total
    if links:
        b["link"] = [{"relation": rel, "url": url} for rel, url in links.items()]
    entries = []
    for e in events:
        entry: dict[str, Any] = {"resource": to_fhir(e, server)}
        if searchset:
            entry["search"] = {"mode": "match"}
        entries.append(entry)
    b["entry"] = entries
    return b


CSV_COLUMNS = (
    "id",
    "at",
    "event_type",
    "action",
    "outcome",
    "purpose",
    "actor",
    "actor_role",
    "actor_kind",
    "actor_site",
    "source",
    "patient",
    "master_id",
    "object",
    "detail",
    "prev_hash",
    "hash",
)


def csv_row(e: AuditEvent) -> list[str]:
    """One event as the values of :data:`CSV_COLUMNS`."""
    values = {
        "id": str(e.id),
        "at": e.at.isoformat(),
        "master_id": "" if e.master_id is None else str(e.master_id),
    }
    return [values[c] if c in values else str(getattr(e, c)) for c in CSV_COLUMNS]
