"""The FHIR server's CapabilityStatement (``GET /fhir/metadata``): what a FHIR client may ask of ``/fhir``.

It lists the DocumentReference interactions and search parameters that ``documents_fhir`` implements, so a
client (an MHD Document Consumer, say) finds them without reading our documentation.
"""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import Response
from fhir.resources.R4B.capabilitystatement import CapabilityStatement

from archipel import __version__

FHIR_JSON = "application/fhir+json"

router = APIRouter()

_SEARCH = [
    ("patient", "reference", "the master patient: 123 or Patient/123"),
    ("subject", "reference", "same as patient"),
    ("patient.identifier", "token", "the local identifier: urn:archipel:site:ISSUER|PatientID"),
    ("type", "token", "LOINC code, or http://loinc.org|code; comma-separated for several"),
    ("date", "date", "registration date with eq, ge, gt, le, lt prefixes; repeat for a range"),
    ("status", "token", "current, superseded, entered-in-error"),
    ("_count", "number", "page size, at most 200"),
    ("_offset", "number", "entries to skip (the next link carries it)"),
]


def capability_statement() -> CapabilityStatement:
    """This server's CapabilityStatement (FHIR R4)."""
    return CapabilityStatement.model_validate(
        {
            "resourceType": "CapabilityStatement",
            "status": "active",
            "date": "2026-12-02",
            "kind": "instance",
            "software": {"name": "Archipel", "version": __version__},
            "implementation": {
                "description": "Archipel document registry (IHE MHD Document Responder, read-only)"
            },
            "fhirVersion": "4.0.1",
            "format": [FHIR_JSON, "json"],
            "rest": [
                {
                    "mode": "server",
                    "security": {
                        "description": "Bearer token or session cookie; every read and search is decided by "
                        "the access policy and audited"
                    },
                    "resource": [
                        {
                            "type": "DocumentReference",
                            "interaction": [{"code": "read"}, {"code": "search-type"}],
                            "searchParam": [
                                {"name": name, "type": kind, "documentation": doc}
                                for name, kind, doc in _SEARCH
                            ],
                        }
                    ],
                }
            ],
        }
    )


@router.get("/metadata")
def metadata() -> Response:
    """The CapabilityStatement (no patient data; no sign-in needed, as FHIR clients expect)."""
    return Response(capability_statement().model_dump_json(exclude_none=True), media_type=FHIR_JSON)
