"""What the screening API accepts, validated before anything is stored (pydantic, apart from the ORM models).

A read's per-breast assessment is an ACR category 0-5 and its density ACR a-d; a breast given as normal must be
ACR 1-2 and one given as positive ACR 0 or 3-5; a positive breast (ACR 3-5) needs a located finding on that
side; a technically insufficient breast (CTI) needs a view of that side judged inadequate, with its reason.
"""

from __future__ import annotations

import re
from datetime import date
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from archipel.mammo.models import (
    ARBITRATION_POLICIES,
    BIOPSY_TYPES,
    DEFAULT_SCREENING_VIEWS,
    DISCORDANT_ONLY,
    OUTCOMES,
    PROTOCOLS,
    QUALIFICATIONS,
    WORKUP_CONCLUSIONS,
)
from archipel.mammo.views import parse_required

_VIEW = re.compile(r"^[RL]-(CC|MLO|ML|LM|XCCL|XCCM)$")
_EMAIL = re.compile(r"^[^@\s]{1,64}@[^@\s]{1,190}\.[^@\s]{2,63}$")
_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")

Laterality = Literal["R", "L"]
BreastResult = Literal["normal", "positive", "cti"]


class Strict(BaseModel):
    """Unknown fields are refused, strings are stripped."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class FindingMark(Strict):
    """Where a finding is seen on one view, in image pixel coordinates; on a multi-frame image (a tomosynthesis
    stack) also its frame, the slice, counted from 1 (checked against the image's number of frames when read)."""

    view: str
    x: float = Field(ge=0)
    y: float = Field(ge=0)
    sop_uid: str = Field(default="", max_length=64)
    frame: int | None = Field(default=None, ge=1)

    @field_validator("view")
    @classmethod
    def _view(cls, v: str) -> str:
        if not _VIEW.match(v):
            raise ValueError(f"view {v!r} is not a laterality and view such as R-CC or L-MLO")
        return v


class Finding(Strict):
    """A located finding: type, laterality, quadrant or clock position, depth, the views it is seen on, and
    the level of suspicion (ACR 2-5)."""

    type: Literal["mass", "calcifications", "distortion", "asymmetry"]
    laterality: Laterality
    quadrant: Literal["UOQ", "UIQ", "LOQ", "LIQ", "central", "retroareolar", "axillary"] | None = None
    clock: int | None = Field(default=None, ge=1, le=12)
    depth: Literal["anterior", "middle", "posterior"] | None = None
    views: list[FindingMark] = Field(min_length=1, max_length=8)
    suspicion: int = Field(ge=2, le=5)

    @model_validator(mode="after")
    def _located(self) -> Finding:
        if self.quadrant is None and self.clock is None:
            raise ValueError("a finding needs a quadrant or a clock position")
        for mark in self.views:
            if mark.view[0] != self.laterality:
                raise ValueError(f"a finding of the {self.laterality} breast is marked on view {mark.view}")
        return self


class ViewQuality(Strict):
    """Whether a view is technically adequate; an inadequate one says why."""

    adequate: bool
    reason: str = Field(default="", max_length=200)

    @model_validator(mode="after")
    def _reason(self) -> ViewQuality:
        if not self.adequate and not self.reason:
            raise ValueError("a view judged technically insufficient needs a reason")
        return self


class Breast(Strict):
    """One breast's assessment (ACR 0-5) and, optionally, its result as the reader states it."""

    assessment: int = Field(ge=0, le=5)
    result: BreastResult | None = None

    @model_validator(mode="after")
    def _consistent(self) -> Breast:
        if self.result == "normal" and self.assessment not in (1, 2):
            raise ValueError(f"a normal breast is ACR 1 or 2, not ACR {self.assessment}")
        if self.result == "positive" and self.assessment in (1, 2):
            raise ValueError(f"a positive breast is ACR 0 or 3-5, not ACR {self.assessment}")
        return self


class ReadBody(Strict):
    """One read: both breasts, density, findings, technical quality per view."""

    right: Breast
    left: Breast
    density: Literal["a", "b", "c", "d"]
    findings: list[Finding] = Field(default_factory=list, max_length=20)
    quality: dict[str, ViewQuality] = Field(default_factory=dict)
    further_tests: str = Field(default="", max_length=500)
    consensus_requested: bool = False

    @field_validator("quality")
    @classmethod
    def _views(cls, v: dict[str, ViewQuality]) -> dict[str, ViewQuality]:
        for view in v:
            if not _VIEW.match(view):
                raise ValueError(f"quality names {view!r}, not a laterality and view such as R-CC")
        return v

    @model_validator(mode="after")
    def _breasts(self) -> ReadBody:
        for side, breast in (("R", self.right), ("L", self.left)):
            name = "right" if side == "R" else "left"
            positive = breast.result == "positive" or (breast.result is None and breast.assessment >= 3)
            if positive and breast.assessment >= 3 and not any(f.laterality == side for f in self.findings):
                raise ValueError(
                    f"the {name} breast is positive (ACR {breast.assessment}) but has no finding"
                )
            if breast.result == "cti" and not any(
                view.startswith(side) and not q.adequate for view, q in self.quality.items()
            ):
                raise ValueError(
                    f"the {name} breast is technically insufficient but no {side} view is inadequate"
                )
        return self


def _contact(v: str) -> str:
    if v and not _EMAIL.match(v):
        raise ValueError("a contact is an e-mail address")
    return v


class EpisodeBody(Strict):
    """An episode to register: the programme, the woman (issuer and PatientID), site, round, date, optionally the
    study already received, the contacts the results letters go to (the woman, her GP, and the imaging centre's
    own address for recalls), and the worklist's priority and batch."""

    programme: str = Field(min_length=1, max_length=64)
    issuer: str = Field(min_length=1, max_length=64)
    patient_id: str = Field(min_length=1, max_length=64)
    site: str = Field(min_length=1, max_length=64)
    round: Literal["first", "subsequent"]
    screen_date: date
    study_uid: str = Field(default="", max_length=64)
    woman_contact: str = Field(default="", max_length=255)
    gp_contact: str = Field(default="", max_length=255)
    centre_contact: str = Field(default="", max_length=255)
    priority: int = Field(default=0, ge=0, le=9)
    batch: str = Field(default="", max_length=64)

    @field_validator("woman_contact", "gp_contact", "centre_contact")
    @classmethod
    def _contacts(cls, v: str) -> str:
        return _contact(v)

    @field_validator("issuer", "patient_id")
    @classmethod
    def _ident(cls, v: str) -> str:
        if "\\" in v or any(ord(c) < 32 for c in v):
            raise ValueError("identifiers may not contain a backslash or control characters")
        return v


class L1FormBody(EpisodeBody):
    """The imaging centre's L1 form: the episode, the woman's history and clinical exam, the immediate work-up
    and ultrasound, and the L1 read (assessments after the work-up)."""

    history: str = Field(default="", max_length=2000)
    clinical_exam: str = Field(default="", max_length=2000)
    immediate_workup: bool = False
    ultrasound: bool = False
    workup_result: str = Field(default="", max_length=2000)
    read: ReadBody


class ProgrammeBody(Strict):
    """A programme and its settings."""

    code: str = Field(min_length=1, max_length=64)
    name: str = Field(default="", max_length=200)
    protocol: str
    arbitration_policy: str = DISCORDANT_ONLY
    discordance_resolution: Literal["consensus", "arbitration"] = "arbitration"
    arbitrator_sees_reads: bool = True
    min_yearly_reads: int = Field(default=0, ge=0, le=100_000)
    result_deadline_days: int = Field(default=15, ge=1, le=365)
    #: The screening interval in months (interval cancers are counted within it after a normal screening).
    interval_months: int = Field(default=24, ge=1, le=120)
    #: The views an exam needs before it is read, comma-separated; and the minutes an exam lacking one waits
    #: after its latest image before it is flagged (0: at once).
    screening_views: str = Field(default=DEFAULT_SCREENING_VIEWS, min_length=4, max_length=128)
    settle_minutes: int = Field(default=20, ge=0, le=7 * 24 * 60)

    @field_validator("screening_views")
    @classmethod
    def _views(cls, v: str) -> str:
        return ",".join(parse_required(v))

    @field_validator("code")
    @classmethod
    def _code(cls, v: str) -> str:
        if not _ID.match(v):
            raise ValueError("a programme code is letters, digits, '.', '_' or '-'")
        return v

    @field_validator("protocol")
    @classmethod
    def _protocol(cls, v: str) -> str:
        if v not in PROTOCOLS:
            raise ValueError(f"unknown protocol {v!r}; choose one of: {', '.join(PROTOCOLS)}")
        return v

    @field_validator("arbitration_policy")
    @classmethod
    def _policy(cls, v: str) -> str:
        if v not in ARBITRATION_POLICIES:
            raise ValueError(
                f"unknown arbitration policy {v!r}; choose one of: {', '.join(ARBITRATION_POLICIES)}"
            )
        return v


class QualificationBody(Strict):
    """A reader qualified for a role of a programme."""

    reader: str = Field(min_length=1, max_length=128)
    qualification: str

    @field_validator("qualification")
    @classmethod
    def _q(cls, v: str) -> str:
        if v not in QUALIFICATIONS:
            raise ValueError(f"unknown qualification {v!r}; choose one of: {', '.join(QUALIFICATIONS)}")
        return v


class ReasonBody(Strict):
    """Why a reader skips or defers a case; a deferral also says for how long."""

    reason: str = Field(min_length=3, max_length=255)
    hours: int = Field(default=24, ge=1, le=720)


class PriorsBody(Strict):
    """What to do with the episode's priors: ``requested`` fetches them from the region's PACS (the case is
    held back meanwhile), ``received`` or ``none`` (needed) release the case by hand."""

    status: Literal["requested", "received", "none"]


class MatchBody(Strict):
    """The episode a study on the reconciliation list belongs to."""

    episode_id: int = Field(ge=1)


class OutcomeBody(Strict):
    """What became of the woman."""

    outcome: str
    workup: str = Field(default="", max_length=255)
    biopsy: bool = False
    size_mm: int | None = Field(default=None, ge=0, le=500)
    diagnosed_on: date | None = None

    @field_validator("outcome")
    @classmethod
    def _outcome(cls, v: str) -> str:
        if v not in OUTCOMES:
            raise ValueError(f"unknown outcome {v!r}; choose one of: {', '.join(OUTCOMES)}")
        return v


class DiagnosticView(Strict):
    """A diagnostic mammography view of the work-up: laterality and view (``L-CC``), and its modifier."""

    view: str
    modifier: Literal["none", "spot", "magnification", "spot-magnification"] = "none"

    @field_validator("view")
    @classmethod
    def _view(cls, v: str) -> str:
        if not _VIEW.match(v):
            raise ValueError(f"view {v!r} is not a laterality and view such as R-CC or L-MLO")
        return v


class DeferredWorkupBody(Strict):
    """The deferred work-up after a recall: who did it (the radiologist), where and when, the exams done, the
    assessment of each breast after the work-up (ACR / BI-RADS 1-6, 6 a proven cancer), and the conclusion.

    ``normal`` needs both breasts ACR 1-2; ``benign`` ACR 1-3; ``suspicious`` (a biopsy to come or done, its
    pathology awaited) a breast ACR 4-5 and the biopsy; ``cancer`` the biopsy and its pathology (in situ or
    invasive). A biopsy names its type and the breast.
    """

    radiologist: str = Field(min_length=1, max_length=128)
    site: str = Field(default="", max_length=64)
    performed_on: date
    diagnostic_views: list[DiagnosticView] = Field(default_factory=list, max_length=20)
    ultrasound: bool = False
    mri: bool = False
    biopsy: str = "none"
    biopsy_laterality: Laterality | None = None
    right_assessment: int = Field(ge=1, le=6)
    left_assessment: int = Field(ge=1, le=6)
    conclusion: str
    pathology: Literal["cancer_in_situ", "cancer_invasive"] | None = None
    size_mm: int | None = Field(default=None, ge=0, le=500)
    notes: str = Field(default="", max_length=2000)

    @field_validator("biopsy")
    @classmethod
    def _biopsy(cls, v: str) -> str:
        if v not in BIOPSY_TYPES:
            raise ValueError(f"unknown biopsy {v!r}; choose one of: {', '.join(BIOPSY_TYPES)}")
        return v

    @field_validator("conclusion")
    @classmethod
    def _conclusion(cls, v: str) -> str:
        if v not in WORKUP_CONCLUSIONS:
            raise ValueError(f"unknown conclusion {v!r}; choose one of: {', '.join(WORKUP_CONCLUSIONS)}")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> DeferredWorkupBody:
        worst = max(self.right_assessment, self.left_assessment)
        if not (self.diagnostic_views or self.ultrasound or self.mri or self.biopsy != "none"):
            raise ValueError("a work-up lists the exams done (diagnostic views, ultrasound, MRI or a biopsy)")
        if self.biopsy != "none" and self.biopsy_laterality is None:
            raise ValueError(f"a {self.biopsy} biopsy names the breast (biopsy_laterality R or L)")
        if self.biopsy == "none" and self.biopsy_laterality is not None:
            raise ValueError("biopsy_laterality is given but no biopsy")
        if self.conclusion == "normal" and worst > 2:
            raise ValueError(f"a normal work-up has both breasts ACR 1-2, not ACR {worst}")
        if self.conclusion == "benign" and worst > 3:
            raise ValueError(f"a benign work-up has both breasts ACR 1-3, not ACR {worst}")
        if self.conclusion == "suspicious":
            if worst not in (4, 5):
                raise ValueError(f"a suspicious work-up has a breast ACR 4-5, not ACR {worst}")
            if self.biopsy == "none":
                raise ValueError("a suspicious work-up goes to a biopsy: give its type and breast")
        if self.conclusion == "cancer" and (self.biopsy == "none" or self.pathology is None):
            raise ValueError("a cancer is proven by a biopsy: give the biopsy and its pathology")
        if self.conclusion != "cancer" and (self.pathology is not None or self.size_mm is not None):
            raise ValueError("pathology and size_mm go with a cancer conclusion only")
        return self
