"""Programme and reader figures, with the definitions of the European guidelines and the French specifications.

Over the women screened (decided) with a screening date in ``[start, end]``. A French retake (the episode a
technical recall asks for, ``Episode.retake_of``) is part of the screening it retakes, not another woman
screened: its decision and outcome are the screening's final ones, its own reads count for their readers, and
the L1 read carried over to it (the same reader's read, stamped the same time) is not counted again. So:

- ``recall_rate``: recalls for assessment / screened (also per round, ``recall_rate_by_round``);
- ``cancer_detection_rate``: screen-detected cancers (a recall whose outcome is a cancer, in situ or invasive)
  per 1,000 screened;
- ``ppv_recall``: screen-detected cancers / recalls;
- ``l2_only_cancer_share`` (its meaning in ``l2_only_cancer_share_meaning``): in ``fr-depistage``, screen-detected
  cancers whose L1 read was negative and L2 read positive / screen-detected cancers, the L2 read being the L2
  consensus when one was held (it is final); in ``eu-blinded``, where the two blind reads are symmetrical, the
  single-reader-only share: screen-detected cancers where exactly one of the two blind reads was positive /
  screen-detected cancers. ``single_reader_detected_cancers`` gives both counts (``first_only``,
  ``second_only``);
- ``cti_rate``: screenings whose first decision was a technical recall / screened;
- ``interval_cancer_rate``: interval cancers per 1,000 screened. An interval cancer is reported after a normal
  screening and diagnosed (``ScreeningOutcome.diagnosed_on``) on or after its date and before
  ``Programme.interval_months`` months from it (24 in France, 36 in the UK); ``interval_cancers_by_period``
  splits them as the EU guidelines do (0-11 months, 12 months to the end of the interval); one reported without
  a date is counted and in ``interval_cancers_undated``, one diagnosed after the interval is not counted
  (``interval_cancers_after_interval``);
- ``delays``: exam to file received, exam to L2 read, received to result sent (days: median, mean, count),
  and the share of results sent within the programme's deadline;
- ``readers``: per reader, reads in the period (first and second reads only: in the blinded protocol the blind
  reads), the yearly minimum and the annualised volume it applies to (L2 reads in the French programme, blind
  reads in the blinded one), recall rate, cancers found, Cohen's kappa with each
  other reader (in France an L2 consensus read counts for its reader, and kappa is on L1 and the L2 read that
  decided); ``reader_pairs``: kappa per pair on the episodes both read (positive = recall).

The CSV export with each figure's numerator, denominator and definition is ``metrics_export``.
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from itertools import combinations
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from archipel.mammo import episodes, protocol
from archipel.mammo.models import (
    CANCERS,
    FIRST,
    L1,
    L2,
    L2_CONSENSUS,
    NORMAL,
    RECALL,
    SECOND,
    TECHNICAL_RECALL,
    Episode,
    Programme,
    Reading,
    ScreeningDecision,
    ScreeningOutcome,
)

#: The two reads each episode's statistics use: (first, second) per protocol.
PRIMARY = {"fr-depistage": (L1, L2), "eu-blinded": (FIRST, SECOND)}
#: The reads each reader's figures count: in France also an L2 consensus (its reader read the case as L2).
READER_ROLES = {"fr-depistage": (L1, L2, L2_CONSENSUS), "eu-blinded": (FIRST, SECOND)}
#: The reads the yearly minimum counts: L2 reads in the French programme, every blind read in the blinded one.
MINIMUM_ROLES = {"fr-depistage": (L2,), "eu-blinded": (FIRST, SECOND)}


def cohen_kappa(pairs: list[tuple[bool, bool]]) -> float | None:
    """Cohen's kappa of two raters' binary answers; ``None`` with no pair or when chance agreement is total."""
    n = len(pairs)
    if n == 0:
        return None
    agree = sum(1 for a, b in pairs if a == b) / n
    pa = sum(1 for a, _ in pairs if a) / n
    pb = sum(1 for _, b in pairs if b) / n
    chance = pa * pb + (1 - pa) * (1 - pb)
    if chance == 1:
        return None
    return (agree - chance) / (1 - chance)


def _ratio(num: int, den: int, scale: float = 1.0) -> float | None:
    return None if den == 0 else num * scale / den


def _summary(values: list[float]) -> dict[str, Any]:
    if not values:
        return {"median": None, "mean": None, "n": 0}
    return {"median": statistics.median(values), "mean": statistics.fmean(values), "n": len(values)}


@dataclass
class _Episode:
    """One woman's screening: its first episode ``ep`` and the retakes that followed (``chain``, in order).

    ``decision`` is the first episode's, ``final`` the last decided one's; ``outcomes`` gathers the chain's;
    ``reads`` holds one read per role, the latest episode's where a retake read again (its L2); ``all_reads``
    every read made, without the L1 read a retake carries over."""

    ep: Episode
    decision: str
    outcomes: set[str]
    reads: dict[str, Reading]
    final: str = ""
    chain: list[Episode] = field(default_factory=list)
    all_reads: list[Reading] = field(default_factory=list)
    #: When each interval cancer reported was diagnosed (``None``: undated).
    interval_dates: list[date | None] = field(default_factory=list)

    def second(self, prog: Programme) -> Reading | None:
        """The screening's second read: in France the L2 consensus when one was held (it is then final)."""
        if prog.protocol == "fr-depistage" and L2_CONSENSUS in self.reads:
            return self.reads[L2_CONSENSUS]
        return self.reads.get(PRIMARY[prog.protocol][1])


def _chunks(ids: list[int]) -> Iterator[list[int]]:
    for at in range(0, len(ids), 500):
        yield ids[at : at + 500]


def _load(s: Session, prog: Programme, start: date | None, end: date | None) -> list[_Episode]:
    stmt = (
        select(Episode, ScreeningDecision.decision)
        .join(ScreeningDecision, ScreeningDecision.episode_id == Episode.id)
        .where(Episode.programme_id == prog.id, Episode.retake_of.is_(None))
    )
    if start is not None:
        stmt = stmt.where(Episode.screen_date >= start)
    if end is not None:
        stmt = stmt.where(Episode.screen_date <= end)
    rows = {ep.id: _Episode(ep, d, set(), {}, d, [ep]) for ep, d in s.execute(stmt)}
    # The decided retakes, generation by generation (a retake may itself be retaken), each under its screening.
    screening_of = {eid: eid for eid in rows}
    wave = list(rows)
    while wave:
        found = []
        for part in _chunks(wave):
            for ep, d in s.execute(
                select(Episode, ScreeningDecision.decision)
                .join(ScreeningDecision, ScreeningDecision.episode_id == Episode.id)
                .where(Episode.retake_of.in_(part))
                .order_by(Episode.id)
            ):
                assert ep.retake_of is not None
                item = rows[screening_of[ep.retake_of]]
                screening_of[ep.id] = screening_of[ep.retake_of]
                item.chain.append(ep)
                item.final = d
                found.append(ep.id)
        wave = found
    ids = list(screening_of)
    reads: dict[int, list[Reading]] = defaultdict(list)
    for part in _chunks(ids):
        for eid, outcome, diagnosed in s.execute(
            select(
                ScreeningOutcome.episode_id, ScreeningOutcome.outcome, ScreeningOutcome.diagnosed_on
            ).where(ScreeningOutcome.episode_id.in_(part))
        ):
            rows[screening_of[eid]].outcomes.add(outcome)
            if outcome == "interval_cancer":
                rows[screening_of[eid]].interval_dates.append(diagnosed)
        for r in s.execute(
            select(Reading).where(Reading.episode_id.in_(part)).order_by(Reading.id)
        ).scalars():
            reads[r.episode_id].append(r)
    for item in rows.values():
        carried: set[tuple[str, datetime]] = set()
        for ep in item.chain:
            latest: dict[str, Reading] = {}
            for r in reads[ep.id]:
                if r.role == L1 and (r.reader, r.submitted_at) in carried:
                    continue  # the L1 read a retake carries over, counted with the first episode
                if r.role == L1:
                    carried.add((r.reader, r.submitted_at))
                latest.setdefault(r.role, r)
                item.all_reads.append(r)
            item.reads.update(latest)
    return list(rows.values())


def _positive(r: Reading) -> bool:
    return protocol.read_result(episodes.as_rule_read(r)) == RECALL


def _delays(prog: Programme, items: list[_Episode]) -> dict[str, Any]:
    """Per episode (a retake's letters have their own deadline), with the episode's own second read."""
    received, l2, result, within = [], [], [], []
    roles = PRIMARY[prog.protocol]
    for ep, second in (
        (ep, next((r for r in it.all_reads if r.episode_id == ep.id and r.role == roles[1]), None))
        for it in items
        for ep in it.chain
    ):
        exam = datetime.combine(ep.screen_date, datetime.min.time(), tzinfo=UTC)
        if ep.received_at is not None:
            received.append((ep.received_at - exam).total_seconds() / 86400)
        if second is not None:
            l2.append((second.submitted_at - exam).total_seconds() / 86400)
        if ep.received_at is not None and ep.result_sent_at is not None:
            result.append((ep.result_sent_at - ep.received_at).total_seconds() / 86400)
        if ep.result_sent_at is not None:
            within.append(
                ep.result_sent_at.date() <= ep.screen_date + timedelta(days=prog.result_deadline_days)
            )
    return {
        "exam_to_received_days": _summary(received),
        "exam_to_l2_days": _summary(l2),
        "received_to_result_days": _summary(result),
        "result_within_deadline": _ratio(sum(within), len(within)),
        "results_sent": len(within),
        "results_sent_within_deadline": sum(within),
    }


def _readers(
    prog: Programme, items: list[_Episode], days: int
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    roles = READER_ROLES[prog.protocol]
    reads: dict[str, list[tuple[_Episode, bool]]] = defaultdict(list)
    counted: dict[str, int] = defaultdict(int)
    by_episode: dict[int, dict[str, bool]] = {}
    for it in items:
        for r in it.all_reads:
            if r.role in roles:
                reads[r.reader].append((it, _positive(r)))
                counted[r.reader] += r.role in MINIMUM_ROLES[prog.protocol]
        # Agreement on the screening's reads (the retake's L2 read, not the technically insufficient one; an L2
        # consensus, not the read that asked for it).
        final = [r for r in (it.reads.get(PRIMARY[prog.protocol][0]), it.second(prog)) if r is not None]
        by_episode[it.ep.id] = {read.reader: _positive(read) for read in final}
    pairs: list[dict[str, Any]] = []
    kappas: dict[str, dict[str, float | None]] = defaultdict(dict)
    co: dict[tuple[str, str], list[tuple[bool, bool]]] = defaultdict(list)
    for answers in by_episode.values():
        for a, b in combinations(sorted(answers), 2):
            co[(a, b)].append((answers[a], answers[b]))
    for (a, b), together in sorted(co.items()):
        k = cohen_kappa(together)
        kappas[a][b] = kappas[b][a] = k
        pairs.append({"readers": [a, b], "episodes": len(together), "kappa": k})
    out = []
    for reader in sorted(reads):
        done = reads[reader]
        annual = counted[reader] * 365 / days if days else None
        cancers = sum(1 for it, pos in done if pos and it.final == RECALL and it.outcomes & CANCERS)
        out.append(
            {
                "reader": reader,
                "reads": len(done),
                "yearly_minimum": prog.min_yearly_reads,
                "annualised_reads": annual,
                "below_minimum": annual is not None and annual < prog.min_yearly_reads,
                "positive_reads": sum(1 for _, pos in done if pos),
                "recall_rate": _ratio(sum(1 for _, pos in done if pos), len(done)),
                "cancers_found": cancers,
                "kappa": dict(sorted(kappas[reader].items())),
            }
        )
    return out, pairs


#: What ``l2_only_cancer_share`` counts, per protocol.
L2_ONLY_MEANING = {
    "fr-depistage": "l2-only: L1 negative, L2 (or the L2 consensus) positive",
    "eu-blinded": "single-reader-only: exactly one of the two blind reads positive",
}


def add_months(day: date, months: int) -> date:
    """``day`` plus ``months`` calendar months (the 31st becomes the month's last day)."""
    m = day.month - 1 + months
    year, month = day.year + m // 12, m % 12 + 1
    last = (date(year + month // 12, month % 12 + 1, 1) - timedelta(days=1)).day
    return date(year, month, min(day.day, last))


def _interval(prog: Programme, items: list[_Episode]) -> dict[str, Any]:
    """Interval cancers after a normal screening: diagnosed after its date and within ``interval_months``
    (EU guidelines: 0-11 months, then 12 months to the end of the interval); undated ones are counted and
    reported apart, those diagnosed after the interval are not counted."""
    counted = undated = after = 0
    by_period = {"first_12_months": 0, "12_months_to_end": 0}
    for it in items:
        if it.final != NORMAL:
            continue
        screen = it.chain[-1].screen_date  # the normal screening: the last retake's when retaken
        for day in it.interval_dates[:1]:  # one woman, one interval cancer
            if day is None:
                undated += 1
                counted += 1
            elif day >= add_months(screen, prog.interval_months):
                after += 1
            else:
                counted += 1
                by_period["first_12_months" if day < add_months(screen, 12) else "12_months_to_end"] += 1
    return {"counted": counted, "undated": undated, "after": after, "by_period": by_period}


def programme_metrics(
    s: Session, prog: Programme, start: date | None = None, end: date | None = None
) -> dict[str, Any]:
    """The programme's figures over the episodes screened between ``start`` and ``end`` (inclusive)."""
    items = _load(s, prog, start, end)
    screened = len(items)
    recalls = [it for it in items if it.final == RECALL]
    detected = [it for it in recalls if it.outcomes & CANCERS]
    first = PRIMARY[prog.protocol][0]

    def single(it: _Episode) -> str:
        """Which read alone was positive: ``first``, ``second``, or ``""`` (both, neither, or one read)."""
        a, b = it.reads.get(first), it.second(prog)
        if a is None or b is None or _positive(a) == _positive(b):
            return ""
        return "first" if _positive(a) else "second"

    single_counts = {"first_only": 0, "second_only": 0}
    for it in detected:
        if single(it):
            single_counts[f"{single(it)}_only"] += 1
    # France: L2 finds what L1 missed (L1 negative, L2 positive). Blinded: the reads are symmetrical, so the
    # share is of the cancers ONE reader found, whichever (single-reader-only).
    one_reader = single_counts["second_only"] + (
        single_counts["first_only"] if prog.protocol == "eu-blinded" else 0
    )

    by_round, screened_by_round, recalls_by_round = {}, {}, {}
    for rnd in ("first", "subsequent"):
        part = [it for it in items if it.ep.round == rnd]
        screened_by_round[rnd] = len(part)
        recalls_by_round[rnd] = sum(1 for it in part if it.final == RECALL)
        by_round[rnd] = _ratio(recalls_by_round[rnd], len(part))
    interval = _interval(prog, items)
    dates = [it.ep.screen_date for it in items]
    lo, hi = start or (min(dates) if dates else None), end or (max(dates) if dates else None)
    days = (hi - lo).days + 1 if lo and hi else 0
    readers, pairs = _readers(prog, items, days)
    return {
        "programme": prog.code,
        "protocol": prog.protocol,
        "from": lo.isoformat() if lo else None,
        "to": hi.isoformat() if hi else None,
        "screened": screened,
        "recalls": len(recalls),
        "recall_rate": _ratio(len(recalls), screened),
        "recall_rate_by_round": by_round,
        "screened_by_round": screened_by_round,
        "recalls_by_round": recalls_by_round,
        "screen_detected_cancers": len(detected),
        "cancer_detection_rate": _ratio(len(detected), screened, 1000),
        "ppv_recall": _ratio(len(detected), len(recalls)),
        "l2_only_cancer_share": _ratio(one_reader, len(detected)),
        "l2_only_cancer_share_meaning": L2_ONLY_MEANING[prog.protocol],
        "single_reader_detected_cancers": single_counts,
        "technical_recalls": sum(1 for it in items if it.decision == TECHNICAL_RECALL),
        "cti_rate": _ratio(sum(1 for it in items if it.decision == TECHNICAL_RECALL), screened),
        "interval_months": prog.interval_months,
        "interval_cancers": interval["counted"],
        "interval_cancer_rate": _ratio(interval["counted"], screened, 1000),
        "interval_cancers_by_period": interval["by_period"],
        "interval_cancers_undated": interval["undated"],
        "interval_cancers_after_interval": interval["after"],
        "delays": _delays(prog, items),
        "readers": readers,
        "reader_pairs": pairs,
    }
