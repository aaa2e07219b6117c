"""The registered HL7 senders: a sending facility (MSH-4), optionally one application (MSH-3), and its site.

A message from a sender not registered here is refused: its patient IDs would be of no known issuer.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from archipel.platform.db import Database, utcnow
from archipel.platform.identity.intake import add_issuer
from archipel.radiology.hl7.models import Hl7Source


class SourceError(ValueError):
    """A sender registration that cannot be accepted; the message says why."""


@dataclass(frozen=True)
class Source:
    """A registered sender, as listed."""

    facility: str
    application: str
    site: str


def _code(value: str, what: str) -> str:
    text = value.strip()
    if len(text) > 64 or any(ord(c) < 32 for c in text):
        raise SourceError(f"{what} {value!r} must be at most 64 printable characters")
    return text


def add_source(db: Database, facility: str, site: str, application: str = "") -> Source:
    """Accept messages from ``facility`` (and only ``application`` of it, when given) as coming from ``site``,
    registering ``site`` as an issuer of patient IDs if it is not yet; changes the site of a known sender."""
    facility, application, site = (
        _code(facility, "facility"),
        _code(application, "application"),
        _code(site, "site"),
    )
    if not facility or not site:
        raise SourceError("a sender needs a facility (MSH-4) and a site")
    with db.write() as s:
        add_issuer(s, site)
        row = s.execute(
            select(Hl7Source).where(Hl7Source.facility == facility, Hl7Source.application == application)
        ).scalar_one_or_none()
        if row is None:
            s.add(Hl7Source(facility=facility, application=application, site=site, created_at=utcnow()))
        else:
            row.site = site
    return Source(facility, application, site)


def list_sources(db: Database) -> list[Source]:
    """Every registered sender, by facility then application."""
    with db.sessions() as s:
        rows = s.execute(select(Hl7Source).order_by(Hl7Source.facility, Hl7Source.application)).scalars()
        return [Source(r.facility, r.application, r.site) for r in rows]


def site_of(s: Session, facility: str, application: str) -> str | None:
    """The site of a sender: the entry for its facility and application, else its facility's catch-all entry;
    ``None`` for an unknown sender."""
    rows = s.execute(
        select(Hl7Source.application, Hl7Source.site).where(
            Hl7Source.facility == facility, Hl7Source.application.in_([application, ""])
        )
    ).all()
    by_app = dict((a, site) for a, site in rows)
    return by_app.get(application) or by_app.get("")
