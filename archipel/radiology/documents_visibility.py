"""The access policy's :class:`~archipel.platform.access.ReadScope` as SQL over the document registry.

The same rules as for studies (``radiology.visibility``), on the document's own columns: its site, its
patient's master (joined at query time from ``documents(issuer, patient_id)`` to the MPI's
``local_identities``, so merges apply at once), its confidentiality codes, and the patient's sharing consent.
A document not released to the patient (preliminary, entered-in-error) counts as carrying
``INVISIBLE_PATIENT``, exactly as ``documents.policy_codes`` tells the policy for one document.
The condition is correlated on ``documents`` only, so it fits any statement with ``Document`` in its FROM.
"""

from __future__ import annotations

from sqlalchemy import ColumnElement, and_, exists, false, not_, or_, select, true
from sqlalchemy.orm import aliased

from archipel.platform.access import Grant, ReadScope
from archipel.platform.confidentiality import INVISIBLE_PATIENT, pattern
from archipel.platform.consent import REFUSED, ConsentState
from archipel.platform.identity.models import LocalIdentity, MasterPatient
from archipel.radiology.documents_models import RELEASED, Document


def _identity() -> tuple[type[LocalIdentity], ColumnElement[bool]]:
    li = aliased(LocalIdentity)
    linked = and_(li.issuer == Document.issuer, li.local_id == Document.patient_id)
    return li, linked  # type: ignore[return-value]


def of_master(master_id: int) -> ColumnElement[bool]:
    """The document's patient is linked to master ``master_id`` now."""
    return master_in(frozenset({master_id}))


def master_in(masters: frozenset[int]) -> ColumnElement[bool]:
    """The document's patient is linked to one of ``masters``."""
    li, linked = _identity()
    return exists(select(li.id).where(linked, li.master_id.in_(sorted(masters))))


def refuses_sharing() -> ColumnElement[bool]:
    """The document's patient refuses sharing (on its master or a master merged into it)."""
    li, linked = _identity()
    merged = select(MasterPatient.id).where(MasterPatient.merged_into == li.master_id)
    return exists(
        select(ConsentState.master_id).where(
            linked,
            ConsentState.sharing == REFUSED,
            or_(ConsentState.master_id == li.master_id, ConsentState.master_id.in_(merged.scalar_subquery())),
        )
    )


def _carries(code: str) -> ColumnElement[bool]:
    own = Document.codes.contains(pattern(code), autoescape=True)
    if code == INVISIBLE_PATIENT:
        return or_(own, Document.status.not_in(sorted(RELEASED)))
    return own


def carries_any(codes: frozenset[str]) -> ColumnElement[bool]:
    """The document carries one of ``codes`` (for the policy)."""
    return or_(*(_carries(c) for c in sorted(codes)))


def grant_condition(grant: Grant) -> ColumnElement[bool]:
    """The documents one grant covers."""
    parts: list[ColumnElement[bool]] = []
    if grant.sites is not None:
        if not grant.sites:
            return false()
        parts.append(Document.site.in_(sorted(grant.sites)))
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
    """The documents a scope makes visible (none for an empty scope)."""
    if scope.sees_nothing:
        return false()
    conditions = [grant_condition(g) for g in scope.grants]
    return conditions[0] if len(conditions) == 1 else or_(*conditions)
