"""Slides in a person's record (the portal registry's ``slide`` source).

Every slide of every local identity linked to the master is an item, as far as the caller's read scope lets
them see it: by the slide's site and master, and by the confidentiality codes of the study it joined, through
the same grants as a retrieve of the slide. Slides are for professionals: the patient portal shows the
frozen-section verdict or the report, not the slide itself, so an item is never *released*.
"""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import and_, select

from archipel.platform import access, consent, portal
from archipel.platform.authn import Principal
from archipel.platform.confidentiality import decode
from archipel.platform.db import Database
from archipel.platform.identity.models import LocalIdentity
from archipel.radiology.models import Study
from archipel.wsi.models import Slide

KIND = "slide"


def slides(
    db: Database, principal: Principal, master_id: int, facts: access.Facts
) -> Iterable[portal.RecordItem]:
    """The master's slides the caller may read, each with its slide-viewer link."""
    scope = access.read_scope(principal, facts)
    refused = master_id in facts.refused
    with db.sessions() as s:
        group = sorted(consent.merged_groups(s, {master_id}))
        rows = s.execute(
            select(Slide, Study.confidentiality)
            .join(
                LocalIdentity,
                and_(LocalIdentity.issuer == Slide.issuer, LocalIdentity.local_id == Slide.patient_id),
            )
            .outerjoin(Study, and_(Study.study_uid == Slide.study_uid, Slide.study_uid != ""))
            .where(LocalIdentity.master_id.in_(group))
            .order_by(Slide.created_at, Slide.id)
        ).all()
    return [
        _item(slide)
        for slide, codes in rows
        if scope.grant_for(slide.issuer, master_id, decode(codes or ""), refused) is not None
    ]


def _item(slide: Slide) -> portal.RecordItem:
    title = " ".join(p for p in ("Slide", slide.stain, slide.container_id) if p)
    return portal.RecordItem(
        kind=KIND,
        ident=slide.id,
        site=slide.issuer,
        when=slide.created_at,
        title=title,
        status=slide.status,
        released=False,
        links={"viewer": f"/app/viewer.html?slide={slide.id}"},
        detail={
            "accession": slide.accession,
            "stain": slide.stain,
            "urgent": slide.urgent,
            "study_uid": slide.study_uid,
        },
    )


def install() -> None:
    """Register the slide source with the portal registry."""
    portal.register_source(KIND, slides)
