"""Finding patients for the professional portal: by name, birth date, local PatientID or INS, across sites.

A master patient is found when one of its local identities matches every word of the query, and only if the
caller may open its record: the policy's read scope is part of the one SQL statement, identity by identity
(an identity at one of a grant's sites, or a master among a grant's masters: the caller's site, care
relationships, break-the-glass), so that a patient the caller may not see is never counted or listed. This is
the same rule the timeline's policy check applies to the record, so every patient found can be opened.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from sqlalchemy import ColumnElement, false, func, or_, select, true

from archipel.platform.access import ReadScope
from archipel.platform.db import Database
from archipel.platform.identity.models import LocalIdentity
from archipel.platform.identity.normalize import DateError, fold, parse_birth_date

MAX_LIMIT = 100
_WORD = re.compile(r"[^\s,;]+")
_FR_DATE = re.compile(r"^(\d{2})/(\d{2})/(\d{4})$")
_INS = re.compile(r"^\d{13}(\d{2})?$")


class PatientSearchInvalid(ValueError):
    """The query cannot be searched; the message says why (HTTP 400)."""


@dataclass(frozen=True)
class PatientHit:
    """A master patient found, with the identities the caller may see (site, PatientID, names, birth date)."""

    master_id: int
    identities: list[dict[str, str]] = field(default_factory=list)

    def as_dict(self) -> dict[str, object]:
        """The hit as JSON-ready values, with a display name taken from its first identity."""
        first = self.identities[0] if self.identities else {}
        name = " ".join(p for p in (first.get("birth_name", ""), first.get("given_names", "")) if p)
        return {
            "master_id": self.master_id,
            "name": name,
            "birth_date": first.get("birth_date", ""),
            "sex": first.get("sex", ""),
            "sites": sorted({i["issuer"] for i in self.identities}),
            "identities": self.identities,
            "links": {"timeline": f"/app/index.html?patient={self.master_id}"},
        }


def _birth_date(word: str) -> str | None:
    m = _FR_DATE.match(word)
    text = f"{m.group(3)}-{m.group(2)}-{m.group(1)}" if m else word
    if not (text[:1].isdigit() and len(text) in (8, 10)):
        return None
    try:
        return parse_birth_date(text)
    except DateError:
        return None


def _word_condition(word: str) -> ColumnElement[bool]:
    """One word of the query: a birth date, an INS, a PatientID, or the start of a name's word."""
    li = LocalIdentity
    born = _birth_date(word)
    if born:
        return li.birth_date == born
    parts: list[ColumnElement[bool]] = [li.local_id == word]
    if _INS.match(word):
        parts.append(li.ins == word)
    folded = fold(word)
    if folded:
        for column in (li.birth_name, li.used_name, li.given_names):
            upper = func.upper(column)
            parts.append(
                or_(upper.like(f"{folded}%"), upper.like(f"% {folded}%"), upper.like(f"%-{folded}%"))
            )
    return or_(*parts)


def scope_condition(scope: ReadScope) -> ColumnElement[bool]:
    """The local identities whose patient record the scope lets the caller open."""
    if scope.sees_nothing:
        return false()
    conditions: list[ColumnElement[bool]] = []
    for grant in scope.grants:
        parts: list[ColumnElement[bool]] = []
        if grant.sites is not None:
            parts.append(LocalIdentity.issuer.in_(sorted(grant.sites)) if grant.sites else false())
        if grant.masters is not None:
            parts.append(LocalIdentity.master_id.in_(sorted(grant.masters)) if grant.masters else false())
        conditions.append(parts[0] if len(parts) == 1 else (true() if not parts else parts[0] & parts[1]))
    return or_(*conditions)


def find_patients(
    db: Database, scope: ReadScope, q: str, *, site: str = "", limit: int = 20
) -> tuple[list[PatientHit], int]:
    """The master patients matching every word of ``q`` (names, birth date, PatientID, INS) whose record the
    scope lets the caller open, and how many in all; ``site``: with an identity at that site."""
    words = _WORD.findall(q)
    if not words:
        raise PatientSearchInvalid("the query q has no word to look for")
    if len(words) > 8:
        raise PatientSearchInvalid("the query q has more than 8 words")
    visible = scope_condition(scope)
    conditions = [visible, *(_word_condition(w) for w in words)]
    if site:
        conditions.append(LocalIdentity.issuer == site)
    masters = select(LocalIdentity.master_id).where(*conditions).distinct()
    with db.sessions() as s:
        total = s.execute(select(func.count()).select_from(masters.subquery())).scalar_one()
        page = [
            m
            for (m,) in s.execute(
                masters.order_by(LocalIdentity.master_id).limit(min(max(limit, 1), MAX_LIMIT))
            )
        ]
        rows: list[LocalIdentity] = []
        if page:
            rows = list(
                s.execute(
                    select(LocalIdentity)
                    .where(LocalIdentity.master_id.in_(page), visible)
                    .order_by(LocalIdentity.master_id, LocalIdentity.issuer, LocalIdentity.local_id)
                ).scalars()
            )
        found: dict[int, list[dict[str, str]]] = {m: [] for m in page}
        for li in rows:
            found[li.master_id].append(
                {
                    "issuer": li.issuer,
                    "local_id": li.local_id,
                    "birth_name": li.birth_name,
                    "used_name": li.used_name,
                    "given_names": li.given_names,
                    "birth_date": li.birth_date,
                    "sex": li.sex,
                }
            )
    return [PatientHit(m, ids) for m, ids in found.items()], int(total)
