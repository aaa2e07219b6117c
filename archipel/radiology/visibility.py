"""The access policy's :class:`~archipel.platform.access.ReadScope` as SQL over the archive index.

A study is visible when one of the scope's grants covers it: its site, its patient's master (joined at query
time from ``patients(issuer, patient_id)`` to the MPI's ``local_identities``, so merges apply at once), its
confidentiality codes, and the patient's sharing consent. The condition is correlated on ``studies`` only, so
it fits any statement that has ``Study`` in its FROM clause (searches, counts, retrieves).
"""

from __future__ import annotations

from sqlalchemy import ColumnElement, and_, exists, false, not_, or_, select, true
from sqlalchemy.orm import Session, aliased

from archipel.platform.access import Grant, ReadScope
from archipel.platform.confidentiality import decode, pattern
from archipel.platform.consent import REFUSED, ConsentState
from archipel.platform.identity.models import LocalIdentity, MasterPatient
from archipel.radiology.models import Patient, Study


def study_owner(s: Session, study_uid: str) -> tuple[str, str, frozenset[str]] | None:
    """What the policy weighs about one study: ``(site, issuer/PatientID, confidentiality codes)``; ``None``
    for an unknown study."""
    row = s.execute(
        select(Study.site, Patient.issuer, Patient.patient_id, Study.confidentiality)
        .join(Patient, Study.patient_pk == Patient.id)
        .where(Study.study_uid == study_uid)
    ).one_or_none()
    if row is None:
        return None
    return row.site, f"{row.issuer}/{row.patient_id}", decode(row.confidentiality)


def _identity_of_study() -> tuple[type[LocalIdentity], ColumnElement[bool]]:
    """A fresh alias of ``local_identities`` and the condition tying it to the outer study's patient."""
    li = aliased(LocalIdentity)
    p = aliased(Patient)
    linked = and_(p.id == Study.patient_pk, li.issuer == p.issuer, li.local_id == p.patient_id)
    return li, linked  # type: ignore[return-value]


def master_in(masters: frozenset[int]) -> ColumnElement[bool]:
    """The study's patient is linked to one of ``masters``."""
    li, linked = _identity_of_study()
    return exists(select(li.id).where(linked, li.master_id.in_(sorted(masters))))


def refuses_sharing() -> ColumnElement[bool]:
    """The study's patient refuses sharing: a refusal is in force on its master or on a master merged into it."""
    li, linked = _identity_of_study()
    merged = select(MasterPatient.id).where(MasterPatient.merged_into == li.master_id)
    return exists(
        select(ConsentState.master_id).where(
            linked,
            ConsentState.sharing == REFUSED,
            or_(ConsentState.master_id == li.master_id, ConsentState.master_id.in_(merged.scalar_subquery())),
        )
    )


def carries_any(codes: frozenset[str]) -> ColumnElement[bool]:
    """The study carries one of ``codes``."""
    return or_(*(Study.confidentiality.contains(pattern(c), autoescape=True) for c in sorted(codes)))


def grant_condition(grant: Grant) -> ColumnElement[bool]:
    """The studies one grant covers."""
    parts: list[ColumnElement[bool]] = []
    if grant.sites is not None:
        if not grant.sites:
            return false()
        parts.append(Study.site.in_(sorted(grant.sites)))
    if grant.masters is not None:
        if not grant.masters:
            return false()
        parts.append(master_in(grant.masters))
    if grant.hidden:
        parts.append(not_(carries_any(grant.hidden)))
    if grant.shared_only:
        parts.append(not_(refuses_sharing()))
    return and_(*parts) if parts else true()


def condition(scope: ReadScope) -> ColumnElement[bool]:
    """The studies a scope makes visible (none for an empty scope)."""
    if scope.sees_nothing:
        return false()
    conditions = [grant_condition(g) for g in scope.grants]
    return conditions[0] if len(conditions) == 1 else or_(*conditions)
