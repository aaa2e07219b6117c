"""The document registry over HTTP, under ``/api/documents``.

- ``POST /api/documents``: register (JSON; the content base64-encoded) -> 201 and the metadata;
- ``GET /api/documents?master=&issuer=&patient_id=&type=&status=&study=&date_from=&date_to=``: list;
- ``GET /api/documents/search?q=``: full text, within what the caller may see;
- ``GET /api/documents/{id}`` (metadata), ``GET /api/documents/{id}/content`` (the bytes, hash checked);
- ``PUT /api/documents/{id}/content``: revise a preliminary document (the raw body and its Content-Type);
- ``POST /api/documents/{id}/sign``, ``.../addenda`` (JSON), ``.../entered-in-error`` (JSON with a reason).

Errors: 404 unknown, 403 refused by the policy (with its reason), 409 a change a signed document forbids,
415 a content type other than PDF, text or HTML, 422 bad content or metadata, 400 a bad search parameter.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime, time, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query, Request, Response, status
from pydantic import BaseModel, Field

from archipel.platform import access, access_facts, audit
from archipel.platform.authn import Principal
from archipel.platform.confidentiality import decode
from archipel.platform.http import PrincipalDep, RuntimeDep, client_address, guard
from archipel.platform.runtime import Runtime
from archipel.radiology import documents
from archipel.radiology.documents_content import DocumentInvalid, UnsupportedContentType
from archipel.radiology.documents_search import DocumentQuery, SearchInvalid, find

router = APIRouter(prefix="/api/documents", tags=["documents"])
#: Served with every content: a unique origin without scripts, plugins or outside resources.
CONTENT_POLICY = "sandbox; default-src 'none'; img-src data:; style-src 'unsafe-inline'"


class _Content(BaseModel):
    content_type: str = Field(max_length=100)
    #: The content, base64-encoded.
    content: str


class NewDocument(_Content):
    """A document to register."""

    issuer: str = Field(min_length=1, max_length=64)
    patient_id: str = Field(min_length=1, max_length=64)
    site: str = Field(min_length=1, max_length=64)
    type_code: str = Field(min_length=1, max_length=32)
    type_display: str = Field(default="", max_length=200)
    title: str = Field(min_length=1, max_length=300)
    author: str = Field(default="", max_length=200)
    organisation: str = Field(default="", max_length=200)
    status: str = "preliminary"
    confidentiality: str = "N"
    codes: list[str] = Field(default_factory=list, max_length=20)
    study_uids: list[str] = Field(default_factory=list, max_length=100)


class Addendum(_Content):
    """An addendum to a signed document: its content and why it was added."""

    reason: str = Field(min_length=1, max_length=2000)
    title: str = Field(default="", max_length=300)
    author: str = Field(default="", max_length=200)


class Withdrawal(BaseModel):
    """Why a document is entered in error."""

    reason: str = Field(min_length=1, max_length=2000)


def content_url(doc_id: int) -> str:
    """The route that serves a document's content."""
    return f"/api/documents/{doc_id}/content"


def as_dict(doc: documents.Document, studies: list[str] | None = None) -> dict[str, Any]:
    """A document's metadata as the API shows it."""
    out: dict[str, Any] = {
        "id": doc.id,
        "uid": doc.uid,
        "master_id": doc.master_id,
        "issuer": doc.issuer,
        "patient_id": doc.patient_id,
        "site": doc.site,
        "type_code": doc.type_code,
        "type_display": doc.type_display,
        "title": doc.title,
        "author": doc.author,
        "organisation": doc.organisation,
        "status": doc.status,
        "confidentiality": doc.confidentiality,
        "codes": sorted(decode(doc.codes)),
        "created_at": doc.created_at.isoformat(),
        "signed_at": doc.signed_at.isoformat() if doc.signed_at else None,
        "signed_by": doc.signed_by,
        "content_type": doc.content_type,
        "size": doc.size,
        "sha256": doc.sha256,
        "relates_to": doc.relates_to,
        "relation": doc.relation,
        "addendum_reason": doc.addendum_reason,
        "error_reason": doc.error_reason,
        "source": doc.source,
        "links": {"content": content_url(doc.id), "fhir": f"/fhir/DocumentReference/{doc.id}"},
    }
    if studies is not None:
        out["study_uids"] = studies
    return out


@contextmanager
def http_errors() -> Iterator[None]:
    """The registry's exceptions as HTTP errors with their reason."""
    try:
        yield
    except documents.DocumentNotFound as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, str(exc)) from exc
    except documents.DocumentLocked as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, str(exc)) from exc
    except UnsupportedContentType as exc:
        raise HTTPException(status.HTTP_415_UNSUPPORTED_MEDIA_TYPE, str(exc)) from exc
    except DocumentInvalid as exc:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, str(exc)) from exc
    except SearchInvalid as exc:
        raise HTTPException(status.HTTP_400_BAD_REQUEST, str(exc)) from exc
    except access.AccessDenied as exc:
        raise HTTPException(status.HTTP_403_FORBIDDEN, exc.reason) from exc
    except documents.DocumentCorrupt as exc:
        raise HTTPException(status.HTTP_500_INTERNAL_SERVER_ERROR, str(exc)) from exc


def _decoded(body: _Content) -> bytes:
    try:
        return base64.b64decode(body.content, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, "content must be base64-encoded") from exc


def search_scope(
    rt: Runtime, principal: Principal, request: Request, master: int | None
) -> tuple[access.ReadScope, int | None]:
    """Run the policy on a search of documents (on one master's record when ``master`` is given, as the
    patient record routes do); return the read scope the SQL keeps to and the master as it is now (the one
    ``master`` was merged into, if it was)."""
    resource, facts = access_facts.load(
        rt.db, principal, access.Resource(kind=documents.DOCUMENT, master=master)
    )
    site = principal.site if principal.kind == "user" and principal.site not in ("", "*") else ""
    if master is not None and site and site in facts.patient_sites:
        resource = access.Resource(kind=documents.DOCUMENT, site=site, master=resource.master)
    action = access.SEARCH if master is None else access.READ
    guard(rt, principal, action, resource, event_type=audit.QUERY, request=request, facts=facts)
    return access.read_scope(principal, facts), resource.master


def day_range(date_from: date | None, date_to: date | None) -> tuple[datetime | None, datetime | None]:
    """``[date_from, date_to]`` as UTC datetimes ``[start, end)``."""
    start = datetime.combine(date_from, time.min, tzinfo=UTC) if date_from else None
    end = datetime.combine(date_to + timedelta(days=1), time.min, tzinfo=UTC) if date_to else None
    return start, end


@router.post("", status_code=status.HTTP_201_CREATED)
def create_document(
    body: NewDocument, request: Request, rt: RuntimeDep, principal: PrincipalDep
) -> dict[str, Any]:
    """Register a document (preliminary unless ``status`` is ``final``) and return its metadata."""
    content = _decoded(body)
    with http_errors():
        doc = documents.register(
            rt.db,
            rt.blobs,
            principal,
            issuer=body.issuer,
            patient_id=body.patient_id,
            type_code=body.type_code,
            type_display=body.type_display,
            title=body.title,
            content=content,
            content_type=body.content_type,
            author=body.author,
            organisation=body.organisation,
            site=body.site,
            status=body.status,
            confidentiality=body.confidentiality,
            codes=body.codes,
            study_uids=body.study_uids,
            source="api",
            client=client_address(request),
        )
    return as_dict(doc, documents.studies_of(rt.db, doc.id))


@router.get("")
def list_documents(
    request: Request,
    rt: RuntimeDep,
    principal: PrincipalDep,
    master: int | None = None,
    issuer: str = "",
    patient_id: str = "",
    type: Annotated[list[str] | None, Query()] = None,
    status_: Annotated[list[str] | None, Query(alias="status")] = None,
    study: str = "",
    date_from: date | None = None,
    date_to: date | None = None,
    limit: int = 50,
    offset: int = 0,
) -> dict[str, Any]:
    """The documents matching the filters that the caller may see, newest first, with the total count."""
    return _search(
        rt,
        principal,
        request,
        master,
        issuer,
        patient_id,
        type,
        status_,
        study,
        date_from,
        date_to,
        "",
        limit,
        offset,
    )


@router.get("/search")
def search_documents(
    request: Request,
    rt: RuntimeDep,
    principal: PrincipalDep,
    q: str,
    master: int | None = None,
    type: Annotated[list[str] | None, Query()] = None,
    status_: Annotated[list[str] | None, Query(alias="status")] = None,
    date_from: date | None = None,
    date_to: date | None = None,
    limit: int = 50,
    offset: int = 0,
) -> dict[str, Any]:
    """Full-text search (French stemming) in the titles and texts of the documents the caller may see, best
    match first."""
    return _search(
        rt, principal, request, master, "", "", type, status_, "", date_from, date_to, q, limit, offset
    )


def _search(
    rt: Runtime,
    principal: Principal,
    request: Request,
    master: int | None,
    issuer: str,
    patient_id: str,
    types: list[str] | None,
    statuses: list[str] | None,
    study: str,
    date_from: date | None,
    date_to: date | None,
    words: str,
    limit: int,
    offset: int,
) -> dict[str, Any]:
    start, end = day_range(date_from, date_to)
    with http_errors():
        scope, current = search_scope(rt, principal, request, master)
        query = DocumentQuery(
            master_id=current,
            issuer=issuer,
            patient_id=patient_id,
            type_codes=tuple(types or ()),
            statuses=tuple(statuses or ()),
            created_from=start,
            created_before=end,
            study_uid=study,
            words=words,
            limit=limit,
            offset=offset,
        )
        rows, total = find(rt.db, scope, query)
    return {"total": total, "documents": [as_dict(d) for d in rows]}


@router.get("/{doc_id}")
def get_document(doc_id: int, request: Request, rt: RuntimeDep, principal: PrincipalDep) -> dict[str, Any]:
    """One document's metadata, with the studies it concerns."""
    with http_errors():
        doc = documents.check_read(rt.db, principal, doc_id, client=client_address(request))
    return as_dict(doc, documents.studies_of(rt.db, doc.id))


@router.get("/{doc_id}/content")
def get_content(doc_id: int, request: Request, rt: RuntimeDep, principal: PrincipalDep) -> Response:
    """The document's content as stored, after checking it against its SHA-256."""
    with http_errors():
        doc, data = documents.read_content(rt.db, rt.blobs, principal, doc_id, client=client_address(request))
    extension = {"application/pdf": "pdf", "text/html": "html"}.get(doc.content_type, "txt")
    headers = {
        "ETag": f'"{doc.sha256}"',
        "Cache-Control": "private, no-store",
        "X-Content-Type-Options": "nosniff",
        "Content-Disposition": f'inline; filename="document-{doc.id}.{extension}"',
        # A stored HTML report is shown in a sandbox of its own: no script of it runs with the reader's session.
        "Content-Security-Policy": CONTENT_POLICY,
    }
    return Response(data, media_type=doc.content_type, headers=headers)


@router.put("/{doc_id}/content")
async def revise_content(
    doc_id: int, request: Request, rt: RuntimeDep, principal: PrincipalDep
) -> dict[str, Any]:
    """Replace the content of a preliminary document with the request body (its Content-Type says which)."""
    data = await request.body()
    with http_errors():
        doc = documents.revise(
            rt.db,
            rt.blobs,
            principal,
            doc_id,
            content=data,
            content_type=request.headers.get("content-type", ""),
            client=client_address(request),
        )
    return as_dict(doc)


@router.post("/{doc_id}/sign")
def sign_document(doc_id: int, request: Request, rt: RuntimeDep, principal: PrincipalDep) -> dict[str, Any]:
    """Sign a preliminary document: it becomes final and immutable (409 if it is signed already)."""
    with http_errors():
        doc = documents.sign(rt.db, principal, doc_id, client=client_address(request))
    return as_dict(doc)


@router.post("/{doc_id}/addenda", status_code=status.HTTP_201_CREATED)
def add_addendum(
    doc_id: int, body: Addendum, request: Request, rt: RuntimeDep, principal: PrincipalDep
) -> dict[str, Any]:
    """Add a signed addendum to a final or amended document; the document becomes amended. Returns the
    addendum."""
    content = _decoded(body)
    with http_errors():
        doc = documents.add_addendum(
            rt.db,
            rt.blobs,
            principal,
            doc_id,
            content=content,
            content_type=body.content_type,
            reason=body.reason,
            title=body.title,
            author=body.author,
            client=client_address(request),
        )
    return as_dict(doc, documents.studies_of(rt.db, doc.id))


@router.post("/{doc_id}/entered-in-error")
def enter_in_error(
    doc_id: int, body: Withdrawal, request: Request, rt: RuntimeDep, principal: PrincipalDep
) -> dict[str, Any]:
    """Withdraw a document with a reason; its content is kept."""
    with http_errors():
        doc = documents.enter_in_error(
            rt.db, principal, doc_id, reason=body.reason, client=client_address(request)
        )
    return as_dict(doc)
