"""Studies in a person's record (the portal registry's ``study`` source).

Every study of every local identity linked to the master, at every site, is an item, as far as the caller's
read scope lets them see it: the scope is part of the one SQL statement (``visibility``), so a study hidden
by its confidentiality codes, a refused sharing or the lack of a care relationship is never read at all. A
study is *released*: a patient may see their own studies (the scope still hides what is kept from them).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date

from sqlalchemy import and_, select

from archipel.platform import access, consent, portal
from archipel.platform.authn import Principal
from archipel.platform.db import Database
from archipel.platform.identity.models import LocalIdentity
from archipel.radiology import visibility
from archipel.radiology.models import Patient, Study

KIND = "study"


def study_date(value: str) -> date | None:
    """A DICOM DA value (``YYYYMMDD``) as a date; ``None`` when empty or malformed."""
    if len(value) != 8 or not value.isdigit():
        return None
    try:
        return date(int(value[:4]), int(value[4:6]), int(value[6:]))
    except ValueError:
        return None


def studies(
    db: Database, principal: Principal, master_id: int, facts: access.Facts
) -> Iterable[portal.RecordItem]:
    """The master's studies the caller may read, each with its viewer link."""
    scope = access.read_scope(principal, facts)
    with db.sessions() as s:
        group = sorted(consent.merged_groups(s, {master_id}))
        rows = s.execute(
            select(Study, Patient.issuer, Patient.patient_id)
            .join(Patient, Patient.id == Study.patient_pk)
            .join(
                LocalIdentity,
                and_(LocalIdentity.issuer == Patient.issuer, LocalIdentity.local_id == Patient.patient_id),
            )
            .where(LocalIdentity.master_id.in_(group), visibility.condition(scope))
            .order_by(Study.id)
        ).all()
    return [_item(st, issuer, patient_id) for st, issuer, patient_id in rows]


def _item(st: Study, issuer: str, patient_id: str) -> portal.RecordItem:
    modalities = [m for m in st.modalities.split("\\") if m]
    title = st.description or " ".join(modalities) or "Study"
    return portal.RecordItem(
        kind=KIND,
        ident=st.study_uid,
        site=st.site,
        when=study_date(st.study_date),
        title=title,
        status="available",
        released=True,
        links={"viewer": f"/app/study.html?study={st.study_uid}"},
        detail={
            "modalities": modalities,
            "description": st.description,
            "accession_number": st.accession_number,
            "issuer": issuer,
            "patient_id": patient_id,
        },
    )


def install() -> None:
    """Register the study source with the portal registry."""
    portal.register_source(KIND, studies)
