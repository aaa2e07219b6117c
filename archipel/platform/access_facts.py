"""Loading what the access policy weighs, once per request: the principal's care relationships and emergency
accesses, the patients' consent, and the resource's master patient (joined through the MPI at request time, so
merges and unmerges apply at once).

A relationship, consent decision or emergency access recorded on a master that was later merged into another
counts for the master it now belongs to.
"""

from __future__ import annotations

from datetime import datetime
from types import MappingProxyType

from sqlalchemy import select
from sqlalchemy.orm import Session

from archipel.platform import breakglass, care, consent
from archipel.platform.access import Facts, Resource, with_master
from archipel.platform.authn import Principal
from archipel.platform.care import CareLink
from archipel.platform.db import Database, utcnow
from archipel.platform.identity.models import LocalIdentity, MasterPatient


def master_of_ref(s: Session, ref: str) -> int | None:
    """The current master of a local reference ``ISSUER/PATIENT_ID`` (a patient principal's subject), or of a
    master id given as digits."""
    if ref.isdigit():  # a patient principal named by its master id
        return int(ref)
    issuer, sep, local_id = ref.partition("/")
    if not sep or not issuer or not local_id:
        return None
    return s.execute(
        select(LocalIdentity.master_id).where(
            LocalIdentity.issuer == issuer, LocalIdentity.local_id == local_id
        )
    ).scalar_one_or_none()


def current_masters(s: Session, masters: set[int]) -> dict[int, int]:
    """Each of ``masters`` mapped to the master it now belongs to (following ``merged_into``)."""
    out = {m: m for m in masters}
    pending = set(masters)
    for _ in range(consent.MERGE_DEPTH):
        if not pending:
            break
        rows = s.execute(
            select(MasterPatient.id, MasterPatient.merged_into).where(
                MasterPatient.id.in_(pending), MasterPatient.merged_into.is_not(None)
            )
        ).all()
        moved = {m: into for m, into in rows if into is not None}
        for original, now_at in list(out.items()):
            if now_at in moved:
                out[original] = moved[now_at]
        pending = set(moved.values())
    return out


def _care(s: Session, professional: str, now: datetime) -> dict[int, CareLink]:
    links = care.active_links(s, professional, now)
    if not links:
        return {}
    where = current_masters(s, set(links))
    merged: dict[int, CareLink] = {}
    for master, link in links.items():
        target = where[master]
        if target in merged:
            old = merged[target]
            link = CareLink(old.kinds | link.kinds, old.named or link.named)
        merged[target] = link
    return merged


def load(
    db: Database, principal: Principal, resource: Resource | None = None, now: datetime | None = None
) -> tuple[Resource, Facts]:
    """The resource with its master filled in (from its ``issuer/PatientID``) and the facts to decide on it.

    Without a resource, the facts describe the principal only (for :func:`access.read_scope`).
    """
    now = now or utcnow()
    res = resource or Resource(kind="study")
    with db.sessions() as s:
        if res.master is None and res.patient:
            res = with_master(res, master_of_ref(s, res.patient))
        elif res.master is not None:
            res = with_master(res, current_masters(s, {res.master})[res.master])
        links: dict[int, CareLink] = {}
        bg: frozenset[int] = frozenset()
        own: frozenset[int] = frozenset()
        if principal.kind == "user":
            links = _care(s, principal.subject, now)
            raw_bg = breakglass.active_masters(s, principal.subject, now)
            bg = frozenset(current_masters(s, set(raw_bg)).values()) if raw_bg else frozenset()
        elif principal.kind == "patient":
            master = master_of_ref(s, principal.subject)
            own = frozenset({master}) if master is not None else frozenset()
        concerned = set(links) | ({res.master} if res.master is not None else set())
        refused = consent.refused_among(s, concerned) if concerned else frozenset()
        sites: frozenset[str] = frozenset()
        if res.master is not None:
            sites = frozenset(
                s.execute(select(LocalIdentity.issuer).where(LocalIdentity.master_id == res.master)).scalars()
            )
    facts = Facts(
        care=MappingProxyType(links),
        break_glass=bg,
        refused=refused,
        own_masters=own,
        patient_sites=sites,
    )
    return res, facts
