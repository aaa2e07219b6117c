"""Reader volumes against the programme's yearly minimum (e.g. 1,500 L2 reads in France, 5,000 in the UK), and
the warning a reader gets when they fall below it.

A reader's volume is the count of the reads the minimum is about (L2 in ``fr-depistage``, the two blind reads in
``eu-blinded``; :data:`~archipel.mammo.metrics.MINIMUM_ROLES`) submitted over the last 365 days. A reader qualified
less than a year ago is held to the share of the minimum for the time since their qualification, so a newcomer
is not warned on day one. The weekly check sends an in-app notification to each reader below the minimum, at
most once every :data:`WARN_EVERY`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from celery import shared_task
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from archipel.mammo import protocol
from archipel.mammo.metrics import MINIMUM_ROLES
from archipel.mammo.models import Episode, Programme, ReaderQualification, Reading
from archipel.platform import inbox, jobs, schedule
from archipel.platform.db import Database, utcnow
from archipel.platform.runtime import get_runtime

log = logging.getLogger("archipel.mammo.volumes")

YEAR = timedelta(days=365)
#: A reader below the minimum is reminded at most this often.
WARN_EVERY = timedelta(days=30)
WARNING_KIND = "screening-volume"
CHECK_TASK = "mammo.reader_volumes"


@dataclass(frozen=True)
class ReaderVolume:
    """A reader's counted reads over the last year in a programme, against the minimum due for that time."""

    programme: str
    reader: str
    reads: int
    yearly_minimum: int
    due: int
    since: datetime

    @property
    def below_minimum(self) -> bool:
        """Whether the reader read fewer cases than the minimum due for the time they have been qualified."""
        return self.reads < self.due

    @property
    def warning(self) -> str:
        """The warning shown to the reader, or empty."""
        if not self.below_minimum:
            return ""
        return (
            f"{self.reads} counted reads in programme {self.programme} since {self.since.date().isoformat()}, "
            f"below the {self.due} due (yearly minimum {self.yearly_minimum})"
        )

    def as_dict(self) -> dict[str, object]:
        """JSON-ready figures."""
        return {
            "programme": self.programme,
            "reader": self.reader,
            "reads": self.reads,
            "yearly_minimum": self.yearly_minimum,
            "due": self.due,
            "since": self.since.isoformat(),
            "below_minimum": self.below_minimum,
            "warning": self.warning,
        }


def _counted_qualifications(prog: Programme) -> set[str]:
    return {protocol.QUALIFICATION_FOR[role] for role in MINIMUM_ROLES[prog.protocol]}


def reader_volume(s: Session, prog: Programme, reader: str, now: datetime) -> ReaderVolume | None:
    """The reader's volume in ``prog``, or ``None`` when they hold no qualification the minimum counts."""
    granted = s.execute(
        select(func.min(ReaderQualification.granted_at)).where(
            ReaderQualification.programme_id == prog.id,
            ReaderQualification.reader == reader,
            ReaderQualification.qualification.in_(_counted_qualifications(prog)),
        )
    ).scalar_one()
    if granted is None:
        return None
    since = max(granted, now - YEAR)
    reads = s.execute(
        select(func.count())
        .select_from(Reading)
        .join(Episode, Episode.id == Reading.episode_id)
        .where(
            Episode.programme_id == prog.id,
            Reading.reader == reader,
            Reading.role.in_(MINIMUM_ROLES[prog.protocol]),
            Reading.submitted_at >= since,
        )
    ).scalar_one()
    due = int(prog.min_yearly_reads * min(1.0, (now - since) / YEAR))
    return ReaderVolume(prog.code, reader, int(reads), prog.min_yearly_reads, due, since)


def volumes_of(s: Session, reader: str, now: datetime) -> list[ReaderVolume]:
    """The reader's volume in every programme where the minimum counts their reads."""
    programmes = s.execute(select(Programme).order_by(Programme.code)).scalars()
    return [v for prog in programmes if (v := reader_volume(s, prog, reader, now)) is not None]


def warn_readers_below_minimum(db: Database, now: datetime) -> int:
    """Notify each reader below a programme's minimum (once per :data:`WARN_EVERY`); return how many were told."""
    told = 0
    with db.write() as s:
        for prog in s.execute(select(Programme).where(Programme.min_yearly_reads > 0)).scalars():
            readers = s.execute(
                select(ReaderQualification.reader)
                .where(
                    ReaderQualification.programme_id == prog.id,
                    ReaderQualification.qualification.in_(_counted_qualifications(prog)),
                )
                .distinct()
            ).scalars()
            for reader in sorted(set(readers)):
                volume = reader_volume(s, prog, reader, now)
                if volume is None or not volume.below_minimum or _warned_lately(s, reader):
                    continue
                inbox.notify_user(
                    s,
                    reader,
                    kind=WARNING_KIND,
                    title=f"Screening reads below the minimum in {prog.code}",
                    body=volume.warning,
                    link="/app/mammo-dashboard.html",
                )
                told += 1
    if told:
        log.info("event=screening_volume_warnings readers=%d", told)
    return told


def _warned_lately(s: Session, reader: str) -> bool:
    # Notifications are stamped with the wall clock, whatever the programme's clock says.
    recent = s.execute(
        select(inbox.Notification.id).where(
            inbox.Notification.recipient == reader,
            inbox.Notification.kind == WARNING_KIND,
            inbox.Notification.created_at >= utcnow() - WARN_EVERY,
        )
    ).first()
    return recent is not None


@shared_task(name=CHECK_TASK, **jobs.RETRY_TRANSIENT)
def check_reader_volumes() -> int:
    """The weekly check: warn the readers below a minimum."""
    rt = get_runtime()
    return warn_readers_below_minimum(rt.db, rt.clock())


schedule.every(7 * 24 * 3600, CHECK_TASK, queue="notify")
