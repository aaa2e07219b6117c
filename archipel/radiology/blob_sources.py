"""The archive's blob references, registered with the platform's storage lifecycle (``platform.blob_refs``).

Importing this module registers them. An instance's data was last active when its study last received an
instance: a study stays in the hot tier as long as it grows (a prior kept for comparison included), and moves to
the archive tier as a whole ``storage_hot_days`` after its last arrival. Superseded versions date from their
replacement, documents from their creation.
"""

from __future__ import annotations

from sqlalchemy import String, func, select, type_coerce

from archipel.platform import blob_refs
from archipel.radiology.documents_models import Document
from archipel.radiology.models import Instance, InstanceVersion, Series
from archipel.radiology.retention_models import RejectedInstance


def instances() -> blob_refs.ReferenceSelect:
    """Every stored instance's blob, dated by its study's last received instance."""
    last = (
        select(Series.study_pk.label("study_pk"), func.max(Instance.received_at).label("last_active"))
        .join(Instance, Instance.series_pk == Series.id)
        .group_by(Series.study_pk)
        .subquery("study_last")
    )
    return (
        select(
            Instance.blob_key.label("key"),
            Instance.sha256.label("sha256"),
            Instance.size.label("size"),
            last.c.last_active.label("last_active"),
        )
        .join(Series, Instance.series_pk == Series.id)
        .join(last, last.c.study_pk == Series.study_pk)
    )


def instance_versions() -> blob_refs.ReferenceSelect:
    """Superseded copies kept under the ``version`` duplicate policy, dated by their replacement."""
    v = InstanceVersion
    return select(
        v.blob_key.label("key"),
        v.sha256.label("sha256"),
        v.size.label("size"),
        v.superseded_at.label("last_active"),
    )


def documents() -> blob_refs.ReferenceSelect:
    """Every document's content, dated by the document's creation."""
    d = Document
    return select(
        d.blob_key.label("key"),
        d.sha256.label("sha256"),
        d.size.label("size"),
        d.created_at.label("last_active"),
    )


def rejected_instances() -> blob_refs.ReferenceSelect:
    """Instances an IOCM rejection note rejected, whose bytes are kept until the retention run deletes them,
    dated by the rejection (radiology/rejection.py)."""
    r = RejectedInstance
    return select(
        # Never NULL here (the WHERE clause): the column is nullable only once the bytes are deleted.
        type_coerce(r.blob_key, String).label("key"),
        r.sha256.label("sha256"),
        r.size.label("size"),
        r.rejected_at.label("last_active"),
    ).where(r.blob_key.is_not(None))


blob_refs.register_source("radiology.instances", blob_refs.MAIN_STORE, instances)
blob_refs.register_source("radiology.instance_versions", blob_refs.MAIN_STORE, instance_versions)
blob_refs.register_source("radiology.documents", blob_refs.MAIN_STORE, documents)
blob_refs.register_source("radiology.rejected_instances", blob_refs.MAIN_STORE, rejected_instances)
