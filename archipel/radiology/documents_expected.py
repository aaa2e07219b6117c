"""Reports that came before their images: a document registered with an accession number and no study (an
ORU^R01 the RIS sent before the modality sent the images) is linked to the study when the study is stored.

The archive's stored-object listener (:mod:`archipel.radiology.stored`) looks for documents of the same patient
(issuer and PatientID) and accession number that do not name the study yet, and adds the ``DocumentStudy`` rows.
Once linked, the study's next instances find nothing to do: one indexed read each.
"""

from __future__ import annotations

import logging

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from archipel.platform.db import Database
from archipel.radiology import stored
from archipel.radiology.documents_models import Document, DocumentStudy
from archipel.radiology.stored import StoredObject

log = logging.getLogger("archipel.documents")


def waiting_documents(
    db: Database, issuer: str, patient_id: str, accession: str, study_uid: str
) -> list[int]:
    """Ids of the patient's documents of this accession number that are not linked to ``study_uid`` yet."""
    if not (accession and study_uid):
        return []
    linked = select(DocumentStudy.document_id).where(DocumentStudy.study_uid == study_uid)
    stmt = select(Document.id).where(
        Document.accession_number == accession,
        Document.issuer == issuer,
        Document.patient_id == patient_id,
        Document.id.not_in(linked),
    )
    with db.sessions() as s:
        return list(s.execute(stmt.order_by(Document.id)).scalars())


def on_study_stored(db: Database, stored_object: StoredObject) -> None:
    """The stored-object listener: link the study just stored to the documents waiting for its accession."""
    parsed = stored_object.parsed
    waiting = waiting_documents(
        db, parsed.issuer, parsed.patient_id, parsed.accession_number, parsed.study_uid
    )
    if not waiting:
        return
    try:
        with db.write() as s:
            already = set(
                s.execute(
                    select(DocumentStudy.document_id).where(
                        DocumentStudy.study_uid == parsed.study_uid, DocumentStudy.document_id.in_(waiting)
                    )
                ).scalars()
            )
            s.add_all(
                DocumentStudy(document_id=doc_id, study_uid=parsed.study_uid)
                for doc_id in waiting
                if doc_id not in already
            )
    except IntegrityError:
        # Another instance of the study, stored at the same moment in another process, linked them first.
        log.info("event=document_study_link_race study=%s", parsed.study_uid)
        return
    log.info(
        "event=document_study_linked documents=%s study=%s issuer=%s",
        ",".join(map(str, waiting)),
        parsed.study_uid,
        parsed.issuer,
    )


def install() -> None:
    """Link arriving studies to the documents that wait for their accession number (any process that stores)."""
    stored.on_stored("document-expected-study", on_study_stored)
