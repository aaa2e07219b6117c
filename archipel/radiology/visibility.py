"""The access policy's :class:`~archipel.platform.access.ReadScope` as SQL over the archive index.

A study is visible when one of the scope's grants covers it: its site, its patient's master (joined at query
time from ``patients(issuer, patient_id)`` to the MPI's ``local_identities``, so merges apply at once), its
confidentiality codes, and the patient's sharing consent. The condition is correlated on ``studies`` only, so
it fits any statement that has ``Study`` in its FROM clause (searches, counts, retrieves).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import ColumnElement, and_, exists, false, not_, or_, select, true
from sqlalchemy.orm import InstrumentedAttribute, Session, aliased

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


@dataclass(frozen=True)
class ScopeSql:
    """A read scope as SQL over one kind of record (studies, documents...), given how that record names its
    producing site, how it reaches its patient's local identity, and which confidentiality codes it carries.

    ``identity()`` returns a fresh alias of ``local_identities`` and the condition tying it to the outer record;
    ``carries_any(codes)`` says the record carries one of ``codes``.
    """

    site: InstrumentedAttribute[str]
    identity: Callable[[], tuple[type[LocalIdentity], ColumnElement[bool]]]
    carries_any: Callable[[frozenset[str]], ColumnElement[bool]]

    def master_in(self, masters: frozenset[int]) -> ColumnElement[bool]:
        """The record's patient is linked to one of ``masters``."""
        li, linked = self.identity()
        return exists(select(li.id).where(linked, li.master_id.in_(sorted(masters))))

    def refuses_sharing(self) -> ColumnElement[bool]:
        """The record's patient refuses sharing (on its master or a master merged into it)."""
        li, linked = self.identity()
        merged = select(MasterPatient.id).where(MasterPatient.merged_into == li.master_id)
        return exists(
            select(ConsentState.master_id).where(
                linked,
                ConsentState.sharing == REFUSED,
                or_(
                    ConsentState.master_id == li.master_id,
                    ConsentState.master_id.in_(merged.scalar_subquery()),
                ),
            )
        )

    def grant_condition(self, grant: Grant) -> ColumnElement[bool]:
        """The records one grant covers."""
        parts: list[ColumnElement[bool]] = []
        if grant.sites is not None:
            if not grant.sites:
                return false()
            parts.append(self.site.in_(sorted(grant.sites)))
        if grant.masters is not None:
            if not grant.masters:
                return false()
            parts.append(self.master_in(grant.masters))
        if grant.hidden:
            parts.append(not_(self.carries_any(grant.hidden)))
        if grant.shared_only:
            parts.append(not_(self.refuses_sharing()))
        return and_(*parts) if parts else true()

    def condition(self, scope: ReadScope) -> ColumnElement[bool]:
        """The records a scope makes visible (none for an empty scope)."""
        if scope.sees_nothing:
            return false()
        conditions = [self.grant_condition(g) for g in scope.grants]
        return conditions[0] if len(conditions) == 1 else or_(*conditions)


def _study_carries_any(codes: frozenset[str]) -> ColumnElement[bool]:
    return or_(*(Study.confidentiality.contains(pattern(c), autoescape=True) for c in sorted(codes)))


STUDIES = ScopeSql(Study.site, _identity_of_study, _study_carries_any)


def master_in(masters: frozenset[int]) -> ColumnElement[bool]:
    """The study's patient is linked to one of ``masters``."""
    return STUDIES.master_in(masters)


def refuses_sharing() -> ColumnElement[bool]:
    """The study's patient refuses sharing (on its master or a master merged into it)."""
    return STUDIES.refuses_sharing()


def carries_any(codes: frozenset[str]) -> ColumnElement[bool]:
    """The study carries one of ``codes``."""
    return STUDIES.carries_any(codes)


def grant_condition(grant: Grant) -> ColumnElement[bool]:
    """The studies one grant covers."""
    return STUDIES.grant_condition(grant)


def condition(scope: ReadScope) -> ColumnElement[bool]:
    """The studies a scope makes visible (none for an empty scope)."""
    return STUDIES.condition(scope)
