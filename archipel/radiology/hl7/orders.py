"""ORM^O01 and OMI^O23: a RIS order becomes a teleradiology reading request, for the study or the study expected
under its accession number (:mod:`archipel.radiology.telerad`).

ORC-1 ``NW`` (new order) creates the request, ``CA`` / ``OC`` / ``DC`` cancel it, by the placer order number
(ORC-2, else OBR-2). The priority is TQ1-9 (OMI), else ORC-7.6 / OBR-27.6 (ORM), HL7 table 0027: ``S`` -> STAT,
``A``, ``T`` and ``P`` -> urgent, ``R`` -> scheduled; the local code ``E`` -> emergency (within 24 h). The accession
number is IPC-1 (OMI), else OBR-18, else OBR-3; the Study Instance UID IPC-3, else ZDS-1. The patient's PID is fed
to the MPI first, as an ADT would be.
"""

from __future__ import annotations

from archipel.platform.runtime import Runtime
from archipel.radiology import telerad
from archipel.radiology.hl7.handlers import Outcome, Sender, feed_patient, register
from archipel.radiology.hl7.messages import (
    REQUIRED_FIELD_MISSING,
    TABLE_VALUE_NOT_FOUND,
    UNKNOWN_KEY,
    Parsed,
    Refused,
    first,
    value,
)
from archipel.radiology.telerad_models import EMERGENCY, SCHEDULED, STAT, URGENT, TeleradError

#: HL7 table 0027 priorities (and the local ``E``) to the teleradiology priorities.
PRIORITY = {"S": STAT, "A": URGENT, "T": URGENT, "P": URGENT, "R": SCHEDULED, "E": EMERGENCY}
NEW_ORDER = "NW"
CANCEL = frozenset({"CA", "OC", "DC"})


def priority_of(parsed: Parsed) -> str:
    """The order's priority; ``scheduled`` when the RIS gives none, :class:`Refused` for an unknown code."""
    msg = parsed.message
    tq1, orc, obr = first(msg, "TQ1", False), first(msg, "ORC", False), first(msg, "OBR", False)
    code = ""
    if tq1 is not None:
        code = value(msg, tq1, 9)
    if not code and orc is not None:
        code = value(msg, orc, 7, 1, 6)
    if not code and obr is not None:
        code = value(msg, obr, 27, 1, 6)
    code = code.upper()
    if not code:
        return SCHEDULED
    if code not in PRIORITY:
        raise Refused(
            f"priority {code!r} is not one of {', '.join(sorted(PRIORITY))} (HL7 table 0027)",
            TABLE_VALUE_NOT_FOUND,
        )
    return PRIORITY[code]


def study_reference(parsed: Parsed) -> tuple[str, str]:
    """``(accession number, Study Instance UID)`` of an order or result (either may be empty)."""
    msg = parsed.message
    ipc, obr, zds = first(msg, "IPC", False), first(msg, "OBR", False), first(msg, "ZDS", False)
    accession = value(msg, ipc, 1) if ipc is not None else ""
    uid = value(msg, ipc, 3) if ipc is not None else ""
    if obr is not None:
        accession = accession or value(msg, obr, 18) or value(msg, obr, 3)
    if zds is not None:
        uid = uid or value(msg, zds, 1)
    return accession, uid


def _physician(parsed: Parsed) -> dict[str, str]:
    msg = parsed.message
    obr, orc = first(msg, "OBR", False), first(msg, "ORC", False)
    seg, field = (obr, 16) if obr is not None and value(msg, obr, 16, 1, 2) else (orc, 12)
    if seg is None:
        return {"name": ""}
    name = " ".join(p for p in (value(msg, seg, field, 1, 3), value(msg, seg, field, 1, 2)) if p)
    phone = value(msg, obr, 17, 1, 1) or value(msg, obr, 17, 1, 12) if obr is not None else ""
    return {"name": name or value(msg, seg, field, 1, 1), "phone": phone}


def handle_order(rt: Runtime, parsed: Parsed, sender: Sender) -> Outcome:
    """Create (``NW``) or cancel (``CA``) the reading request of an order."""
    msg = parsed.message
    orc = first(msg, "ORC")
    obr = first(msg, "OBR", False)
    control = value(msg, orc, 1).upper()
    placer = value(msg, orc, 2) or (value(msg, obr, 2) if obr is not None else "")
    if not placer:
        raise Refused("ORC-2 (placer order number) is empty", REQUIRED_FIELD_MISSING)
    patient = feed_patient(rt, parsed, sender)
    issuer, patient_id = patient.patient.split("/", 1)
    try:
        if control in CANCEL:
            req = telerad.cancel_request(
                rt.db,
                sender.principal,
                requesting_site=sender.site,
                placer_order=placer,
                reason=f"order {control} from the RIS",
                source=sender.peer,
            )
            return Outcome(f"reading request {req.id} cancelled", patient.patient, patient.master)
        if control != NEW_ORDER:
            raise Refused(f"order control {control!r} (ORC-1) is not NW or CA", TABLE_VALUE_NOT_FOUND)
        accession, uid = study_reference(parsed)
        clinical = value(msg, obr, 13) if obr is not None else ""
        reason = (value(msg, obr, 31, 1, 2) or value(msg, obr, 31)) if obr is not None else ""
        exam = (value(msg, obr, 4, 1, 2) or value(msg, obr, 4)) if obr is not None else ""
        req = telerad.create_request(
            rt.db,
            sender.principal,
            issuer=issuer,
            patient_id=patient_id,
            accession_number=accession,
            study_uid=uid or None,
            requesting_site=sender.site,
            physician=_physician(parsed),
            clinical_info=clinical,
            justification=reason or exam,
            priority=priority_of(parsed),
            placer_order=placer,
            source=sender.peer,
        )
    except TeleradError as exc:
        error = UNKNOWN_KEY if exc.status == 404 else REQUIRED_FIELD_MISSING if exc.status == 422 else "207"
        raise Refused(f"the reading request is refused: {exc.reason}", error) from exc
    linked = "linked to its study" if req.study_uid else "study expected"
    return Outcome(f"reading request {req.id} ({req.priority}, {linked})", patient.patient, patient.master)


register("ORM^O01", handle_order)
register("OMI^O23", handle_order)
