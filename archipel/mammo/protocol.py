"""The protocol engine: from an episode's reads to its next step, and who may read or see what. Pure: no I/O.

Two protocols (docs/mammo.md):

- ``fr-depistage``: the imaging centre's L1 form comes first. Only an exam whose L1 assessment ends ACR 1-2 in
  both breasts goes to L2; a positive L1 is worked up at the centre at once. L2 sees L1's form and answers per
  breast normal, positive or technically insufficient (CTI, with a reason per view). A positive L2 recalls the
  woman through L1 and her GP; a CTI asks for a retake, which comes back through L2. No third reader: an L2
  reader may ask for a consensus among L2 readers, whose read is then final.
- ``eu-blinded``: two readers read blind. Depending on the programme's arbitration policy, a discordance (or
  every recall, or every non-normal read) goes to a consensus or to an arbitrator, whose read is final.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from archipel.mammo.models import (
    ALL_NON_NORMAL,
    ALL_RECALLS,
    ARBITRATION,
    CONSENSUS,
    EU_BLINDED,
    FIRST,
    FR_DEPISTAGE,
    L1,
    L2,
    L2_CONSENSUS,
    NORMAL,
    RECALL,
    SECOND,
    TECHNICAL_RECALL,
)

#: Per-breast results of a read.
BREAST_NORMAL, BREAST_POSITIVE, BREAST_CTI = "normal", "positive", "cti"
#: The qualification a reader needs for each role.
QUALIFICATION_FOR = {
    L1: "l1",
    L2: "l2",
    L2_CONSENSUS: "l2",
    FIRST: "reader",
    SECOND: "reader",
    CONSENSUS: "reader",
    ARBITRATION: "arbitrator",
}
#: The French density categories 1-4 for ACR a-d.
FRENCH_DENSITY = {"a": 1, "b": 2, "c": 3, "d": 4}
BLIND_ROLES = (FIRST, SECOND)


@dataclass(frozen=True)
class Settings:
    """What of a programme the rules depend on."""

    protocol: str
    arbitration_policy: str
    discordance_resolution: str = ARBITRATION
    arbitrator_sees_reads: bool = True


@dataclass(frozen=True)
class Read:
    """A submitted read as the rules see it: role, reader, per-breast ACR and result, and the views judged
    technically insufficient with their reasons."""

    role: str
    reader: str
    right: int
    left: int
    right_result: str = ""
    left_result: str = ""
    insufficient_views: tuple[tuple[str, str], ...] = ()
    consensus_requested: bool = False

    def breast(self, side: str) -> str:
        """The result for ``side`` (``R`` or ``L``): given, else derived from the ACR category."""
        given = self.right_result if side == "R" else self.left_result
        if given:
            return given
        return breast_result(self.right if side == "R" else self.left)


@dataclass(frozen=True)
class Step:
    """What happens next: ``wait`` (for ``waiting_for``), a ``task`` in ``role``, or ``decide``."""

    kind: str
    role: str = ""
    decision: str = ""
    reasons: tuple[str, ...] = field(default=())
    waiting_for: str = ""


def breast_result(acr: int) -> str:
    """ACR 1-2 is normal; ACR 0 (incomplete) and 3-5 need an assessment."""
    return BREAST_NORMAL if acr in (1, 2) else BREAST_POSITIVE


def french_density(acr_density: str) -> int:
    """The French 1-4 density category for ACR ``a``-``d``; raises ``ValueError`` for anything else."""
    try:
        return FRENCH_DENSITY[acr_density.lower()]
    except KeyError:
        raise ValueError(f"density {acr_density!r} is not an ACR category a, b, c or d") from None


def read_result(read: Read) -> str:
    """The read's answer for the woman: ``recall`` if a breast is positive, else ``technical_recall`` if a
    breast is technically insufficient, else ``normal``."""
    sides = (read.breast("R"), read.breast("L"))
    if BREAST_POSITIVE in sides:
        return RECALL
    if BREAST_CTI in sides:
        return TECHNICAL_RECALL
    return NORMAL


def _sides(read: Read, result: str) -> list[str]:
    return [name for side, name in (("R", "right"), ("L", "left")) if read.breast(side) == result]


def _reasons(read: Read, who: str) -> tuple[str, ...]:
    result = read_result(read)
    if result == RECALL:
        return tuple(
            f"{who} positive, {name} breast (ACR {read.right if name == 'right' else read.left})"
            for name in _sides(read, BREAST_POSITIVE)
        )
    if result == TECHNICAL_RECALL:
        views = "; ".join(f"{view}: {why}" for view, why in read.insufficient_views) or "no reason given"
        return (f"{who} technically insufficient ({', '.join(_sides(read, BREAST_CTI))}): {views}",)
    return (f"{who} normal",)


def _one(reads: Sequence[Read], role: str) -> Read | None:
    return next((r for r in reads if r.role == role), None)


def _french(reads: Sequence[Read]) -> Step:
    l1 = _one(reads, L1)
    if l1 is None:
        return Step("wait", waiting_for="the L1 form")
    if read_result(l1) != NORMAL:
        return Step(
            "decide", decision=RECALL, reasons=(*_reasons(l1, "L1"), "immediate work-up at the centre")
        )
    l2 = _one(reads, L2)
    if l2 is None:
        return Step("task", role=L2)
    final = l2
    if l2.consensus_requested:
        consensus = _one(reads, L2_CONSENSUS)
        if consensus is None:
            return Step("task", role=L2_CONSENSUS)
        final = consensus
    who = "L2 consensus" if final.role == L2_CONSENSUS else "L2"
    result = read_result(final)
    reasons = _reasons(final, who)
    if result == RECALL:
        reasons = (*reasons, "deferred work-up through L1 and the GP")
    elif result == TECHNICAL_RECALL:
        reasons = (*reasons, "retake, read again by L2")
    return Step("decide", decision=result, reasons=reasons)


def needs_third_look(policy: str, first: str, second: str) -> bool:
    """Whether two blind results go to a consensus or an arbitration under ``policy``."""
    if first != second:
        return True
    if policy == ALL_RECALLS:
        return first == RECALL
    if policy == ALL_NON_NORMAL:
        return first != NORMAL
    return False


def discordance(a: Read, b: Read) -> tuple[str, ...]:
    """The breasts on which two reads differ, in words (empty when concordant)."""
    out = []
    for side, name in (("R", "right"), ("L", "left")):
        if a.breast(side) != b.breast(side):
            out.append(f"{name} breast: {a.breast(side)} ({a.role}) vs {b.breast(side)} ({b.role})")
    return tuple(out)


def _blinded(settings: Settings, reads: Sequence[Read]) -> Step:
    first, second = _one(reads, FIRST), _one(reads, SECOND)
    if first is None or second is None:
        missing = " and ".join(r for r, x in ((FIRST, first), (SECOND, second)) if x is None)
        return Step("wait", waiting_for=f"the {missing} read")
    r1, r2 = read_result(first), read_result(second)
    if not needs_third_look(settings.arbitration_policy, r1, r2):
        return Step("decide", decision=r1, reasons=(f"concordant blind reads: {r1}",))
    third_role = CONSENSUS if settings.discordance_resolution == CONSENSUS else ARBITRATION
    third = _one(reads, third_role)
    if third is None:
        return Step("task", role=third_role, reasons=discordance(first, second) or (f"both reads {r1}",))
    return Step("decide", decision=read_result(third), reasons=_reasons(third, third_role))


def next_step(settings: Settings, reads: Sequence[Read]) -> Step:
    """The episode's next step given the reads submitted so far."""
    if settings.protocol == FR_DEPISTAGE:
        return _french(reads)
    if settings.protocol == EU_BLINDED:
        return _blinded(settings, reads)
    raise ValueError(f"unknown protocol {settings.protocol!r}")


def initial_roles(settings: Settings) -> tuple[str, ...]:
    """The reading tasks an episode gets when its images arrive (fr: none until the L1 form)."""
    return BLIND_ROLES if settings.protocol == EU_BLINDED else ()


def eligibility_refusal(
    protocol: str, role: str, reader: str, reads: Sequence[Read], claims: Sequence[tuple[str, str]]
) -> str:
    """Why ``reader`` may not read this episode in ``role`` (empty: they may), given the reads submitted and the
    ``(role, reader)`` claims held on other tasks of the episode."""
    involved = {(r.role, r.reader) for r in reads} | set(claims)
    readers_in = {role_: who for role_, who in involved if who == reader}
    if (role, reader) in {(r.role, r.reader) for r in reads}:
        return f"{reader} has already submitted the {role} read of this episode"
    if protocol == FR_DEPISTAGE:
        if role in (L2, L2_CONSENSUS) and L1 in readers_in:
            return "the same radiologist can never be both L1 and L2 on one exam"
        if role == L2_CONSENSUS and L2 in readers_in:
            return "the L2 consensus is held with another L2 reader than the one who asked for it"
        return ""
    if role in BLIND_ROLES and any(r in readers_in for r in BLIND_ROLES):
        return "the two blind reads of an episode are made by two different readers"
    if role == ARBITRATION and any(r in readers_in for r in BLIND_ROLES):
        return "the arbitrator is a third reader, not one of the two first readers"
    return ""


def blind_arbitrator(
    settings: Settings,
    requester: str,
    reads: Sequence[Read],
    claims: Sequence[tuple[str, str]],
    arbitrator: bool = False,
) -> bool:
    """Whether ``requester`` is, or may yet be, this episode's blinded arbitrator: the programme's arbitrator
    does not see the first reads, an arbitration is claimed by them or pending, and they hold the arbitrator
    qualification (``arbitrator``) or the claim. A first reader never arbitrates, and an arbitrator who has
    submitted may look back."""
    if settings.protocol != EU_BLINDED or settings.arbitrator_sees_reads:
        return False
    if any(r.reader == requester and r.role in (*BLIND_ROLES, ARBITRATION) for r in reads):
        return False
    if (ARBITRATION, requester) in set(claims):
        return True
    step = next_step(settings, reads)
    return arbitrator and step.kind == "task" and step.role == ARBITRATION


def blinding_refusal(
    settings: Settings,
    requester: str,
    target: Read,
    reads: Sequence[Read],
    claims: Sequence[tuple[str, str]],
    arbitrator: bool = False,
) -> str:
    """Why ``requester`` may not yet see ``target``'s assessment (empty: they may), given the submitted reads,
    the ``(role, reader)`` claims in progress on the episode, and whether the requester holds the programme's
    arbitrator qualification (so is blinded as a would-be arbitrator before claiming, too)."""
    if settings.protocol != EU_BLINDED or target.role not in BLIND_ROLES or target.reader == requester:
        return ""
    if blind_arbitrator(settings, requester, reads, claims, arbitrator):
        return "blinded arbitration: the arbitrator does not see the first reads in this programme"
    if not (_one(reads, FIRST) and _one(reads, SECOND)):
        return "blind double reading: another reader's assessment is hidden until both reads are submitted"
    return ""
