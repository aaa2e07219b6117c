"""ORU^R01: a RIS report becomes a document of the registry (:mod:`archipel.radiology.documents`), linked to its
study (IPC-3 / ZDS-1 Study Instance UID, else the patient's study of the accession number, OBR-18 or OBR-3).

The text is the OBX lines of value type TX, FT or ST (one line per repetition); an OBX of type ED with
``^application^pdf^Base64^...`` gives a PDF instead. OBR-25 says what the report is: ``P`` a preliminary
(revised by the next one), ``F`` final (signs the preliminary, or registers a signed report), ``C`` a correction
of a final report (an addendum: a signed report is never changed). The reports of one order are found again by
their order number (OBR-3 filler, else OBR-2 placer, else the accession), kept as the document's source.

A report that arrives before its images keeps its accession number: the study is linked to it when it is stored
(:mod:`archipel.radiology.documents_expected`).
"""

from __future__ import annotations

import base64
import binascii

from sqlalchemy import select

from archipel.platform import access
from archipel.platform.runtime import Runtime
from archipel.radiology import documents
from archipel.radiology.documents_content import PDF, TEXT
from archipel.radiology.documents_models import AMENDED, FINAL, PRELIMINARY, Document
from archipel.radiology.hl7.handlers import Outcome, Sender, feed_patient, register
from archipel.radiology.hl7.messages import (
    DATA_TYPE_ERROR,
    REQUIRED_FIELD_MISSING,
    TABLE_VALUE_NOT_FOUND,
    Parsed,
    Refused,
    first,
    repetitions,
    segments,
    value,
)
from archipel.radiology.hl7.orders import study_reference
from archipel.radiology.telerad import study_of_accession

#: LOINC 18748-4: Diagnostic imaging study (the radiology report).
REPORT_TYPE, REPORT_DISPLAY = "18748-4", "Diagnostic imaging study"
TEXT_TYPES = frozenset({"TX", "FT", "ST"})
STATUSES = {"P": PRELIMINARY, "F": FINAL, "C": "correction"}


def content_of(parsed: Parsed) -> tuple[bytes, str]:
    """The report's content and its media type; :class:`Refused` when no OBX carries any."""
    msg = parsed.message
    lines: list[str] = []
    for obx in segments(msg, "OBX"):
        kind = value(msg, obx, 2).upper()
        if kind == "ED":
            if value(msg, obx, 5, 1, 3).upper() != "PDF" or value(msg, obx, 5, 1, 4).upper() != "BASE64":
                raise Refused("an ED observation must be ^application^PDF^Base64^data", DATA_TYPE_ERROR)
            try:
                return base64.b64decode(value(msg, obx, 5, 1, 5), validate=True), PDF
            except binascii.Error as exc:
                raise Refused(f"the PDF in OBX-5 is not valid base64: {exc}", DATA_TYPE_ERROR) from exc
        if kind in TEXT_TYPES:
            lines += [value(msg, obx, 5, rep) for rep in range(1, repetitions(obx, 5) + 1)]
    text = "\n".join(lines).strip()
    if not text:
        raise Refused("the report has no text (OBX TX/FT/ST) and no PDF (OBX ED)", REQUIRED_FIELD_MISSING)
    return text.encode("utf-8"), TEXT


def _author(parsed: Parsed) -> str:
    msg, obr = parsed.message, first(parsed.message, "OBR")
    # OBR-32 (principal result interpreter) is ID&family&given inside its first component.
    name = " ".join(p for p in (value(msg, obr, 32, 1, 1, 3), value(msg, obr, 32, 1, 1, 2)) if p)
    return name or " ".join(p for p in (value(msg, obr, 16, 1, 3), value(msg, obr, 16, 1, 2)) if p)


def _previous(rt: Runtime, site: str, source: str) -> tuple[int, str] | None:
    with rt.db.sessions() as s:
        row = s.execute(
            select(Document.id, Document.status)
            .where(Document.site == site, Document.source == source, Document.relates_to.is_(None))
            .order_by(Document.id.desc())
            .limit(1)
        ).first()
    return (row[0], row[1]) if row is not None else None


def handle_result(rt: Runtime, parsed: Parsed, sender: Sender) -> Outcome:
    """Register, revise, sign or amend the report of an order, by OBR-25."""
    msg = parsed.message
    obr = first(msg, "OBR")
    code = value(msg, obr, 25).upper()
    status = STATUSES.get(code)
    if status is None:
        raise Refused(f"result status {code!r} (OBR-25) is not P, F or C", TABLE_VALUE_NOT_FOUND)
    content, media = content_of(parsed)
    patient = feed_patient(rt, parsed, sender)
    issuer, patient_id = patient.patient.split("/", 1)
    accession, uid = study_reference(parsed)
    if not uid and accession:
        with rt.db.sessions() as s:
            uid = study_of_accession(s, issuer, patient_id, accession)
    order = value(msg, obr, 3) or value(msg, obr, 2) or accession
    if not order:
        raise Refused(
            "the report names no order (OBR-3, OBR-2) and no accession number", REQUIRED_FIELD_MISSING
        )
    source = f"hl7:{order}"[:64]
    title = value(msg, obr, 4, 1, 2) or "Compte rendu d'imagerie"
    previous = _previous(rt, sender.site, source)
    who = sender.principal
    try:
        if previous is None:
            if status == "correction":
                raise Refused(
                    f"a correction (OBR-25 C) of order {order}, whose report we never received", "204"
                )
            doc = documents.register(
                rt.db,
                rt.blobs,
                who,
                issuer=issuer,
                patient_id=patient_id,
                type_code=REPORT_TYPE,
                type_display=REPORT_DISPLAY,
                title=title,
                content=content,
                content_type=media,
                author=_author(parsed),
                organisation=sender.site,
                site=sender.site,
                status=status,
                study_uids=[uid] if uid else [],
                source=source,
                accession_number=accession,
                client=sender.peer,
            )
            verb = f"registered {status}"
        else:
            doc_id, current = previous
            if current == PRELIMINARY:
                doc = documents.revise(
                    rt.db, rt.blobs, who, doc_id, content=content, content_type=media, title=title
                )
                if status != PRELIMINARY:
                    doc = documents.sign(rt.db, who, doc_id, client=sender.peer)
                verb = "revised" if status == PRELIMINARY else "signed"
            elif current in (FINAL, AMENDED) and status == "correction":
                doc = documents.add_addendum(
                    rt.db,
                    rt.blobs,
                    who,
                    doc_id,
                    content=content,
                    content_type=media,
                    reason=f"correction sent by the RIS of {sender.site}",
                    author=_author(parsed),
                    client=sender.peer,
                )
                verb = f"addendum to document {doc_id}"
            else:
                raise Refused(
                    f"the report of order {order} is {current} already: send a correction (OBR-25 C)",
                    DATA_TYPE_ERROR,
                )
    except (documents.DocumentInvalid, documents.UnsupportedContentType, documents.DocumentLocked) as exc:
        raise Refused(f"the document registry refuses the report: {exc}", DATA_TYPE_ERROR) from exc
    except access.AccessDenied as exc:
        raise Refused(f"the access policy refuses the report: {exc.reason}", "207") from exc
    linked = f"study {uid}" if uid else "no study yet"
    return Outcome(f"document {doc.id} {verb} ({linked})", patient.patient, patient.master)


register("ORU^R01", handle_result)
