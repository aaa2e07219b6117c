"""Screening double reading as stored: programmes and their protocol, qualified readers, episodes with their
studies, reading tasks, readings, decisions and outcomes.

Structured parts of a reading that are only ever read back whole (findings, technical quality per view, the
L1 form's history) are JSON text; what metrics and rules query (assessments, density, roles, dates) are
columns. Rows are never deleted: a skipped task, a superseded read and a retake stay in the history.
"""

from __future__ import annotations

from datetime import date, datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    Date,
    ForeignKey,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from archipel.platform.db import Base, UTCDateTime, utcnow

FR_DEPISTAGE = "fr-depistage"
EU_BLINDED = "eu-blinded"
PROTOCOLS = (FR_DEPISTAGE, EU_BLINDED)

#: Which reads go to a third look in the blinded protocol.
DISCORDANT_ONLY, ALL_RECALLS, ALL_NON_NORMAL = "discordant-only", "all-recalls", "all-non-normal"
ARBITRATION_POLICIES = (DISCORDANT_ONLY, ALL_RECALLS, ALL_NON_NORMAL)
#: How a discordance is resolved in the blinded protocol.
CONSENSUS, ARBITRATION = "consensus", "arbitration"

#: Reading roles. fr: L1 (the imaging centre's form), L2, and an L2 consensus; eu: two blind reads, then a
#: consensus or an arbitration.
L1, L2, L2_CONSENSUS = "l1", "l2", "l2-consensus"
FIRST, SECOND = "first", "second"
ROLES = (L1, L2, L2_CONSENSUS, FIRST, SECOND, CONSENSUS, ARBITRATION)
#: Qualifications a reader may hold in a programme (``reader``: first or second blind read). ``coordinator``
#: reads no case: it lets its holder see the programme's whole reconciliation list and its metrics.
COORDINATOR = "coordinator"
QUALIFICATIONS = ("l1", "l2", "reader", "arbitrator", COORDINATOR)

NORMAL, RECALL, TECHNICAL_RECALL = "normal", "recall", "technical_recall"
DECISIONS = (NORMAL, RECALL, TECHNICAL_RECALL)
OUTCOMES = ("none", "benign", "cancer_in_situ", "cancer_invasive", "interval_cancer")
CANCERS = frozenset({"cancer_in_situ", "cancer_invasive"})
#: The four standard views a screening exam has (``views.STANDARD_VIEWS``), as a programme's default.
DEFAULT_SCREENING_VIEWS = "R-CC,R-MLO,L-CC,L-MLO"


class Programme(Base):
    """A screening programme: its protocol and settings (arbitration, blinding of the arbitrator, minimum
    yearly reads, deadline for the results letter, screening interval)."""

    __tablename__ = "screening_programmes"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    code: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(200), default="")
    protocol: Mapped[str] = mapped_column(String(32))
    arbitration_policy: Mapped[str] = mapped_column(String(32), default=DISCORDANT_ONLY)
    discordance_resolution: Mapped[str] = mapped_column(String(32), default=ARBITRATION)
    arbitrator_sees_reads: Mapped[bool] = mapped_column(Boolean, default=True)
    min_yearly_reads: Mapped[int] = mapped_column(Integer, default=0)
    result_deadline_days: Mapped[int] = mapped_column(Integer, default=15)
    #: The screening interval: a cancer diagnosed within it after a normal screening is an interval cancer
    #: (24 months in France, 36 in the UK).
    interval_months: Mapped[int] = mapped_column(Integer, default=24, server_default="24")
    #: The views an exam needs before it is read (comma-separated), and how long after its last image an exam
    #: still lacking one waits for it before it is flagged (0: at once).
    screening_views: Mapped[str] = mapped_column(
        String(128), default=DEFAULT_SCREENING_VIEWS, server_default=DEFAULT_SCREENING_VIEWS
    )
    settle_minutes: Mapped[int] = mapped_column(Integer, default=20, server_default="20")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class ReaderQualification(Base):
    """A reader (user subject) qualified for a role in a programme."""

    __tablename__ = "screening_qualifications"
    __table_args__ = (UniqueConstraint("programme_id", "reader", "qualification"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    programme_id: Mapped[int] = mapped_column(ForeignKey("screening_programmes.id"))
    reader: Mapped[str] = mapped_column(String(128), index=True)
    qualification: Mapped[str] = mapped_column(String(16))
    granted_by: Mapped[str] = mapped_column(String(128), default="")
    granted_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class Episode(Base):
    """One woman's screening round: who (local identity and master), where, when, its state and contacts.

    ``flag`` says why an episode must not be read silently (a view or laterality missing at intake).
    ``received_at`` is when the file was complete (every required view and, in France, the L1 form:
    ``episodes.file_complete``); ``result_sent_at`` when the last results letter was sent (empty while one
    waits in the outbox, or when none was queued).
    """

    __tablename__ = "screening_episodes"
    __table_args__ = (UniqueConstraint("programme_id", "external_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    programme_id: Mapped[int] = mapped_column(ForeignKey("screening_programmes.id"), index=True)
    external_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    #: The episode whose technical recall this retake answers.
    retake_of: Mapped[int | None] = mapped_column(Integer, nullable=True)
    issuer: Mapped[str] = mapped_column(String(64))
    patient_id: Mapped[str] = mapped_column(String(64))
    #: The woman's birth date when the source gives it (the history import), which checks her identity.
    birth_date: Mapped[date | None] = mapped_column(Date, nullable=True)
    master_id: Mapped[int | None] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), nullable=True, index=True
    )
    site: Mapped[str] = mapped_column(String(64))
    round: Mapped[str] = mapped_column(String(16))
    screen_date: Mapped[date] = mapped_column(Date, index=True)
    status: Mapped[str] = mapped_column(String(32), default="awaiting-images")
    flag: Mapped[str] = mapped_column(String(255), default="")
    priority: Mapped[int] = mapped_column(Integer, default=0)
    batch: Mapped[str] = mapped_column(String(64), default="")
    priors: Mapped[str] = mapped_column(String(16), default="none")
    woman_contact: Mapped[str] = mapped_column(String(255), default="")
    gp_contact: Mapped[str] = mapped_column(String(255), default="")
    #: The imaging centre's own address for recalls (its secretariat), given with the L1 form or the episode.
    centre_contact: Mapped[str] = mapped_column(String(255), default="", server_default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    received_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    result_sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)


class ScreeningStudy(Base):
    """An MG study seen by intake, with its normalised views (JSON list of ``{sop, laterality, view}``);
    ``episode_id`` is empty while it is on the reconciliation list."""

    __tablename__ = "screening_studies"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_uid: Mapped[str] = mapped_column(String(64), unique=True)
    episode_id: Mapped[int | None] = mapped_column(
        ForeignKey("screening_episodes.id"), nullable=True, index=True
    )
    issuer: Mapped[str] = mapped_column(String(64))
    patient_id: Mapped[str] = mapped_column(String(64))
    study_date: Mapped[str] = mapped_column(String(8), default="")
    views: Mapped[str] = mapped_column(Text, default="[]")
    flag: Mapped[str] = mapped_column(String(255), default="")
    received_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    #: When its latest image came (an exam is complete, or flagged, some time after it).
    last_image_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    #: The episode this earlier study was fetched for as a prior (it is then not on the reconciliation list).
    prior_of: Mapped[int | None] = mapped_column(Integer, nullable=True)


class ReadingTask(Base):
    """A read to be done on an episode in one role: open, claimed (locked to one reader), done or withdrawn.

    ``passed_by`` lists (comma-separated) the readers who skipped it, so it is not offered to them again.
    """

    __tablename__ = "screening_tasks"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    episode_id: Mapped[int] = mapped_column(ForeignKey("screening_episodes.id"), index=True)
    role: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16), default="open", index=True)
    claimed_by: Mapped[str] = mapped_column(String(128), default="")
    claimed_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    deferred_until: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    passed_by: Mapped[str] = mapped_column(Text, default="")
    note: Mapped[str] = mapped_column(String(255), default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    done_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)


class Reading(Base):
    """One reader's submitted read of an episode in one role: per-breast assessment (ACR 0-5), density (ACR
    a-d), findings and per-view quality (JSON), and the L1 form's clinical part (JSON) for an L1 read.

    ``blind`` marks reads made without seeing another read (the ones the blinded protocol's statistics use).
    """

    __tablename__ = "screening_readings"
    __table_args__ = (UniqueConstraint("episode_id", "role", "reader"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    episode_id: Mapped[int] = mapped_column(ForeignKey("screening_episodes.id"), index=True)
    task_id: Mapped[int | None] = mapped_column(ForeignKey("screening_tasks.id"), nullable=True)
    role: Mapped[str] = mapped_column(String(16))
    reader: Mapped[str] = mapped_column(String(128), index=True)
    blind: Mapped[bool] = mapped_column(Boolean, default=False)
    right_assessment: Mapped[int] = mapped_column(Integer)
    left_assessment: Mapped[int] = mapped_column(Integer)
    right_result: Mapped[str] = mapped_column(String(16), default="")
    left_result: Mapped[str] = mapped_column(String(16), default="")
    density: Mapped[str] = mapped_column(String(1), default="")
    findings: Mapped[str] = mapped_column(Text, default="[]")
    quality: Mapped[str] = mapped_column(Text, default="{}")
    form: Mapped[str] = mapped_column(Text, default="{}")
    opened_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    submitted_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class ScreeningDecision(Base):
    """The decision for the woman: normal, recall for assessment or technical recall, with its reasons."""

    __tablename__ = "screening_decisions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    episode_id: Mapped[int] = mapped_column(ForeignKey("screening_episodes.id"), unique=True)
    decision: Mapped[str] = mapped_column(String(32))
    reasons: Mapped[str] = mapped_column(Text, default="[]")
    decided_by: Mapped[str] = mapped_column(String(128))
    decided_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    letters: Mapped[str] = mapped_column(String(255), default="")


class ScreeningOutcome(Base):
    """What became of the woman: work-up, biopsy, pathology (cancer, invasive or in situ, size), or an interval
    cancer reported later."""

    __tablename__ = "screening_outcomes"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    episode_id: Mapped[int] = mapped_column(ForeignKey("screening_episodes.id"), index=True)
    outcome: Mapped[str] = mapped_column(String(32))
    workup: Mapped[str] = mapped_column(String(255), default="")
    biopsy: Mapped[bool] = mapped_column(Boolean, default=False)
    size_mm: Mapped[int | None] = mapped_column(Integer, nullable=True)
    diagnosed_on: Mapped[date | None] = mapped_column(Date, nullable=True)
    recorded_by: Mapped[str] = mapped_column(String(128))
    recorded_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


#: A deferred work-up's conclusion, and the biopsies it may include.
WORKUP_CONCLUSIONS = ("normal", "benign", "suspicious", "cancer")
BIOPSY_TYPES = ("none", "fine-needle", "core-needle", "vacuum-assisted", "surgical")


class DeferredWorkup(Base):
    """The deferred work-up ("bilan de diagnostic différé") after a recall: who did it, where and when, the exams
    (diagnostic views as JSON, ultrasound, MRI, a biopsy and its type), the assessment of each breast after the
    work-up (ACR / BI-RADS 1-6), the conclusion and, for a cancer, its pathology and size.

    A ``suspicious`` work-up (a biopsy to come) may be followed by another form once the pathology is known; a
    final one (normal, benign, cancer) records the episode's outcome, ``outcome_id``.
    """

    __tablename__ = "screening_workups"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    episode_id: Mapped[int] = mapped_column(ForeignKey("screening_episodes.id"), index=True)
    radiologist: Mapped[str] = mapped_column(String(128))
    site: Mapped[str] = mapped_column(String(64))
    performed_on: Mapped[date] = mapped_column(Date)
    diagnostic_views: Mapped[str] = mapped_column(Text, default="[]")
    ultrasound: Mapped[bool] = mapped_column(Boolean, default=False)
    mri: Mapped[bool] = mapped_column(Boolean, default=False)
    biopsy: Mapped[str] = mapped_column(String(32), default="none")
    biopsy_laterality: Mapped[str] = mapped_column(String(1), default="")
    right_assessment: Mapped[int] = mapped_column(Integer)
    left_assessment: Mapped[int] = mapped_column(Integer)
    conclusion: Mapped[str] = mapped_column(String(16))
    pathology: Mapped[str] = mapped_column(String(32), default="")
    size_mm: Mapped[int | None] = mapped_column(Integer, nullable=True)
    notes: Mapped[str] = mapped_column(Text, default="")
    outcome_id: Mapped[int | None] = mapped_column(ForeignKey("screening_outcomes.id"), nullable=True)
    recorded_by: Mapped[str] = mapped_column(String(128))
    recorded_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


#: What a technician or coordinator does with a flagged episode: read it as it is, or have it taken again.
FLAG_RELEASE, FLAG_RETAKE = "release", "retake"


class FlagResolution(Base):
    """A flag at intake resolved by hand: released (the exam is read as it is, the listed problems accepted) or
    sent for a retake (a technical recall), with who, when and why. ``problems`` (JSON list) are the flag's
    lines that were accepted; a new problem flags the episode again."""

    __tablename__ = "screening_flag_resolutions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    episode_id: Mapped[int] = mapped_column(ForeignKey("screening_episodes.id"), index=True)
    action: Mapped[str] = mapped_column(String(16))
    problems: Mapped[str] = mapped_column(Text, default="[]")
    reason: Mapped[str] = mapped_column(String(255))
    resolved_by: Mapped[str] = mapped_column(String(128))
    resolved_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


#: Where an episode's priors stand (``Episode.priors``): none needed, requested (a fetch is queued), retrieving,
#: received, or failed (the fetch's reason is on its :class:`PriorFetch`). The last three but one hold the case.
PRIORS_NONE, PRIORS_REQUESTED, PRIORS_RETRIEVING = "none", "requested", "retrieving"
PRIORS_RECEIVED, PRIORS_FAILED = "received", "failed"
PRIORS_HELD = frozenset({PRIORS_REQUESTED, PRIORS_RETRIEVING, PRIORS_FAILED})


class PriorFetch(Base):
    """One fetch of an episode's priors from the region's other PACS: the prefetch job that runs it, its state
    (requested, retrieving, received, failed, or released by hand) and, when it failed, the nodes' reasons."""

    __tablename__ = "screening_prior_fetches"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    episode_id: Mapped[int] = mapped_column(ForeignKey("screening_episodes.id"), index=True)
    job_id: Mapped[str] = mapped_column(String(32), default="")
    prefetch_request_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    state: Mapped[str] = mapped_column(String(16), default=PRIORS_REQUESTED, index=True)
    reason: Mapped[str] = mapped_column(Text, default="")
    requested_by: Mapped[str] = mapped_column(String(128), default="")
    requested_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)


class DeadlineWarning(Base):
    """A warning sent to the programme's coordinators that an episode's result is at risk of missing its
    deadline, or late: one per episode and state, so that the periodic watch warns once for each."""

    __tablename__ = "screening_deadline_warnings"
    __table_args__ = (UniqueConstraint("episode_id", "state"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    episode_id: Mapped[int] = mapped_column(ForeignKey("screening_episodes.id"), index=True)
    state: Mapped[str] = mapped_column(String(16))
    warned_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    recipients: Mapped[int] = mapped_column(Integer, default=0)
