"""The incremental linker: an in-memory blocking index and the decision rules for one incoming identity.

The index keeps one :class:`Traits` per local identity, the local-to-master map and, per blocking key, the
local identities that share it. :meth:`LinkIndex.decide` applies, in order:

1. a qualified INS shared with a master links deterministically;
2. hard non-matches are dropped: two different INS (whatever their status), and pairs an officer declared
   different;
3. the remaining candidates are scored (Fellegi-Sunter) and grouped by master;
4. rules that may only lower a decision: two local IDs of one issuer are never auto-linked; same family name and
   birth date with another first name (twins) goes to review; disagreeing sex or birth place never auto-links;
   a second master scoring close to the best one is a doubt;
5. the thresholds: at least ``link_at`` bits links, at least ``review_at`` opens a review, else a new master.
"""

from __future__ import annotations

from dataclasses import dataclass

from archipel.platform.identity.compare import DATE, FAMILY, GIVEN, PLACE, SEX, compare
from archipel.platform.identity.model import FellegiSunter, NameFrequencies
from archipel.platform.identity.models import LINKED, NEW, REVIEW
from archipel.platform.identity.normalize import Traits

#: Default thresholds, in bits (log2 of the Bayes factor); see docs/decisions on identity linkage.
LINK_AT = 20.0
REVIEW_AT = 8.0
#: A second master within this many bits of the best one makes the choice doubtful.
AMBIGUITY_MARGIN = 12.0
#: A block larger than this is too common to say anything (e.g. a very common name); it is skipped.
MAX_BLOCK = 2000


def blocking_keys(t: Traits) -> list[str]:
    """The keys under which ``t`` is indexed and looked up; two identities are compared when they share one.

    * birth date with the initial of a name: catches typos in the names and changed family names;
    * start of the family and first names with the birth date's digits in sorted order: catches dates with
      transposed digits or swapped day and month (they keep the same digits);
    * the same with the year: catches other day or month errors;
    * the same with family and first names swapped: catches names entered the wrong way round;
    * the qualified INS.
    """
    keys: list[str] = []
    date = t.date
    if date:
        if t.given:
            keys.append(f"D{date}{t.given[0]}")
        for form in (t.birth, t.used):
            if form:
                keys.append(f"D{date}{form[0]}")
    if t.given:
        digits = "".join(sorted(date))
        g3 = t.given[:3]
        for form in (t.birth_core, t.used_core):
            if form:
                stem = f"{form[:4]}{g3}"
                keys.append(f"N{stem}{digits}")
                if date:
                    keys.append(f"Y{stem}{date[:4]}")
        if t.birth_core:
            keys.append(f"S{t.given[:4]}{t.birth_core[:3]}{digits}")
    if t.ins:
        keys.append(f"I{t.ins}")
    return list(dict.fromkeys(keys))


@dataclass
class Decision:
    """What the linker decided for one identity (nothing is written yet)."""

    status: str
    master_id: int | None
    score: float | None
    contributions: dict[str, float]
    reason: str
    #: For a review: the master the identity might belong to.
    candidate_master_id: int | None = None


class LinkIndex:
    """Everything the linker needs in memory, kept in step with the database by the service."""

    def __init__(self, model: FellegiSunter, link_at: float = LINK_AT, review_at: float = REVIEW_AT) -> None:
        self.model = model
        self.link_at = link_at
        self.review_at = review_at
        self.traits: dict[int, Traits] = {}
        self.master: dict[int, int] = {}
        self.members: dict[int, list[int]] = {}
        #: Blocking key's hash -> one row id, or a list when several share it. Hashes and bare ints keep a
        #: million identities in about 1 GB; a hash collision only adds a candidate, which scoring rejects.
        self.blocks: dict[int, int | list[int]] = {}
        self.by_local: dict[str, int] = {}
        self.no_link: dict[int, set[int]] = {}
        self.freq = NameFrequencies()
        self.gen = -1
        self.model_json = ""
        #: Number of identities at the last estimation attempt (successful or not).
        self.estimated_at = 0
        self.next_local = 1
        self.next_master = 1

    # -- maintenance ---------------------------------------------------------------------------------------

    @staticmethod
    def local_key(issuer: str, local_id: str) -> str:
        """The map key of an issuer's local ID."""
        return f"{issuer}\x1f{local_id}"

    def put(self, pk: int, t: Traits, master_id: int, keys: list[str] | None = None) -> None:
        """Index (or re-index) local identity ``pk`` with traits ``t`` on master ``master_id``
        (``keys``: its blocking keys, when already computed)."""
        if pk in self.traits:
            self.drop(pk)
        self.traits[pk] = t
        self.by_local[self.local_key(t.issuer, t.local_id)] = pk
        self.master[pk] = master_id
        self.members.setdefault(master_id, []).append(pk)
        blocks = self.blocks
        for key in keys if keys is not None else blocking_keys(t):
            h = hash(key)
            rows = blocks.get(h)
            if rows is None:
                blocks[h] = pk
            elif rows.__class__ is int:
                blocks[h] = [rows, pk]  # type: ignore[list-item]
            else:
                rows.append(pk)  # type: ignore[union-attr]
        self.freq.add(t)
        self.next_local = max(self.next_local, pk + 1)
        self.next_master = max(self.next_master, master_id + 1)

    def rows(self, key: str) -> list[int] | tuple[int, ...]:
        """Row ids indexed under blocking key ``key``."""
        rows = self.blocks.get(hash(key))
        if rows is None:
            return ()
        return (rows,) if isinstance(rows, int) else rows

    def drop(self, pk: int) -> None:
        """Remove local identity ``pk`` from the index."""
        t = self.traits.pop(pk)
        self.by_local.pop(self.local_key(t.issuer, t.local_id), None)
        self.move(pk, None)
        for key in blocking_keys(t):
            h = hash(key)
            rows = self.blocks.get(h)
            if rows is None:
                continue
            if isinstance(rows, int):
                if rows == pk:
                    del self.blocks[h]
            elif pk in rows:
                rows.remove(pk)
                if len(rows) == 1:
                    self.blocks[h] = rows[0]
        self.freq.add(t, -1)

    def move(self, pk: int, master_id: int | None) -> None:
        """Put ``pk`` on ``master_id`` (``None``: off every master)."""
        old = self.master.pop(pk, None)
        if old is not None:
            rows = self.members.get(old, [])
            if pk in rows:
                rows.remove(pk)
            if not rows:
                self.members.pop(old, None)
        if master_id is not None:
            self.master[pk] = master_id
            self.members.setdefault(master_id, []).append(pk)
            self.next_master = max(self.next_master, master_id + 1)

    def forbid(self, a: int, b: int) -> None:
        """Record that ``a`` and ``b`` are different people."""
        self.no_link.setdefault(a, set()).add(b)
        self.no_link.setdefault(b, set()).add(a)

    # -- decisions -----------------------------------------------------------------------------------------

    def decide(self, t: Traits, self_pk: int | None = None, keys: list[str] | None = None) -> Decision:
        """Decide where ``t`` belongs, given everything indexed (``self_pk``: its own row, if indexed;
        ``keys``: its blocking keys, when already computed)."""
        forbidden = self.no_link.get(self_pk, set()) if self_pk is not None else set()
        banned: set[int] = set()
        for forbidden_pk in forbidden:
            m = self.master.get(forbidden_pk)
            if m is not None:
                banned.add(m)

        if t.ins:
            qualified = self._ins_decision(t, self_pk, banned)
            if qualified is not None:
                return qualified

        best: dict[int, tuple[float, int, tuple[int, ...], bool]] = {}
        seen: set[int] = set()
        model, freq, traits = self.model, self.freq, self.traits
        for key in keys if keys is not None else blocking_keys(t):
            rows = self.rows(key)
            if len(rows) > MAX_BLOCK:
                continue
            for pk in rows:
                if pk in seen or pk == self_pk:
                    continue
                seen.add(pk)
                other = traits[pk]
                master_id = self.master[pk]
                if master_id in banned:
                    continue
                if t.nir and other.nir and t.nir != other.nir:
                    banned.add(master_id)
                    continue
                levels, swapped = compare(t, other)
                score = model.score(levels, t, other, freq)
                current = best.get(master_id)
                if current is None or score > current[0]:
                    best[master_id] = (score, pk, levels, swapped)

        ranked = sorted(
            ((v[0], m, v) for m, v in best.items() if m not in banned and not self._conflicting_ins(m, t)),
            reverse=True,
        )
        if not ranked:
            return Decision(NEW, None, None, {}, "no candidate")
        score, master_id, (_, pk, levels, swapped) = ranked[0]
        other = traits[pk]
        contributions = model.contributions(levels, t, other, freq)
        if swapped:
            contributions["swapped_names"] = 0.0
        doubts = self._doubts(t, master_id, levels, self_pk)
        if len(ranked) > 1 and ranked[1][0] >= max(self.review_at, score - AMBIGUITY_MARGIN):
            doubts.append(f"second candidate master {ranked[1][1]} at {ranked[1][0]:.1f} bits")
        twins = "twins" in " ".join(doubts)
        if score >= self.link_at and not doubts:
            return Decision(LINKED, master_id, round(score, 3), contributions, "score above link threshold")
        if score >= self.review_at or twins:
            reason = "; ".join(doubts) or "score between review and link thresholds"
            return Decision(
                REVIEW, None, round(score, 3), contributions, reason, candidate_master_id=master_id
            )
        return Decision(NEW, None, round(score, 3), contributions, "score below review threshold")

    def evidence(self, t: Traits, master_id: int) -> tuple[float | None, dict[str, float]]:
        """The score (bits) and per-field contributions of ``t`` against the member of ``master_id`` it matches
        best, as :meth:`decide` weighs a candidate (what a review item shows the identity officer); ``(None,
        {})`` when no member of the master is indexed."""
        best: tuple[float, tuple[int, ...], bool, Traits] | None = None
        for pk in self.members.get(master_id, []):
            other = self.traits[pk]
            if other.issuer == t.issuer and other.local_id == t.local_id:
                continue
            levels, swapped = compare(t, other)
            score = self.model.score(levels, t, other, self.freq)
            if best is None or score > best[0]:
                best = (score, levels, swapped, other)
        if best is None:
            return None, {}
        score, levels, swapped, other = best
        contributions = self.model.contributions(levels, t, other, self.freq)
        if swapped:
            contributions["swapped_names"] = 0.0
        return round(score, 3), contributions

    def _ins_decision(self, t: Traits, self_pk: int | None, banned: set[int]) -> Decision | None:
        for pk in self.rows(f"I{t.ins}"):
            if pk == self_pk:
                continue
            master_id = self.master[pk]
            if master_id in banned:
                continue
            if self._same_issuer(t, master_id, self_pk):
                reason = "same issuer already has another local ID with this qualified INS"
                return Decision(REVIEW, None, None, {"ins": 0.0}, reason, candidate_master_id=master_id)
            return Decision(LINKED, master_id, None, {"ins": 1.0}, "same qualified INS")
        return None

    def _conflicting_ins(self, master_id: int, t: Traits) -> bool:
        if not t.nir:
            return False
        return any((o := self.traits[pk].nir) and o != t.nir for pk in self.members.get(master_id, ()))

    def _same_issuer(self, t: Traits, master_id: int, self_pk: int | None) -> bool:
        for pk in self.members.get(master_id, ()):
            o = self.traits[pk]
            if pk != self_pk and o.issuer == t.issuer and o.local_id != t.local_id:
                return True
        return False

    def _doubts(self, t: Traits, master_id: int, levels: tuple[int, ...], self_pk: int | None) -> list[str]:
        doubts: list[str] = []
        if self._same_issuer(t, master_id, self_pk):
            doubts.append("another local ID of the same issuer is on this master")
        if levels[FAMILY] == 3 and levels[DATE] == 3 and 0 <= levels[GIVEN] < 2:
            doubts.append("possible twins: same family name and birth date, different first name")
        if levels[SEX] == 0:
            doubts.append("sex differs")
        if levels[PLACE] == 0:
            doubts.append("birth place differs")
        return doubts
