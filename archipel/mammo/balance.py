"""Sharing a programme's open cases among its readers, so that a batch does not fall to whoever opens the worklist
first.

At each look at the worklists, the open cases (in the worklist's order: priority, clinic batch, date) are dealt
one by one to the eligible reader with the least work in hand: their claims in force plus the cases dealt to them so
far, then the fewest reads over the last week, then by name. Eligibility is the claim's own (qualified for the role,
the protocol's rules, not skipped by the reader). Readers count when they have signed in, read or claimed in the
programme over the last :data:`ACTIVE_DAYS`, or are the one asking, so that a reader who is away is not dealt cases.

Each reader's worklist lists their share first and then the others' (``share`` is ``"yours"`` or ``"shared"``):
nothing is hidden, so a case still goes when a colleague is slow, but two readers no longer open the same case.
The deal is recomputed from the database every time: it needs no state and follows claims, skips and new cases.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta

from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from archipel.mammo.models import Episode, Programme, ReaderQualification, Reading, ReadingTask
from archipel.platform.sessions import AuthSession

#: A reader who has neither read nor claimed in the programme for this long is not dealt cases.
ACTIVE_DAYS = 30
#: How far back reads count as recent work, to break ties between readers with the same work in hand.
RECENT = timedelta(days=7)

#: ``eligible(task, episode, programme, reader)``: whether the reader may take the task (the claim's rules).
Eligible = Callable[[ReadingTask, Episode, Programme, str], bool]


def _active_readers(s: Session, programme_id: int, asking: str, now: datetime) -> list[str]:
    since = now - timedelta(days=ACTIVE_DAYS)
    qualified = set(
        s.execute(
            select(ReaderQualification.reader).where(ReaderQualification.programme_id == programme_id)
        ).scalars()
    )
    recent_reads = select(Reading.reader).join(Episode, Episode.id == Reading.episode_id)
    recent_reads = recent_reads.where(Episode.programme_id == programme_id, Reading.submitted_at >= since)
    recent_claims = select(ReadingTask.claimed_by).join(Episode, Episode.id == ReadingTask.episode_id)
    recent_claims = recent_claims.where(Episode.programme_id == programme_id, ReadingTask.claimed_at >= since)
    signed_in = select(AuthSession.subject).where(AuthSession.last_seen >= since, AuthSession.kind == "user")
    active = set(s.execute(recent_reads).scalars()) | set(s.execute(recent_claims).scalars())
    active |= set(s.execute(signed_in.where(AuthSession.subject.in_(qualified))).scalars())
    return sorted((qualified & active) | ({asking} & qualified))


def _load(s: Session, readers: Sequence[str], claim_ttl: timedelta, now: datetime) -> Counter[str]:
    """Claims in force per reader."""
    rows = s.execute(
        select(ReadingTask.claimed_by, func.count())
        .where(
            ReadingTask.status == "claimed",
            ReadingTask.claimed_by.in_(readers),
            or_(ReadingTask.claimed_at.is_(None), ReadingTask.claimed_at > now - claim_ttl),
        )
        .group_by(ReadingTask.claimed_by)
    )
    return Counter({reader: int(n) for reader, n in rows})


def _recent_reads(s: Session, readers: Sequence[str], now: datetime) -> Counter[str]:
    rows = s.execute(
        select(Reading.reader, func.count())
        .where(Reading.reader.in_(readers), Reading.submitted_at >= now - RECENT)
        .group_by(Reading.reader)
    )
    return Counter({reader: int(n) for reader, n in rows})


def deal(
    s: Session,
    cases: Sequence[tuple[ReadingTask, Episode, Programme]],
    asking: str,
    eligible: Eligible,
    claim_ttl: timedelta,
    now: datetime,
) -> dict[int, str]:
    """Task id -> the reader it is dealt to, for the open ``cases`` given in worklist order. A case no active
    reader may take is dealt to nobody (absent from the answer)."""
    readers_of: dict[int, list[str]] = {}
    for _task, _ep, prog in cases:
        if prog.id not in readers_of:
            readers_of[prog.id] = _active_readers(s, prog.id, asking, now)
    everyone = sorted({r for readers in readers_of.values() for r in readers})
    in_hand = _load(s, everyone, claim_ttl, now)
    recent = _recent_reads(s, everyone, now)
    dealt: dict[int, str] = {}
    for task, ep, prog in cases:
        candidates = [r for r in readers_of[prog.id] if eligible(task, ep, prog, r)]
        if not candidates:
            continue
        chosen = min(candidates, key=lambda r: (in_hand[r], recent[r], r))
        dealt[task.id] = chosen
        in_hand[chosen] += 1
    return dealt
