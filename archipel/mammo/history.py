"""Import of a programme's history from CSV: episodes with their two reads, decision and outcome, so that the
metrics cover the years before Archipel.

Columns: ``episode_id, issuer, patient_id, birth_date, screen_date, round, site, l1_reader, l1_right, l1_left,
density, l2_reader, l2_right, l2_left, decision, outcome``, and optionally ``diagnosed_on`` (YYYY-MM-DD: when the
outcome's cancer was diagnosed, not before the screening; files without the column import as before, their
interval cancers undated). Assessments are ACR 0-5; an empty ``l2_reader``
means not read by L2, which in the French programme only a positive L1 (ACR 0 or 3-5 on a breast) may be: an
exam ACR 1-2 at L1 is decided after its L2 read. L2 assessments without an ``l2_reader`` are refused. In the
blinded protocol L1 and L2 are the first and second blind reads.

``birth_date`` is kept on the episode and checks the woman: it must agree with the birth date the MPI holds for
her identity (issuer and patient_id), and with the one given for her in other lines and earlier imports, else the
line is refused (another woman under the same number). A bad line is refused with its number and reason, and
nothing of it is stored; the others are stored in one transaction per 500 lines.
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from archipel.mammo.models import (
    DECISIONS,
    EU_BLINDED,
    FIRST,
    FR_DEPISTAGE,
    L1,
    L2,
    OUTCOMES,
    SECOND,
    Episode,
    Programme,
    Reading,
    ScreeningDecision,
    ScreeningOutcome,
)
from archipel.platform.db import Database
from archipel.platform.identity.models import LocalIdentity

COLUMNS = (
    "episode_id",
    "issuer",
    "patient_id",
    "birth_date",
    "screen_date",
    "round",
    "site",
    "l1_reader",
    "l1_right",
    "l1_left",
    "density",
    "l2_reader",
    "l2_right",
    "l2_left",
    "decision",
    "outcome",
)
#: Columns a file may have (files without them import as before).
OPTIONAL_COLUMNS = ("diagnosed_on",)
_FRENCH_TO_ACR = {"1": "a", "2": "b", "3": "c", "4": "d"}
IMPORTER = "history-import"


class HistoryError(ValueError):
    """The file cannot be imported at all (missing columns, unknown programme); the message says why."""


@dataclass
class HistorySummary:
    """What an import did: episodes stored, and each refused line with its reason."""

    imported: int = 0
    refused: list[tuple[int, str]] = field(default_factory=list)


@dataclass(frozen=True)
class HistoryRow:
    """One validated line."""

    episode_id: str
    issuer: str
    patient_id: str
    birth_date: date | None
    screen_date: date
    round: str
    site: str
    l1: tuple[str, int, int]
    density: str
    l2: tuple[str, int, int] | None
    decision: str
    outcome: str
    diagnosed_on: date | None = None


def _acr(row: dict[str, str], name: str) -> int:
    value = row.get(name, "").strip()
    if not value.isdigit() or not 0 <= int(value) <= 5:
        raise ValueError(f"{name} {value!r} is not an ACR assessment 0-5")
    return int(value)


def parse_row(row: dict[str, str], protocol: str) -> HistoryRow:
    """Validate one line; raises ``ValueError`` naming the column and value at fault."""
    v = {k: (row.get(k) or "").strip() for k in (*COLUMNS, *OPTIONAL_COLUMNS)}
    for name in ("episode_id", "issuer", "patient_id", "site", "l1_reader"):
        if not v[name]:
            raise ValueError(f"{name} is empty")
    try:
        screen_date = date.fromisoformat(v["screen_date"])
    except ValueError:
        raise ValueError(f"screen_date {v['screen_date']!r} is not a date (YYYY-MM-DD)") from None
    born = None
    if v["birth_date"]:
        try:
            born = date.fromisoformat(v["birth_date"])
        except ValueError:
            raise ValueError(f"birth_date {v['birth_date']!r} is not a date (YYYY-MM-DD)") from None
        if born >= screen_date:
            raise ValueError("birth_date is not before screen_date")
    if v["round"] not in ("first", "subsequent"):
        raise ValueError(f"round {v['round']!r} is neither first nor subsequent")
    density = _FRENCH_TO_ACR.get(v["density"], v["density"].lower())
    if density not in ("a", "b", "c", "d"):
        raise ValueError(f"density {v['density']!r} is not ACR a-d (or French 1-4)")
    l1 = (v["l1_reader"], _acr(v, "l1_right"), _acr(v, "l1_left"))
    l2 = None
    if v["l2_reader"]:
        if v["l2_reader"] == v["l1_reader"]:
            raise ValueError("the same reader cannot make both reads of one exam")
        l2 = (v["l2_reader"], _acr(v, "l2_right"), _acr(v, "l2_left"))
    elif v["l2_right"] or v["l2_left"]:
        given = " and ".join(name for name in ("l2_right", "l2_left") if v[name])
        raise ValueError(f"{given} given but l2_reader is empty (an L2 read needs its reader)")
    elif protocol == EU_BLINDED:
        raise ValueError("the blinded protocol has two reads; l2_reader is empty")
    elif protocol == FR_DEPISTAGE and l1[1] in (1, 2) and l1[2] in (1, 2):
        raise ValueError(
            "L1 is ACR 1-2 on both breasts, so the exam is decided after its L2 read; l2_reader is empty"
        )
    if v["decision"] not in DECISIONS:
        raise ValueError(f"decision {v['decision']!r} is not one of {', '.join(DECISIONS)}")
    if v["outcome"] not in OUTCOMES:
        raise ValueError(f"outcome {v['outcome']!r} is not one of {', '.join(OUTCOMES)}")
    if v["outcome"] == "interval_cancer" and v["decision"] != "normal":
        raise ValueError("an interval cancer follows a normal decision")
    diagnosed = None
    if v["diagnosed_on"]:
        try:
            diagnosed = date.fromisoformat(v["diagnosed_on"])
        except ValueError:
            raise ValueError(f"diagnosed_on {v['diagnosed_on']!r} is not a date (YYYY-MM-DD)") from None
        if v["outcome"] == "none":
            raise ValueError("diagnosed_on given but the outcome is none")
        if diagnosed < screen_date:
            raise ValueError("diagnosed_on is before screen_date")
    return HistoryRow(
        v["episode_id"], v["issuer"], v["patient_id"], born, screen_date, v["round"], v["site"], l1, density,
        l2, v["decision"], v["outcome"], diagnosed,
    )  # fmt: skip


def _read(ep: Episode, role: str, read: tuple[str, int, int], density: str, at: datetime) -> Reading:
    return Reading(
        episode_id=ep.id,
        role=role,
        reader=read[0],
        blind=role in (FIRST, SECOND),
        right_assessment=read[1],
        left_assessment=read[2],
        right_result="",
        left_result="",
        density=density,
        findings="[]",
        quality="{}",
        form="{}",
        submitted_at=at,
    )


def _store(s: Session, prog: Programme, lines: list[tuple[int, HistoryRow]]) -> list[tuple[int, str]]:
    """Store the lines whose woman the MPI does not contradict; returns the others with the reason."""
    keys = {(r.issuer, r.patient_id) for _, r in lines}
    known = {
        (i, p): (m, born)
        for i, p, m, born in s.execute(
            select(
                LocalIdentity.issuer,
                LocalIdentity.local_id,
                LocalIdentity.master_id,
                LocalIdentity.birth_date,
            ).where(LocalIdentity.local_id.in_([p for _, p in keys]))
        )
        if (i, p) in keys
    }
    roles = (FIRST, SECOND) if prog.protocol == EU_BLINDED else (L1, L2)
    refused: list[tuple[int, str]] = []
    for n, r in lines:
        master, mpi_born = known.get((r.issuer, r.patient_id), (None, ""))
        if r.birth_date is not None and mpi_born and mpi_born != r.birth_date.strftime("%Y%m%d"):
            mpi = f"{mpi_born[:4]}-{mpi_born[4:6]}-{mpi_born[6:8]}"
            refused.append(
                (
                    n,
                    f"birth_date {r.birth_date.isoformat()} is not the MPI's {mpi} for {r.issuer}/{r.patient_id}",
                )
            )
            continue
        at = datetime.combine(r.screen_date, datetime.min.time(), tzinfo=UTC)
        ep = Episode(
            programme_id=prog.id,
            external_id=r.episode_id,
            issuer=r.issuer,
            patient_id=r.patient_id,
            birth_date=r.birth_date,
            master_id=master,
            site=r.site,
            round=r.round,
            screen_date=r.screen_date,
            status="decided",
            flag="",
            priority=0,
            batch="",
            priors="none",
            woman_contact="",
            gp_contact="",
            created_at=at,
        )
        s.add(ep)
        s.flush()
        s.add(_read(ep, roles[0], r.l1, r.density, at))
        if r.l2 is not None:
            s.add(_read(ep, roles[1], r.l2, r.density, at))
        s.add(
            ScreeningDecision(
                episode_id=ep.id,
                decision=r.decision,
                reasons='["imported"]',
                decided_by=IMPORTER,
                decided_at=at,
                letters="",
            )
        )
        if r.outcome != "none":
            s.add(
                ScreeningOutcome(
                    episode_id=ep.id,
                    outcome=r.outcome,
                    workup="",
                    biopsy=False,
                    diagnosed_on=r.diagnosed_on,
                    recorded_by=IMPORTER,
                    recorded_at=at,
                )
            )
    s.flush()
    return refused


def _lines(path: Path) -> Iterator[tuple[int, dict[str, str]]]:
    with path.open(newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        missing = [c for c in COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise HistoryError(f"{path.name} lacks the column(s) {', '.join(missing)}")
        yield from enumerate(reader, start=2)


def count_rows(path: Path) -> int:
    """Data lines in the file (for the progress bar)."""
    with path.open(encoding="utf-8-sig") as f:
        return max(sum(1 for _ in f) - 1, 0)


def import_history(
    db: Database,
    path: Path,
    programme: str,
    protocol: str,
    on_line: Callable[[int], None] | None = None,
    batch: int = 500,
) -> HistorySummary:
    """Import ``path`` into ``programme`` (created with ``protocol`` if new; an existing one must use it)."""
    with db.write() as s:
        prog = s.execute(select(Programme).where(Programme.code == programme)).scalar_one_or_none()
        if prog is None:
            prog = Programme(code=programme, name=programme, protocol=protocol)
            s.add(prog)
            s.flush()
        elif prog.protocol != protocol:
            raise HistoryError(f"programme {programme} uses {prog.protocol}, not {protocol}")
        prog_id = prog.id
        known = set(s.execute(select(Episode.external_id).where(Episode.programme_id == prog_id)).scalars())
        # The birth date given for each woman so far (earlier imports), and by which episode.
        born: dict[tuple[str, str], tuple[date, str]] = {
            (issuer, patient): (day, str(external))
            for issuer, patient, day, external in s.execute(
                select(Episode.issuer, Episode.patient_id, Episode.birth_date, Episode.external_id).where(
                    Episode.programme_id == prog_id, Episode.birth_date.is_not(None)
                )
            )
            if day is not None
        }
    summary = HistorySummary()
    pending: list[tuple[int, HistoryRow]] = []

    def flush() -> None:
        with db.write() as s:
            current = s.get(Programme, prog_id)
            assert current is not None
            refused = _store(s, current, pending)
        summary.imported += len(pending) - len(refused)
        summary.refused.extend(refused)
        pending.clear()

    for n, raw in _lines(path):
        try:
            row = parse_row(raw, protocol)
            if row.episode_id in known:
                raise ValueError(f"episode {row.episode_id} is imported already")
            woman = (row.issuer, row.patient_id)
            if row.birth_date is not None:
                earlier = born.get(woman)
                if earlier is not None and earlier[0] != row.birth_date:
                    raise ValueError(
                        f"birth_date {row.birth_date.isoformat()} differs from {earlier[0].isoformat()}, given "
                        f"for {row.issuer}/{row.patient_id} in episode {earlier[1]}"
                    )
                born.setdefault(woman, (row.birth_date, row.episode_id))
            known.add(row.episode_id)
            pending.append((n, row))
        except ValueError as exc:
            summary.refused.append((n, str(exc)))
        if on_line is not None:
            on_line(n)
        if len(pending) >= batch:
            flush()
    if pending:
        flush()
    summary.refused.sort()
    return summary
