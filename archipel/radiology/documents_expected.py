"""Reports that came before their images: a document registered with an accession number and no study (an
ORU^R01 the RIS sent before the modality sent the images) is linked to the study when the study is stored.

The archive's stored-object listener (:mod:`archipel.radiology.stored`) looks for documents of the same patient
(issuer and PatientID) and accession number that do not name the study yet, and adds the ``DocumentStudy`` rows.
A study's instances look once a second while it arrives (one indexed read), not each.
"""

from __future__ import annotations

import logging

from sqlalchemy import bindparam, select
from sqlalchemy.exc import IntegrityError

from archipel.platform.db import Database
from archipel.radiology import stored
from archipel.radiology.documents_models import Document, DocumentStudy
from archipel.radiology.stored import StoredObject

log = logging.getLogger("archipel.documents")


_DOCUMENTS = Document.__table__
_LINKS = DocumentStudy.__table__
# Built once: the listener runs for every stored instance, and a Core statement from the compiled cache on a
# pooled connection costs a tenth of an ORM session's query.
_WAITING = (
    select(_DOCUMENTS.c.id)
    .where(
        _DOCUMENTS.c.accession_number == bindparam("accession"),
        _DOCUMENTS.c.issuer == bindparam("issuer"),
        _DOCUMENTS.c.patient_id == bindparam("patient_id"),
        _DOCUMENTS.c.id.not_in(
            select(_LINKS.c.document_id).where(_LINKS.c.study_uid == bindparam("study_uid"))
        ),
    )
    .order_by(_DOCUMENTS.c.id)
)


def waiting_documents(
    db: Database, issuer: str, patient_id: str, accession: str, study_uid: str
) -> list[int]:
    """Ids of the patient's documents of this accession number that are not linked to ``study_uid`` yet."""
    if not (accession and study_uid):
        return []
    params = {"accession": accession, "issuer": issuer, "patient_id": patient_id, "study_uid": study_uid}
    with db.engine.connect() as c:
        return list(c.execute(_WAITING, params).scalars())


#: A study's instances look for waiting documents once a second, not each (see stored.RecentStudies).
_LOOKED_AT = stored.RecentStudies()


def on_study_stored(db: Database, stored_object: StoredObject) -> None:
    """The stored-object listener: link the study just stored to the documents waiting for its accession."""
    parsed = stored_object.parsed
    if not (parsed.accession_number and parsed.study_uid) or not _LOOKED_AT.due(parsed.study_uid):
        return
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
