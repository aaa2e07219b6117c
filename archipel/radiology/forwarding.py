"""Forwarding stored studies to another DICOM node by C-STORE (a tumor board that reads on its own PACS).

The instances are sent with their stored bytes (:mod:`archipel.radiology.dimse.sending`), each study only
after the access policy allowed the acting principal to export it, and each transfer is audited.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from pynetdicom import AE
from sqlalchemy import select

from archipel.platform import access, audit
from archipel.platform.authn import Principal
from archipel.platform.runtime import Runtime
from archipel.radiology.dimse.sending import install_unchanged_sending, load_stored, retrieve_contexts
from archipel.radiology.models import DicomNode, Instance, Patient, Series, Study
from archipel.radiology.remote import RemoteError

log = logging.getLogger("archipel.prefetch")

#: Bounds of the association to a destination node (seconds).
FORWARD_TIMEOUT = 30.0


def forward_studies(
    rt: Runtime, actor: Principal, node_pk: int, study_uids: Sequence[str], source: str
) -> int:
    """C-STORE every stored instance of ``study_uids`` to node ``node_pk``; return how many were sent.

    Raises :class:`RemoteError` when the destination cannot be reached or refuses an instance, and
    :class:`access.AccessDenied` when ``actor`` may not export a study.
    """
    with rt.db.sessions() as s:
        node = s.get(DicomNode, node_pk)
        if node is None:
            raise RemoteError(f"no destination node {node_pk}")
        rows = s.execute(
            select(Instance, Study.study_uid, Study.site, Patient.issuer, Patient.patient_id)
            .join(Series, Series.id == Instance.series_pk)
            .join(Study, Study.id == Series.study_pk)
            .join(Patient, Patient.id == Study.patient_pk)
            .where(Study.study_uid.in_(list(study_uids)))
            .order_by(Study.study_uid, Series.id, Instance.id)
        ).all()
    checked: set[str] = set()
    for _inst, study_uid, site, issuer, patient_id in rows:
        if study_uid not in checked:
            resource = access.Resource(
                kind="study", site=site, patient=f"{issuer}/{patient_id}", ident=study_uid
            )
            access.check(rt.db, actor, access.READ, resource, event_type=audit.EXPORT, source=source)
            checked.add(study_uid)
    if not rows:
        return 0
    install_unchanged_sending()
    ae = AE(ae_title=rt.settings.ae_title)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = ae.connection_timeout = FORWARD_TIMEOUT
    contexts = retrieve_contexts({(i.sop_class_uid, i.transfer_syntax) for i, *_ in rows})
    assoc = ae.associate(node.host, node.port, contexts=contexts, ae_title=node.ae_title.strip())
    label = f"{node.ae_title.strip()}@{node.host}:{node.port}"
    if not assoc.is_established:
        raise RemoteError(f"destination {label} did not accept an association")
    sent = 0
    try:
        for inst, *_ in rows:
            status = assoc.send_c_store(load_stored(rt.blobs, inst.blob_key, inst.transfer_syntax))
            if not status or int(status.Status) not in (0x0000, 0xB000, 0xB007, 0xB006):
                code = f"0x{int(status.Status):04X}" if status else "no answer"
                raise RemoteError(f"destination {label} refused an instance ({code})")
            sent += 1
    finally:
        if assoc.is_established:
            assoc.release()
    for study_uid in sorted(checked):
        audit.record(
            rt.db,
            actor,
            audit.INSTANCES_TRANSFERRED,
            "prefetch-forward",
            obj=study_uid,
            source=source,
            detail=f"destination={node.ae_title.strip()}",
        )
    log.info("event=prefetch_forwarded destination=%s instances=%d", label, sent)
    return sent
