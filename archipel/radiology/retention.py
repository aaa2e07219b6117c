"""The retention run: what has expired under the retention rules, and its audited deletion.

A patient's record is weighed as a whole, per master patient (every identity the MPI links to it): its last
visit is the latest study or document date, its birth date comes from the MPI (else the archive). Each study and
document then expires on the date its rule (:mod:`archipel.platform.retention_rules`; the study category is a
modality such as ``MG``, the document category its LOINC type) gives for those facts. The MPI records no death
date, so the death clause never applies here yet. Instances rejected by an IOCM note expire
``retention_rejected_days`` after the note (at once for 113039 "Data Retention Policy Expired").

Nothing held (:mod:`archipel.radiology.legal_holds`) is deleted. Each study, document or rejected instance is
deleted in its own transaction, together with its audit event (one per object, naming the rule); blobs go only
after that commit, and only those no row references any more (content-addressed blobs may be shared). A crash
between the two leaves unreferenced blobs, which ``Archive.sweep_orphans`` removes.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Literal

from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session

from archipel.platform import audit
from archipel.platform.authn import Principal
from archipel.platform.db import Database, utcnow
from archipel.platform.identity.models import LocalIdentity, MasterPatient
from archipel.platform.retention_rules import PatientFacts, RuleSet
from archipel.radiology.documents_models import Document, DocumentStudy
from archipel.radiology.legal_holds import ActiveHolds, active_holds
from archipel.radiology.models import Instance, InstanceVersion, Patient, Series, Study
from archipel.radiology.rejection import RETENTION_EXPIRED
from archipel.radiology.retention_models import RejectedInstance

log = logging.getLogger("archipel.retention")

#: DICOM audit event "DICOM Study Deleted" (DCM 110105), used for every object the run deletes.
STUDY_DELETED = "110105"
#: Who deletes, in the audit trail, when the scheduled job runs.
RETENTION_JOB = Principal(subject="retention-job", role="system", kind="system")

Kind = Literal["study", "document", "rejected"]
#: Removes one blob that no row references any more (every copy of it: tiers, replica, fixity record).
BlobForgetter = Callable[[str], None]


@dataclass(frozen=True)
class Expiry:
    """One object whose retention has expired: what it is, whose, the rule and the date it expired."""

    kind: Kind
    ident: str
    patient: str
    master: int | None
    rule: str
    expired_on: date
    held: bool = False


@dataclass
class RetentionPlan:
    """What a run would delete (``due``) and what has expired but is held (``held``)."""

    due: list[Expiry] = field(default_factory=list)
    held: list[Expiry] = field(default_factory=list)


@dataclass
class RunSummary:
    """What a run did."""

    deleted: dict[str, int] = field(default_factory=lambda: {"study": 0, "document": 0, "rejected": 0})
    held: int = 0
    instances: int = 0
    blobs_deleted: int = 0
    blobs_kept_shared: int = 0
    failed: int = 0


def _day(text: str) -> date | None:
    try:
        return datetime.strptime(text[:8], "%Y%m%d").date() if len(text) >= 8 else None
    except ValueError:
        return None


def _masters(s: Session) -> dict[tuple[str, str], int]:
    """``(issuer, local_id)`` -> the master patient in force (following merges)."""
    merged = dict(
        s.execute(
            select(MasterPatient.id, MasterPatient.merged_into).where(MasterPatient.merged_into.is_not(None))
        ).all()
    )

    def final(master: int) -> int:
        seen: set[int] = set()
        while master not in seen and (nxt := merged.get(master)) is not None:
            seen.add(master)
            master = int(nxt)
        return master

    return {
        (issuer, local): final(int(master))
        for issuer, local, master in s.execute(
            select(LocalIdentity.issuer, LocalIdentity.local_id, LocalIdentity.master_id)
        )
    }


@dataclass
class _Record:
    """A patient's record as the rules weigh it: its last visit and birth date."""

    last_visit: date | None = None
    birth: date | None = None

    def saw(self, day: date | None) -> None:
        if day is not None and (self.last_visit is None or day > self.last_visit):
            self.last_visit = day


def plan_retention(db: Database, rules: RuleSet, today: date, rejected_days: int) -> RetentionPlan:
    """Everything expired on ``today`` under ``rules``, split into what may go and what a hold keeps.

    An object whose patient has no known visit date at all (no study date, no document) is never due.
    """
    holds = active_holds(db)
    records: dict[object, _Record] = {}
    with db.sessions() as s:
        masters = _masters(s)
        births = {
            (issuer, local): _day(born)
            for issuer, local, born in s.execute(
                select(LocalIdentity.issuer, LocalIdentity.local_id, LocalIdentity.birth_date)
            )
        }
        studies = s.execute(
            select(
                Study.study_uid,
                Study.study_date,
                Study.created_at,
                Study.modalities,
                Patient.issuer,
                Patient.patient_id,
                Patient.birth_date,
            ).join(Patient, Patient.id == Study.patient_pk)
        ).all()
        documents = s.execute(
            select(
                Document.uid, Document.type_code, Document.created_at, Document.issuer, Document.patient_id
            )
        ).all()
        # A document about a held study is held with it.
        about: dict[str, list[str]] = {}
        for doc_uid, study_uid in s.execute(
            select(Document.uid, DocumentStudy.study_uid).join(
                DocumentStudy, DocumentStudy.document_id == Document.id
            )
        ):
            about.setdefault(doc_uid, []).append(study_uid)
        rejected = s.execute(
            select(
                RejectedInstance.sop_uid,
                RejectedInstance.study_uid,
                RejectedInstance.code,
                RejectedInstance.rejected_at,
            ).where(RejectedInstance.purged_at.is_(None), RejectedInstance.blob_key.is_not(None))
        ).all()

    def record_of(issuer: str, pid: str) -> tuple[_Record, int | None]:
        master = masters.get((issuer, pid))
        key: object = master if master is not None else f"{issuer}/{pid}"
        rec = records.setdefault(key, _Record())
        rec.birth = rec.birth or births.get((issuer, pid))
        return rec, master

    for st in studies:
        rec, _ = record_of(st.issuer, st.patient_id)
        rec.saw(_day(st.study_date) or st.created_at.date())
        rec.birth = rec.birth or _day(st.birth_date)
    for doc in documents:
        record_of(doc.issuer, doc.patient_id)[0].saw(doc.created_at.date())

    result = RetentionPlan()
    study_owner: dict[str, tuple[str, int | None]] = {}

    def weigh(
        kind: Kind, ident: str, patient: str, master: int | None, category: str, study_uids: list[str]
    ) -> None:
        rec = records[master if master is not None else patient]
        if rec.last_visit is None:
            return
        rule = rules.for_category(category)
        until = rules.expires(category, PatientFacts(rec.last_visit, rec.birth))
        if until <= today:
            _sort(result, holds, Expiry(kind, ident, patient, master, rule.name, until), study_uids)

    for st in studies:
        patient = f"{st.issuer}/{st.patient_id}"
        master = masters.get((st.issuer, st.patient_id))
        study_owner[st.study_uid] = (patient, master)
        category = next((m for m in sorted(st.modalities.split("\\")) if m in rules.rules), "")
        weigh("study", st.study_uid, patient, master, category, [st.study_uid])
    for doc in documents:
        weigh(
            "document",
            doc.uid,
            f"{doc.issuer}/{doc.patient_id}",
            masters.get((doc.issuer, doc.patient_id)),
            doc.type_code,
            about.get(doc.uid, []),
        )
    for rej in rejected:
        delay = 0 if rej.code == RETENTION_EXPIRED else rejected_days
        until = rej.rejected_at.date() + timedelta(days=delay)
        if until <= today:
            patient, master = study_owner.get(rej.study_uid, ("", None))
            _sort(
                result,
                holds,
                Expiry("rejected", rej.sop_uid, patient, master, f"iocm-{rej.code}", until),
                [rej.study_uid],
            )
    return result


def _sort(plan: RetentionPlan, holds: ActiveHolds, item: Expiry, study_uids: list[str]) -> None:
    if any(holds.covers(uid, item.master, item.patient) for uid in study_uids or [""]):
        plan.held.append(Expiry(**{**item.__dict__, "held": True}))
    else:
        plan.due.append(item)


def _audit(s: Session, who: Principal, item: Expiry, detail: str) -> None:
    audit.append(
        s,
        who,
        STUDY_DELETED,
        "D",
        patient=item.patient,
        obj=f"{item.kind}:{item.ident}",
        purpose=audit.OPERATIONS,
        detail=f"rule={item.rule} expired_on={item.expired_on.isoformat()} {detail}".strip(),
        master=item.master,
    )


def _delete_study(s: Session, item: Expiry, now: datetime) -> tuple[list[str], int]:
    """Delete a study's rows; return the blob keys they named and how many instances went."""
    study = s.execute(select(Study).where(Study.study_uid == item.ident)).scalar_one_or_none()
    if study is None:
        return [], 0
    series = list(s.execute(select(Series.id).where(Series.study_pk == study.id)).scalars())
    rows = s.execute(select(Instance.sop_uid, Instance.blob_key).where(Instance.series_pk.in_(series))).all()
    sops = [r.sop_uid for r in rows]
    keys = [r.blob_key for r in rows]
    keys += list(
        s.execute(select(InstanceVersion.blob_key).where(InstanceVersion.sop_uid.in_(sops))).scalars()
    )
    keys += [
        k
        for k in s.execute(
            select(RejectedInstance.blob_key).where(RejectedInstance.study_uid == item.ident)
        ).scalars()
        if k is not None
    ]
    # The rejected rows stay (without their bytes): a later store of a rejected instance is still refused.
    s.execute(
        update(RejectedInstance)
        .where(RejectedInstance.study_uid == item.ident)
        .values(blob_key=None, purged_at=now)
    )
    s.execute(delete(InstanceVersion).where(InstanceVersion.sop_uid.in_(sops)))
    s.execute(delete(Instance).where(Instance.series_pk.in_(series)))
    s.execute(delete(Series).where(Series.study_pk == study.id))
    patient_pk = study.patient_pk
    s.delete(study)
    s.flush()
    others = s.execute(
        select(func.count()).select_from(Study).where(Study.patient_pk == patient_pk)
    ).scalar_one()
    if not others:
        s.execute(delete(Patient).where(Patient.id == patient_pk))
    return keys, len(sops)


def _delete_document(s: Session, item: Expiry) -> list[str]:
    doc = s.execute(select(Document).where(Document.uid == item.ident)).scalar_one_or_none()
    if doc is None:
        return []
    s.execute(update(Document).where(Document.relates_to == doc.id).values(relates_to=None))
    s.execute(delete(DocumentStudy).where(DocumentStudy.document_id == doc.id))
    key = doc.blob_key
    s.delete(doc)
    return [key]


def _delete_rejected(s: Session, item: Expiry, now: datetime) -> list[str]:
    row = s.execute(
        select(RejectedInstance).where(RejectedInstance.sop_uid == item.ident)
    ).scalar_one_or_none()
    if row is None or row.blob_key is None:
        return []
    key = row.blob_key
    row.blob_key, row.purged_at = None, now
    keys = [
        key,
        *s.execute(select(InstanceVersion.blob_key).where(InstanceVersion.sop_uid == item.ident)).scalars(),
    ]
    s.execute(delete(InstanceVersion).where(InstanceVersion.sop_uid == item.ident))
    return keys


def referenced(s: Session, keys: Iterable[str]) -> set[str]:
    """Which of ``keys`` some index row still names (instances, superseded versions, documents, rejected
    instances kept): the same sources as ``Archive.sweep_orphans``."""
    wanted = sorted(set(keys))
    found: set[str] = set()
    for start in range(0, len(wanted), 500):
        batch = wanted[start : start + 500]
        found.update(s.execute(select(Instance.blob_key).where(Instance.blob_key.in_(batch))).scalars())
        found.update(
            s.execute(select(InstanceVersion.blob_key).where(InstanceVersion.blob_key.in_(batch))).scalars()
        )
        found.update(s.execute(select(Document.blob_key).where(Document.blob_key.in_(batch))).scalars())
        found.update(
            k
            for k in s.execute(
                select(RejectedInstance.blob_key).where(RejectedInstance.blob_key.in_(batch))
            ).scalars()
            if k is not None
        )
    return found


def run_retention(
    db: Database,
    forget: BlobForgetter,
    due: list[Expiry],
    who: Principal,
    *,
    progress: Callable[[Expiry], None] | None = None,
) -> RunSummary:
    """Delete every object of ``due`` (from :func:`plan_retention`), each in its own audited transaction, then
    the blobs no row references any more, through ``forget``. A failed object is logged, counted and left as it
    was; the others go on."""
    summary = RunSummary()
    for item in due:
        now = utcnow()
        try:
            with audit._chain_lock, db.write() as s:
                count = 0
                if item.kind == "study":
                    keys, count = _delete_study(s, item, now)
                elif item.kind == "document":
                    keys = _delete_document(s, item)
                else:
                    keys = _delete_rejected(s, item, now)
                _audit(s, who, item, f"instances={count}" if item.kind == "study" else "")
            # Index first (committed above), then blobs: a crash here leaves orphans the sweep removes.
            with db.sessions() as s:
                kept = referenced(s, keys)
            for key in sorted(set(keys) - kept):
                forget(key)
                summary.blobs_deleted += 1
            summary.blobs_kept_shared += len(set(keys) & kept)
            summary.deleted[item.kind] += 1
            summary.instances += count
            log.info(
                "event=retention_deleted kind=%s ident=%s rule=%s blobs=%d",
                item.kind,
                item.ident,
                item.rule,
                len(set(keys) - kept),
            )
        except Exception:
            summary.failed += 1
            log.exception("event=retention_delete_failed kind=%s ident=%s", item.kind, item.ident)
        if progress is not None:
            progress(item)
    return summary
