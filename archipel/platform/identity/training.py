"""Estimating the Fellegi-Sunter model from the identities themselves.

Pairs for EM come from loose blocking keys (birth date; start of family name); pairs for u are drawn at
random.
Both samples are bounded, so an estimate takes about the same time at 10 thousand or 10 million identities.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable, Sequence

import numpy as np

from archipel.platform.identity.compare import DATE, FAMILY, GIVEN, PHONE, PLACE, compare
from archipel.platform.identity.linker import MAX_BLOCK
from archipel.platform.identity.model import FellegiSunter, estimate
from archipel.platform.identity.normalize import Traits

#: Fewer identities than this: keep the priors (EM needs enough pairs to separate two classes).
MIN_RECORDS = 1000
SAMPLE_RECORDS = 10000
RANDOM_PAIRS = 10000
MAX_PAIRS_PER_KEY = 20
#: Past an estimate on this many identities, the parameters are stable: automatic re-estimation stops.
STABLE_RECORDS = 200_000


def _by_date(t: Traits) -> str:
    return t.date


def _by_names(t: Traits) -> str:
    return f"{t.birth_core} {t.given}" if t.birth_core and t.given else ""


def _blocked_vectors(sample: Sequence[Traits], rule: Callable[[Traits], str]) -> list[tuple[int, ...]]:
    blocks: dict[str, list[int]] = {}
    for i, t in enumerate(sample):
        key = rule(t)
        if key:
            blocks.setdefault(key, []).append(i)
    vectors: list[tuple[int, ...]] = []
    for rows in blocks.values():
        if len(rows) < 2 or len(rows) > MAX_BLOCK:
            continue
        head = rows[:MAX_PAIRS_PER_KEY]
        for x, a in enumerate(head):
            for b in head[x + 1 :]:
                vectors.append(compare(sample[a], sample[b])[0])
    return vectors


def _exact_u(sample: Sequence[Traits]) -> dict[int, float]:
    """Chance that two different people agree exactly, per field: the sum of squared value shares. Exact from
    the value counts, where a few thousand random pairs would see too few agreements on dates or phones."""
    fields: dict[int, Callable[[Traits], str]] = {
        FAMILY: lambda t: t.birth,
        GIVEN: lambda t: t.given,
        DATE: lambda t: t.date,
        PLACE: lambda t: t.place,
        PHONE: lambda t: t.phone,
    }
    out: dict[int, float] = {}
    for k, get in fields.items():
        counts = Counter(v for v in map(get, sample) if v)
        total = sum(counts.values())
        if total >= 2:
            out[k] = max(sum(c * (c - 1) for c in counts.values()) / (total * (total - 1)), 1.0 / total**2)
    return out


def estimate_from(records: Sequence[Traits], *, seed: int = 0) -> FellegiSunter | None:
    """A model estimated on ``records`` (all identities known plus those arriving), or ``None`` if too few
    or if EM does not separate matches from non-matches (then the current model stays)."""
    n = len(records)
    if n < MIN_RECORDS or len({t.issuer for t in records}) < 2:
        # One issuer's identities are (nearly) all different people: no matches for EM to learn from.
        return None
    rng = random.Random(seed)
    sample = records if n <= SAMPLE_RECORDS else rng.sample(list(records), SAMPLE_RECORDS)
    # Looser blocks than the linker's: EM needs non-matches as well as matches among its pairs to tell them
    # apart. One session per rule, leaving out the field the rule blocks on.
    sessions = []
    for rule, blocked in ((_by_date, frozenset({DATE})), (_by_names, frozenset({FAMILY, GIVEN}))):
        vectors = _blocked_vectors(sample, rule)
        if len(vectors) >= 100:
            sessions.append((np.asarray(vectors, dtype=np.int8), blocked))
    if len(sessions) < 2:
        return None
    randoms = [
        compare(sample[rng.randrange(len(sample))], sample[rng.randrange(len(sample))])[0]
        for _ in range(RANDOM_PAIRS)
    ]
    model = estimate(sessions, np.asarray(randoms, dtype=np.int8), n_records=n, exact_u=_exact_u(sample))
    # EM can settle on a split that is not "same person vs different": then exact name and date agreement
    # would not be the likeliest level among matches. Keep the previous model rather than learn nonsense.
    if model.m[0][3] < 0.5 or model.m[2][3] < 0.5 or model.match_share <= 1e-4:
        return None
    return model
