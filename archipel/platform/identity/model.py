"""The Fellegi-Sunter model: agreement weights per field and level, estimated from the data.

``u`` (how often two *different* people agree at a level) is measured on random pairs of identities; ``m``
(how often the *same* person agrees) is estimated by expectation-maximisation, one session per training
blocking rule, with ``u`` held at its measured value and the blocked fields left out (as Splink does).
Exact agreement on a family or given name is further adjusted by the name's frequency: sharing a rare name
says more than sharing a common one.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from archipel.platform.identity.compare import EXACT, FAMILY, FIELDS, GIVEN, LEVELS, MISSING
from archipel.platform.identity.normalize import Traits

#: Starting values for EM, and the model used before enough identities exist to estimate one.
#: They are priors, not the model: :func:`estimate` replaces them from the data.
_PRIOR_M = (
    (0.04, 0.02, 0.04, 0.90),
    (0.04, 0.02, 0.04, 0.90),
    (0.02, 0.03, 0.05, 0.90),
    (0.03, 0.97),
    (0.05, 0.95),
    (0.3, 0.2, 0.5),
    (0.4, 0.6),
)
_PRIOR_U = (
    (0.985, 0.01, 0.004, 0.001),
    (0.95, 0.03, 0.01, 0.01),
    (0.97, 0.03, 0.0005, 0.00005),
    (0.5, 0.5),
    (0.97, 0.03),
    (0.9, 0.09, 0.01),
    (0.9999, 0.0001),
)
#: Bounds of the frequency adjustment, in bits either side of the plain exact-agreement weight.
TF_CLIP = 5.0
#: Name frequencies mean something only over enough identities.
TF_MIN_RECORDS = 1000
_EPS = 1e-6
#: Lowest m used in a weight: even "impossible" disagreements among matches happen (data-entry errors).
M_FLOOR = 0.002


@dataclass
class FellegiSunter:
    """m and u probabilities per field and level, with the log2 weights derived from them."""

    m: list[list[float]]
    u: list[list[float]]
    match_share: float = 0.1
    n_records: int = 0
    n_pairs: int = 0
    iterations: int = 0
    weights: list[list[float]] = field(init=False)

    def __post_init__(self) -> None:
        self.weights = [
            [math.log2(max(mi, M_FLOOR) / max(ui, _EPS)) for mi, ui in zip(ms, us, strict=True)]
            for ms, us in zip(self.m, self.u, strict=True)
        ]

    @classmethod
    def prior(cls) -> FellegiSunter:
        """The starting values, used until :func:`estimate` has data to work on."""
        return cls([list(x) for x in _PRIOR_M], [list(x) for x in _PRIOR_U])

    def to_json(self) -> str:
        """The parameters as JSON (stored with every estimate)."""
        return json.dumps(
            {
                "m": self.m,
                "u": self.u,
                "match_share": self.match_share,
                "n_records": self.n_records,
                "n_pairs": self.n_pairs,
                "iterations": self.iterations,
            }
        )

    @classmethod
    def from_json(cls, text: str) -> FellegiSunter:
        """Parameters stored by :meth:`to_json`."""
        d = json.loads(text)
        return cls(d["m"], d["u"], d["match_share"], d["n_records"], d["n_pairs"], d["iterations"])

    def score(self, levels: tuple[int, ...], a: Traits, b: Traits, freq: NameFrequencies) -> float:
        """The match weight (log2 Bayes factor) of a comparison vector, frequency-adjusted."""
        # Unrolled over the seven fields: this runs for every candidate pair of every arriving identity.
        w0, w1, w2, w3, w4, w5, w6 = self.weights
        fam, giv, dat, sex, pla, adr, pho = levels
        total = (
            (w0[fam] if fam >= 0 else 0.0)
            + (w1[giv] if giv >= 0 else 0.0)
            + (w2[dat] if dat >= 0 else 0.0)
            + (w3[sex] if sex >= 0 else 0.0)
            + (w4[pla] if pla >= 0 else 0.0)
            + (w5[adr] if adr >= 0 else 0.0)
            + (w6[pho] if pho >= 0 else 0.0)
        )
        if freq.total >= TF_MIN_RECORDS:
            if fam == EXACT and a.birth == b.birth:
                total += self._tf_adjust(FAMILY, freq.family_share(a.birth))
            if giv == EXACT:
                total += self._tf_adjust(GIVEN, freq.given_share(a.given))
        return total

    def contributions(
        self, levels: tuple[int, ...], a: Traits, b: Traits, freq: NameFrequencies
    ) -> dict[str, float]:
        """Each field's share of :meth:`score`, in bits (what the review screen shows)."""
        out: dict[str, float] = {}
        for k, level in enumerate(levels):
            if level != MISSING:
                out[FIELDS[k]] = round(self.weights[k][level], 2)
        if levels[FAMILY] == EXACT and a.birth == b.birth:
            out["family"] = round(out["family"] + self._tf_adjust(FAMILY, freq.family_share(a.birth)), 2)
        if levels[GIVEN] == EXACT:
            out["given"] = round(out["given"] + self._tf_adjust(GIVEN, freq.given_share(a.given)), 2)
        return out

    def _tf_adjust(self, k: int, share: float) -> float:
        if share <= 0.0:
            return 0.0
        u_exact = self.u[k][EXACT]
        return max(-TF_CLIP, min(TF_CLIP, math.log2(max(u_exact, _EPS) / share)))


class NameFrequencies:
    """How common each family and first given name is among the indexed identities (kept up to date)."""

    __slots__ = ("family", "given", "total")

    def __init__(self) -> None:
        self.family: Counter[str] = Counter()
        self.given: Counter[str] = Counter()
        self.total = 0

    def add(self, t: Traits, sign: int = 1) -> None:
        """Count (or, with ``sign=-1``, uncount) one identity's names."""
        self.total += sign
        if t.birth:
            self.family[t.birth] += sign
        if t.given:
            self.given[t.given] += sign

    def family_share(self, name: str) -> float:
        """Share of identities with this family name (at least one identity's worth)."""
        return max(self.family.get(name, 0), 1) / self.total if self.total >= TF_MIN_RECORDS else 0.0

    def given_share(self, name: str) -> float:
        """Share of identities with this first given name."""
        return max(self.given.get(name, 0), 1) / self.total if self.total >= TF_MIN_RECORDS else 0.0


def estimate_u(random_levels: np.ndarray) -> list[list[float]]:
    """u per field and level: the level frequencies among random pairs (almost all non-matches)."""
    u: list[list[float]] = []
    for k, n in enumerate(LEVELS):
        col = random_levels[:, k]
        seen = col[col != MISSING]
        counts = np.bincount(seen, minlength=n).astype(float) + 0.5
        u.append((counts / counts.sum()).tolist())
    return u


def estimate_m(
    pair_levels: np.ndarray,
    u: list[list[float]],
    start: list[list[float]],
    ignore: frozenset[int] = frozenset(),
    *,
    max_iterations: int = 50,
    tolerance: float = 1e-5,
) -> tuple[list[list[float]], float, int]:
    """m per field and level, and the match share, by EM on ``pair_levels`` with ``u`` held fixed.

    Fields in ``ignore`` (those the pairs were blocked on: they agree by construction) take no part, and keep
    their ``start`` values. Returns ``(m, match_share, iterations)``.
    """
    m = [list(x) for x in start]
    lam = 0.3
    n_pairs = len(pair_levels)
    active = [k for k in range(len(LEVELS)) if k not in ignore]
    present = {k: pair_levels[:, k] != MISSING for k in active}
    masks = {k: [pair_levels[:, k] == level for level in range(LEVELS[k])] for k in active}
    log_u = [np.log(np.asarray(x)) for x in u]
    iterations = 0
    for iterations in range(1, max_iterations + 1):  # noqa: B007
        log_ratio = np.full(n_pairs, math.log(lam / (1 - lam)))
        for k in active:
            lm = np.log(np.clip(np.asarray(m[k]), _EPS, 1.0))
            col, ok = pair_levels[:, k], present[k]
            log_ratio[ok] += lm[col[ok]] - log_u[k][col[ok]]
        p = 1.0 / (1.0 + np.exp(-np.clip(log_ratio, -60, 60)))
        delta = 0.0
        for k in active:
            denom = float(p[present[k]].sum()) + _EPS * LEVELS[k]
            new = [(float(p[masks[k][level]].sum()) + _EPS) / denom for level in range(LEVELS[k])]
            delta = max(delta, *(abs(a - b) for a, b in zip(new, m[k], strict=True)))
            m[k] = new
        lam = float(min(max(p.mean(), 1e-4), 0.9999))
        if delta < tolerance:
            break
    return m, lam, iterations


def estimate(
    sessions: list[tuple[np.ndarray, frozenset[int]]],
    random_levels: np.ndarray,
    *,
    n_records: int = 0,
    exact_u: dict[int, float] | None = None,
) -> FellegiSunter:
    """Estimate the model: u from ``random_levels``, then m by one EM session per blocking rule.

    ``exact_u`` gives, per field, the u of exact agreement measured from value counts. Each session is
    ``(pair_levels, blocked_fields)``: one row per pair and one ``int8`` column per field of
    :data:`FIELDS` (``-1`` missing). A field's m comes from the sessions where it was not blocked (averaged),
    as Splink does.
    """
    u = estimate_u(random_levels)
    for k, share in (exact_u or {}).items():
        # The exact level's u from value counts; the other levels keep their random-pair proportions.
        rest = sum(u[k][:-1])
        u[k] = [x * (1.0 - share) / rest for x in u[k][:-1]] + [share]
    prior = FellegiSunter.prior()
    sums: list[list[float] | None] = [None] * len(LEVELS)
    counts = [0] * len(LEVELS)
    shares: list[float] = []
    n_pairs = iterations = 0
    start = prior.m
    for pair_levels, blocked in sessions:
        # Each session starts from what the previous ones learnt (as Splink chains its sessions).
        m, lam, its = estimate_m(pair_levels, u, start, blocked)
        start = [m[k] if k not in blocked else start[k] for k in range(len(LEVELS))]
        shares.append(lam)
        n_pairs += len(pair_levels)
        iterations += its
        for k in range(len(LEVELS)):
            if k in blocked:
                continue
            acc = sums[k]
            sums[k] = list(m[k]) if acc is None else [a + b for a, b in zip(acc, m[k], strict=True)]
            counts[k] += 1
    final = [
        [x / counts[k] for x in acc] if acc is not None else list(prior.m[k]) for k, acc in enumerate(sums)
    ]
    share = sum(shares) / len(shares) if shares else prior.match_share
    return FellegiSunter(final, u, share, n_records=n_records, n_pairs=n_pairs, iterations=iterations)
