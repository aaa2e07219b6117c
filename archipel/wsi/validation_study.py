"""The validation of whole-slide imaging for diagnosis, as the CAP guideline asks: per pathologist and per clinical
application (frozen sections are an application of their own), at least 60 cases read on glass, then read again
digitally at least 14 days later without seeing the glass read, and the intra-observer concordance of the two
(goal: 95 % or more).

A study belongs to one pathologist. A case is one slide of the archive. The glass read is recorded first; the
digital read opens only once the washout has passed, and until it is recorded the glass read is not shown. Both
reads are kept as given; concordance compares their diagnostic categories. Functions here run in the caller's
transaction and raise :class:`ValidationError` with the HTTP status and the reason of a refused step.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ForeignKey, Integer, String, Text, UniqueConstraint, select
from sqlalchemy.orm import Mapped, Session, mapped_column

from archipel.platform.db import Base, UTCDateTime

#: The clinical applications a validation covers; a frozen-section validation is its own.
APPLICATIONS = ("frozen-section", "routine-he", "immunohistochemistry", "special-stains", "cytology")
#: Frozen-section reads use the verdict's categories, so that they compare like with like.
FROZEN_CATEGORIES = ("benign", "malignant", "uncertain", "deferred")
MIN_CASES, WASHOUT_DAYS, GOAL = 60, 14, 0.95


class ValidationError(Exception):
    """A refused step; ``status`` is the HTTP answer and ``reason`` says why."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


class ValidationStudy(Base):
    """One pathologist's validation for one clinical application."""

    __tablename__ = "validation_studies"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    pathologist: Mapped[str] = mapped_column(String(128), index=True)
    application: Mapped[str] = mapped_column(String(32))
    min_cases: Mapped[int] = mapped_column(Integer)
    washout_days: Mapped[int] = mapped_column(Integer)
    created_by: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())

    def as_dict(self) -> dict[str, Any]:
        """The study as the API shows it."""
        return {
            "study_id": self.id,
            "pathologist": self.pathologist,
            "application": self.application,
            "min_cases": self.min_cases,
            "washout_days": self.washout_days,
            "created_at": self.created_at.isoformat(),
        }


class ValidationCase(Base):
    """One slide of a study, its glass read and its digital read."""

    __tablename__ = "validation_cases"
    __table_args__ = (UniqueConstraint("study_id", "slide_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("validation_studies.id"), index=True)
    slide_id: Mapped[str] = mapped_column(ForeignKey("slides.id"))
    added_at: Mapped[datetime] = mapped_column(UTCDateTime())
    glass_diagnosis: Mapped[str] = mapped_column(String(64), default="")
    glass_text: Mapped[str] = mapped_column(Text, default="")
    glass_read_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    digital_diagnosis: Mapped[str] = mapped_column(String(64), default="")
    digital_text: Mapped[str] = mapped_column(Text, default="")
    digital_read_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)


def create_study(
    s: Session,
    pathologist: str,
    application: str,
    *,
    by: str,
    now: datetime,
    min_cases: int,
    washout_days: int,
) -> ValidationStudy:
    """A new study; 422 for an unknown application or bounds below the guideline's."""
    if application not in APPLICATIONS:
        raise ValidationError(
            422, f"unknown application {application!r}; choose one of: {', '.join(APPLICATIONS)}"
        )
    if min_cases < MIN_CASES or washout_days < WASHOUT_DAYS:
        raise ValidationError(
            422, f"the guideline asks for at least {MIN_CASES} cases and {WASHOUT_DAYS} days apart"
        )
    study = ValidationStudy(
        pathologist=pathologist,
        application=application,
        min_cases=min_cases,
        washout_days=washout_days,
        created_by=by,
        created_at=now,
    )
    s.add(study)
    s.flush()
    return study


def study_of(s: Session, study_id: int, pathologist: str) -> ValidationStudy:
    """The study, if ``pathologist`` is its reader (403 otherwise, 404 when there is none)."""
    study = s.get(ValidationStudy, study_id)
    if study is None:
        raise ValidationError(404, f"no validation study {study_id}")
    if study.pathologist != pathologist:
        raise ValidationError(403, f"validation study {study_id} is {study.pathologist}'s")
    return study


def case_of(s: Session, study: ValidationStudy, case_id: int) -> ValidationCase:
    """A case of the study, or 404."""
    case = s.get(ValidationCase, case_id)
    if case is None or case.study_id != study.id:
        raise ValidationError(404, f"no case {case_id} in validation study {study.id}")
    return case


def add_case(s: Session, study: ValidationStudy, slide_id: str, now: datetime) -> ValidationCase:
    """Add a slide as a case; 409 when it is in the study already."""
    taken = s.execute(
        select(ValidationCase.id).where(
            ValidationCase.study_id == study.id, ValidationCase.slide_id == slide_id
        )
    ).first()
    if taken is not None:
        raise ValidationError(409, f"slide {slide_id} is case {taken[0]} of this study already")
    case = ValidationCase(
        study_id=study.id, slide_id=slide_id, added_at=now, glass_diagnosis="", digital_diagnosis=""
    )
    s.add(case)
    s.flush()
    return case


def _category(study: ValidationStudy, diagnosis: str) -> str:
    value = diagnosis.strip().lower()
    if not value:
        raise ValidationError(422, "a diagnosis is required")
    if study.application == "frozen-section" and value not in FROZEN_CATEGORIES:
        raise ValidationError(422, f"a frozen-section read is one of: {', '.join(FROZEN_CATEGORIES)}")
    return value


def digital_opens_at(study: ValidationStudy, case: ValidationCase) -> datetime | None:
    """When the digital read of ``case`` may be recorded (``None`` before the glass read)."""
    return case.glass_read_at + timedelta(days=study.washout_days) if case.glass_read_at else None


def record_glass(
    s: Session, study: ValidationStudy, case: ValidationCase, diagnosis: str, text: str, now: datetime
) -> None:
    """The glass read, once (409 when recorded already)."""
    if case.glass_read_at is not None:
        raise ValidationError(409, f"the glass read of case {case.id} is recorded already")
    case.glass_diagnosis, case.glass_text, case.glass_read_at = _category(study, diagnosis), text, now
    s.flush()


def record_digital(
    s: Session, study: ValidationStudy, case: ValidationCase, diagnosis: str, text: str, now: datetime
) -> None:
    """The digital read, once, after the washout (409 before the glass read, during the washout, or twice)."""
    opens = digital_opens_at(study, case)
    if opens is None:
        raise ValidationError(409, f"record the glass read of case {case.id} first")
    if now < opens:
        raise ValidationError(
            409, f"the digital read of case {case.id} opens on {opens.isoformat(timespec='minutes')}"
        )
    if case.digital_read_at is not None:
        raise ValidationError(409, f"the digital read of case {case.id} is recorded already")
    case.digital_diagnosis, case.digital_text, case.digital_read_at = _category(study, diagnosis), text, now
    s.flush()


def case_view(study: ValidationStudy, case: ValidationCase) -> dict[str, Any]:
    """A case for its reader: the glass read stays hidden until the digital read is recorded."""
    opens = digital_opens_at(study, case)
    both = case.digital_read_at is not None
    return {
        "case_id": case.id,
        "slide_id": case.slide_id,
        "tiles": f"/tiles/{case.slide_id}.dzi",
        "glass_read_at": case.glass_read_at.isoformat() if case.glass_read_at else None,
        "digital_opens_at": opens.isoformat() if opens else None,
        "digital_read_at": case.digital_read_at.isoformat() if case.digital_read_at else None,
        "glass": {"diagnosis": case.glass_diagnosis, "text": case.glass_text} if both else None,
        "digital": {"diagnosis": case.digital_diagnosis, "text": case.digital_text} if both else None,
        "concordant": case.glass_diagnosis == case.digital_diagnosis if both else None,
    }


def report(s: Session, study: ValidationStudy, now: datetime) -> dict[str, Any]:
    """Where the study stands: cases, reads, concordance against the 95 % goal, and which cases are due."""
    cases = list(s.execute(select(ValidationCase).where(ValidationCase.study_id == study.id)).scalars())
    paired = [c for c in cases if c.glass_read_at and c.digital_read_at]
    concordant = sum(1 for c in paired if c.glass_diagnosis == c.digital_diagnosis)
    share = round(concordant / len(paired), 4) if paired else None
    due = [
        c.id for c in cases if c.digital_read_at is None and (o := digital_opens_at(study, c)) and o <= now
    ]
    return {
        **study.as_dict(),
        "cases": len(cases),
        "glass_read": sum(1 for c in cases if c.glass_read_at),
        "digital_read": len(paired),
        "concordant": concordant,
        "concordance": share,
        "goal": GOAL,
        "enough_cases": len(paired) >= study.min_cases,
        "passed": len(paired) >= study.min_cases and share is not None and share >= GOAL,
        "discordant_cases": [c.id for c in paired if c.glass_diagnosis != c.digital_diagnosis],
        "digital_read_due": due,
    }
