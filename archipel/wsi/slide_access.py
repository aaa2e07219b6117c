"""The checks every slide route shares: who may add slides, the policy resource of a slide, valid metadata."""

from __future__ import annotations

from typing import Any

from fastapi import HTTPException, Request, status

from archipel.platform import access, audit
from archipel.platform.authn import Principal
from archipel.platform.http import guard
from archipel.platform.runtime import Runtime
from archipel.wsi import frozen
from archipel.wsi.intake import SlideMetadata, SlideMetadataError, check_issuer, parse_metadata
from archipel.wsi.models import Slide


def slide_resource(issuer: str, patient_id: str, ident: str = "") -> access.Resource:
    """The access-policy resource of a slide of ``issuer/patient_id``."""
    return access.Resource(kind="slide", site=issuer, patient=f"{issuer}/{patient_id}", ident=ident)


def resource_of(slide: Slide, part: str = "") -> access.Resource:
    """The access-policy resource of ``slide`` (``part``: one of its associated images, e.g. ``label``)."""
    return slide_resource(slide.issuer, slide.patient_id, f"slide:{slide.id}" + (f"/{part}" if part else ""))


def guard_slide(
    rt: Runtime,
    principal: Principal,
    action: str,
    slide: Slide,
    request: Request,
    event_type: str = audit.PATIENT_RECORD,
    part: str = "",
) -> None:
    """Refuse (audited, HTTP 403) ``action`` on ``slide`` unless the policy allows it; audit it when it does."""
    guard(rt, principal, action, resource_of(slide, part), event_type=event_type, request=request)


def precheck_producer(rt: Runtime, principal: Principal, request: Request) -> None:
    """Refuse (audited) a principal who may not add slides at all, before any byte is read."""
    if not access.allow(principal, access.CREATE, access.Resource(kind="slide")).allowed:
        guard(
            rt,
            principal,
            access.CREATE,
            access.Resource(kind="slide"),
            event_type=audit.IMPORT,
            request=request,
        )


def guard_new_slide(rt: Runtime, principal: Principal, meta: SlideMetadata, request: Request) -> None:
    """Refuse (audited, HTTP 403) a principal who may not add a slide of this patient at this site."""
    guard(
        rt,
        principal,
        access.CREATE,
        slide_resource(meta.issuer, meta.patient_id),
        event_type=audit.IMPORT,
        request=request,
    )


def validated_metadata(rt: Runtime, raw: bytes | str | dict[str, Any]) -> SlideMetadata:
    """Parse and check the metadata; HTTP 400 with the reason when it is malformed or names an unknown issuer,
    422 (409) when it names a frozen-section request of another patient or that does not exist (is answered)."""
    try:
        meta = parse_metadata(raw)
        check_issuer(rt.db, meta)
    except SlideMetadataError as exc:
        raise HTTPException(status.HTTP_400_BAD_REQUEST, str(exc)) from exc
    if meta.frozen_request is not None:
        with rt.db.sessions() as s:
            try:
                frozen.check_attachable(s, meta.frozen_request, meta.issuer, meta.patient_id)
            except frozen.FrozenSectionError as exc:
                raise HTTPException(exc.status, exc.reason) from exc
    return meta
