"""Frozen sections in a person's record (the portal registry's ``frozen-section`` source).

A request is an item from the moment it is made; it is *released* to the patient once its verdict is signed
(the verdict is a signed document of the record). The item shows the latest answer: the verdict, or its last
signed amendment. Which requests a caller sees follows the policy's read scope, as for every read: the
requesting site and the master (merges included), through the same grants as a retrieve.
"""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import select

from archipel.platform import access, consent, portal
from archipel.platform.authn import Principal
from archipel.platform.db import Database
from archipel.wsi.frozen_models import FrozenSectionAmendment, FrozenSectionRequest, FrozenSectionSlide
from archipel.wsi.frozen_verdict import DIAGNOSES, MARGINS

KIND = access.FROZEN_SECTION


def _label(table: dict[str, tuple[str, str]], value: str) -> str:
    return table[value][1] if value in table else value


def frozen_sections(
    db: Database, principal: Principal, master_id: int, facts: access.Facts
) -> Iterable[portal.RecordItem]:
    """The master's frozen-section requests the caller may read, each released once its verdict is signed."""
    scope = access.read_scope(principal, facts)
    with db.sessions() as s:
        group = consent.merged_groups(s, {master_id})
        rows = s.execute(
            select(FrozenSectionRequest)
            .where(FrozenSectionRequest.master_id.in_(sorted(group)))
            .order_by(FrozenSectionRequest.id)
        ).scalars()
        requests = [
            r for r in rows if scope.grant_for(r.issuer, master_id, frozenset(), master_id in facts.refused)
        ]
        ids = [r.id for r in requests]
        last_amendment: dict[int, FrozenSectionAmendment] = {}
        slides: dict[int, list[str]] = {}
        if ids:
            for am in s.execute(
                select(FrozenSectionAmendment)
                .where(FrozenSectionAmendment.request_id.in_(ids))
                .order_by(FrozenSectionAmendment.id)
            ).scalars():
                last_amendment[am.request_id] = am
            for request_id, slide_id in s.execute(
                select(FrozenSectionSlide.request_id, FrozenSectionSlide.slide_id)
                .where(FrozenSectionSlide.request_id.in_(ids))
                .order_by(FrozenSectionSlide.id)
            ):
                slides.setdefault(request_id, []).append(slide_id)
        items = [_item(r, last_amendment.get(r.id), slides.get(r.id, [])) for r in requests]
    return items


def _item(
    req: FrozenSectionRequest, amendment: FrozenSectionAmendment | None, slides: list[str]
) -> portal.RecordItem:
    signed = req.verdict_at is not None and bool(req.signature)
    diagnosis, margins, text = req.diagnosis, req.margins, req.verdict_text
    if amendment is not None:
        diagnosis, margins, text = amendment.diagnosis, amendment.margins, amendment.text
    detail: dict[str, object] = {"specimen": req.specimen, "specimen_site": req.specimen_site}
    links: dict[str, str] = {}
    if signed:
        detail.update(
            diagnosis=_label(DIAGNOSES, diagnosis),
            margins=_label(MARGINS, margins),
            text=text,
            signed_by=req.verdict_by,
            signed_at=req.verdict_at.isoformat() if req.verdict_at else None,
            amended=amendment is not None,
        )
        for n, slide_id in enumerate(slides):
            links["viewer" if n == 0 else f"viewer-{n + 1}"] = f"/app/viewer.html?slide={slide_id}"
    return portal.RecordItem(
        kind=KIND,
        ident=str(req.id),
        site=req.issuer,
        when=req.verdict_at or req.requested_at,
        title=f"Frozen section: {req.specimen}",
        status=("amended" if amendment is not None else "signed") if signed else "pending",
        released=signed,
        links=links,
        detail=detail,
    )


def install() -> None:
    """Register the frozen-section source with the portal registry."""
    portal.register_source(KIND, frozen_sections)
