"""The access policy's :class:`~archipel.platform.access.ReadScope` as SQL over the document registry.

The same rules as for studies (``radiology.visibility``), on the document's own columns: its site, its
patient's master (joined at query time from ``documents(issuer, patient_id)`` to the MPI's
``local_identities``, so merges apply at once), its confidentiality codes, and the patient's sharing consent.
A document not released to the patient (preliminary, entered-in-error) counts as carrying
``INVISIBLE_PATIENT``, exactly as ``documents.policy_codes`` tells the policy for one document.
The condition is correlated on ``documents`` only, so it fits any statement with ``Document`` in its FROM.
"""

from __future__ import annotations

from sqlalchemy import ColumnElement, and_, or_
from sqlalchemy.orm import aliased

from archipel.platform.access import Grant, ReadScope
from archipel.platform.confidentiality import INVISIBLE_PATIENT, pattern
from archipel.platform.identity.models import LocalIdentity
from archipel.radiology.documents_models import RELEASED, Document
from archipel.radiology.visibility import ScopeSql


def _identity() -> tuple[type[LocalIdentity], ColumnElement[bool]]:
    li = aliased(LocalIdentity)
    linked = and_(li.issuer == Document.issuer, li.local_id == Document.patient_id)
    return li, linked  # type: ignore[return-value]


def of_master(master_id: int) -> ColumnElement[bool]:
    """The document's patient is linked to master ``master_id`` now."""
    return DOCUMENTS.master_in(frozenset({master_id}))


def _carries(code: str) -> ColumnElement[bool]:
    own = Document.codes.contains(pattern(code), autoescape=True)
    if code == INVISIBLE_PATIENT:
        return or_(own, Document.status.not_in(sorted(RELEASED)))
    return own


def carries_any(codes: frozenset[str]) -> ColumnElement[bool]:
    """The document carries one of ``codes`` (for the policy)."""
    return or_(*(_carries(c) for c in sorted(codes)))


DOCUMENTS = ScopeSql(Document.site, _identity, carries_any)


def master_in(masters: frozenset[int]) -> ColumnElement[bool]:
    """The document's patient is linked to one of ``masters``."""
    return DOCUMENTS.master_in(masters)


def refuses_sharing() -> ColumnElement[bool]:
    """The document's patient refuses sharing (on its master or a master merged into it)."""
    return DOCUMENTS.refuses_sharing()


def grant_condition(grant: Grant) -> ColumnElement[bool]:
    """The documents one grant covers."""
    return DOCUMENTS.grant_condition(grant)


def condition(scope: ReadScope) -> ColumnElement[bool]:
    """The documents a scope makes visible (none for an empty scope)."""
    return DOCUMENTS.condition(scope)
