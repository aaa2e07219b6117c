"""The document registry's part of a person's record in the portals (``platform.portal``).

Every document of the master the caller may see (the read scope is in the SQL) is an item; final and amended
ones are ``released`` to the patient portal, preliminary and entered-in-error ones are not (the policy hides
them from patients as well). An addendum is an item of its own, linked to the document it amends.
"""

from __future__ import annotations

from collections.abc import Iterable

from archipel.platform import access, portal
from archipel.platform.authn import Principal
from archipel.platform.db import Database
from archipel.radiology.documents_api import content_url
from archipel.radiology.documents_models import RELEASED, Document
from archipel.radiology.documents_search import DocumentQuery, statement

KIND = "document"


def _item(doc: Document) -> portal.RecordItem:
    return portal.RecordItem(
        kind=KIND,
        ident=str(doc.id),
        site=doc.site,
        when=doc.signed_at or doc.created_at,
        title=doc.title,
        status=doc.status,
        released=doc.status in RELEASED,
        links={
            "content": content_url(doc.id),
            "metadata": f"/api/documents/{doc.id}",
            "fhir": f"/fhir/DocumentReference/{doc.id}",
        },
        detail={
            "type_code": doc.type_code,
            "type_display": doc.type_display,
            "author": doc.author,
            "organisation": doc.organisation,
            "content_type": doc.content_type,
            "relates_to": doc.relates_to,
            "relation": doc.relation,
        },
    )


def documents_source(
    db: Database, principal: Principal, master_id: int, facts: access.Facts
) -> Iterable[portal.RecordItem]:
    """The master's documents within the caller's read scope, as portal items."""
    scope = access.read_scope(principal, facts)
    stmt = statement(db.engine.dialect.name, scope, DocumentQuery(master_id=master_id))
    with db.sessions() as s:
        return [_item(d) for d in s.scalars(stmt)]


def install() -> None:
    """Register the documents source with the portal's record registry."""
    portal.register_source(KIND, documents_source)
