"""Screening episodes in a person's record (the portal registry's ``screening-episode`` source).

Every episode of the woman (by her master, or by a local identity linked to it) is an item, as far as the
caller's read scope lets them see it, by the episode's screening site and her master, as for any read of the
episode. It is *released* to her once the decision's letters have left the outbox
(``result_sent_at``, the last letter's sent time): from then on the item carries the decision; before, only that
the reading is under way (a decision whose letters are queued, or that queued none, is not released).
"""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import and_, or_, select

from archipel.mammo.models import Episode, Programme, ScreeningDecision
from archipel.platform import access, consent, portal
from archipel.platform.authn import Principal
from archipel.platform.db import Database
from archipel.platform.identity.models import LocalIdentity

KIND = access.SCREENING


def episodes(
    db: Database, principal: Principal, master_id: int, facts: access.Facts
) -> Iterable[portal.RecordItem]:
    """The woman's screening episodes the caller may read; released once their result was sent."""
    scope = access.read_scope(principal, facts)
    refused = master_id in facts.refused
    with db.sessions() as s:
        group = sorted(consent.merged_groups(s, {master_id}))
        linked = select(LocalIdentity.id).where(
            LocalIdentity.issuer == Episode.issuer,
            LocalIdentity.local_id == Episode.patient_id,
            LocalIdentity.master_id.in_(group),
        )
        rows = s.execute(
            select(Episode, Programme.code, ScreeningDecision.decision)
            .join(Programme, Programme.id == Episode.programme_id)
            .outerjoin(ScreeningDecision, ScreeningDecision.episode_id == Episode.id)
            .where(or_(Episode.master_id.in_(group), and_(linked.exists())))
            .order_by(Episode.screen_date, Episode.id)
        ).all()
    return [
        _item(ep, programme, decision)
        for ep, programme, decision in rows
        if scope.grant_for(ep.site, master_id, frozenset(), refused) is not None
    ]


def _item(ep: Episode, programme: str, decision: str | None) -> portal.RecordItem:
    released = ep.result_sent_at is not None
    detail: dict[str, object] = {"programme": programme, "round": ep.round}
    if released:
        detail.update(
            decision=decision or "",
            result_sent_at=ep.result_sent_at.isoformat() if ep.result_sent_at else None,
        )
    return portal.RecordItem(
        kind=KIND,
        ident=str(ep.id),
        site=ep.site,
        when=ep.screen_date,
        title=f"Screening mammography ({programme})",
        status=(decision or "decided") if released else ep.status,
        released=released,
        links={"api": f"/api/mammo/episodes/{ep.id}"},
        detail=detail,
    )


def install() -> None:
    """Register the screening-episode source with the portal registry."""
    portal.register_source(KIND, episodes)
