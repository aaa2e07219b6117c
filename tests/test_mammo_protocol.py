"""The protocol engine, rule by rule: which tasks an episode gets, concordance, arbitration policies, the decision
per woman, who may read what, and blinding (pure functions, no database)."""

from __future__ import annotations

import itertools

import pytest
from pydicom.dataset import Dataset

from archipel.mammo import protocol
from archipel.mammo.models import (
    ALL_NON_NORMAL,
    ALL_RECALLS,
    ARBITRATION,
    CONSENSUS,
    DISCORDANT_ONLY,
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
from archipel.mammo.protocol import Read, Settings, next_step
from archipel.mammo.views import flag_of, image_view, missing_screening_views

FR = Settings(FR_DEPISTAGE, DISCORDANT_ONLY)


def eu(policy: str = DISCORDANT_ONLY, resolution: str = ARBITRATION, sees: bool = True) -> Settings:
    return Settings(EU_BLINDED, policy, resolution, sees)


def read(role: str, reader: str, right: int = 1, left: int = 1, **kw: object) -> Read:
    return Read(role, reader, right, left, **kw)  # type: ignore[arg-type]


def cti(role: str, reader: str) -> Read:
    return Read(
        role, reader, 1, 2, right_result="cti", insufficient_views=(("R-MLO", "pectoral muscle not seen"),)
    )


@pytest.mark.parametrize("acr", range(6))
def test_acr_1_and_2_are_normal_and_every_other_category_needs_assessment(acr: int) -> None:
    assert protocol.breast_result(acr) == ("normal" if acr in (1, 2) else "positive")


def test_density_maps_to_the_french_categories_and_refuses_others() -> None:
    assert [protocol.french_density(d) for d in "abcd"] == [1, 2, 3, 4]
    with pytest.raises(ValueError, match="not an ACR category"):
        protocol.french_density("e")


def test_french_episode_waits_for_the_l1_form() -> None:
    step = next_step(FR, [])
    assert (step.kind, step.waiting_for) == ("wait", "the L1 form")


@pytest.mark.parametrize(("right", "left"), list(itertools.product(range(6), repeat=2)))
def test_only_exams_ending_acr_1_2_at_l1_go_to_l2(right: int, left: int) -> None:
    step = next_step(FR, [read(L1, "centre", right, left)])
    if right in (1, 2) and left in (1, 2):
        assert (step.kind, step.role) == ("task", L2)
    else:
        assert (step.kind, step.decision) == ("decide", RECALL)
        assert "immediate work-up at the centre" in step.reasons


def test_normal_l2_gives_a_normal_decision() -> None:
    step = next_step(FR, [read(L1, "centre"), read(L2, "second", 2, 1)])
    assert (step.kind, step.decision) == ("decide", NORMAL)


def test_positive_l2_recalls_through_l1_and_the_gp() -> None:
    step = next_step(FR, [read(L1, "centre"), read(L2, "second", 1, 4)])
    assert step.decision == RECALL
    assert step.reasons == ("L2 positive, left breast (ACR 4)", "deferred work-up through L1 and the GP")


def test_cti_asks_for_a_retake_read_again_by_l2_with_the_reason_per_view() -> None:
    step = next_step(FR, [read(L1, "centre"), cti(L2, "second")])
    assert step.decision == TECHNICAL_RECALL
    assert "R-MLO: pectoral muscle not seen" in step.reasons[0]
    assert step.reasons[-1] == "retake, read again by L2"


def test_a_positive_breast_outweighs_a_technically_insufficient_one() -> None:
    mixed = Read(L2, "second", 1, 4, right_result="cti", insufficient_views=(("R-CC", "blur"),))
    assert protocol.read_result(mixed) == RECALL


def test_l2_consensus_is_held_among_l2_readers_and_its_read_is_final() -> None:
    asked = read(L2, "second", 1, 1, consensus_requested=True)
    assert next_step(FR, [read(L1, "centre"), asked]).role == L2_CONSENSUS
    step = next_step(FR, [read(L1, "centre"), asked, read(L2_CONSENSUS, "third", 4, 1)])
    assert step.decision == RECALL
    assert step.reasons[0].startswith("L2 consensus positive")


def test_french_protocol_has_no_arbitrator() -> None:
    reads = [read(L1, "centre"), read(L2, "second", 5, 1)]
    assert next_step(FR, reads).kind == "decide"


def test_the_same_radiologist_is_never_l1_and_l2() -> None:
    reads = [read(L1, "dr-a")]
    assert "never be both L1 and L2" in protocol.eligibility_refusal(FR_DEPISTAGE, L2, "dr-a", reads, [])
    assert protocol.eligibility_refusal(FR_DEPISTAGE, L2, "dr-b", reads, []) == ""
    asked = [*reads, read(L2, "dr-b", consensus_requested=True)]
    assert protocol.eligibility_refusal(FR_DEPISTAGE, L2_CONSENSUS, "dr-b", asked, [])
    assert protocol.eligibility_refusal(FR_DEPISTAGE, L2_CONSENSUS, "dr-a", asked, [])
    assert protocol.eligibility_refusal(FR_DEPISTAGE, L2_CONSENSUS, "dr-c", asked, []) == ""


def test_a_submitted_read_cannot_be_made_again() -> None:
    reads = [read(FIRST, "r1")]
    assert "already submitted" in protocol.eligibility_refusal(EU_BLINDED, FIRST, "r1", reads, [])


def test_blinded_episode_gets_two_reading_tasks_and_waits_for_both() -> None:
    assert protocol.initial_roles(eu()) == (FIRST, SECOND)
    assert protocol.initial_roles(FR) == ()
    assert next_step(eu(), [read(FIRST, "r1")]).waiting_for == "the second read"


def test_the_two_blind_reads_are_made_by_two_readers_and_the_arbitrator_is_a_third() -> None:
    assert protocol.eligibility_refusal(EU_BLINDED, SECOND, "r1", [], [(FIRST, "r1")])
    assert protocol.eligibility_refusal(EU_BLINDED, SECOND, "r1", [read(FIRST, "r1")], [])
    both = [read(FIRST, "r1"), read(SECOND, "r2", 4, 1)]
    assert "third reader" in protocol.eligibility_refusal(EU_BLINDED, ARBITRATION, "r2", both, [])
    assert protocol.eligibility_refusal(EU_BLINDED, ARBITRATION, "r3", both, []) == ""


RESULTS = {NORMAL: (1, 1), RECALL: (4, 1)}


@pytest.mark.parametrize("policy", [DISCORDANT_ONLY, ALL_RECALLS, ALL_NON_NORMAL])
@pytest.mark.parametrize(("a", "b"), list(itertools.product([NORMAL, RECALL, TECHNICAL_RECALL], repeat=2)))
def test_arbitration_policy_decides_which_reads_get_a_third_look(policy: str, a: str, b: str) -> None:
    def make(role: str, reader: str, result: str) -> Read:
        return cti(role, reader) if result == TECHNICAL_RECALL else read(role, reader, *RESULTS[result])

    step = next_step(eu(policy), [make(FIRST, "r1", a), make(SECOND, "r2", b)])
    expected_third = (
        a != b or (policy == ALL_RECALLS and a == RECALL) or (policy == ALL_NON_NORMAL and a != NORMAL)
    )
    if expected_third:
        assert (step.kind, step.role) == ("task", ARBITRATION)
    else:
        assert (step.kind, step.decision) == ("decide", a)


def test_discordance_goes_to_consensus_when_the_programme_says_so() -> None:
    both = [read(FIRST, "r1"), read(SECOND, "r2", 1, 3)]
    step = next_step(eu(resolution=CONSENSUS), both)
    assert (step.kind, step.role) == ("task", CONSENSUS)
    assert step.reasons == ("left breast: normal (first) vs positive (second)",)
    assert next_step(eu(resolution=CONSENSUS), [*both, read(CONSENSUS, "r1", 1, 2)]).decision == NORMAL


def test_the_arbitrators_read_decides() -> None:
    both = [read(FIRST, "r1"), read(SECOND, "r2", 1, 3)]
    assert next_step(eu(), [*both, read(ARBITRATION, "r3", 1, 4)]).decision == RECALL


def test_a_blind_reader_cannot_see_the_other_read_until_both_are_submitted() -> None:
    first = read(FIRST, "r1")
    assert "hidden until both reads" in protocol.blinding_refusal(
        eu(), "r2", first, [first], [(SECOND, "r2")]
    )
    assert protocol.blinding_refusal(eu(), "r1", first, [first], []) == ""
    both = [first, read(SECOND, "r2")]
    assert protocol.blinding_refusal(eu(), "r2", first, both, []) == ""


def test_the_arbitrator_sees_the_first_reads_only_if_the_programme_allows() -> None:
    both = [read(FIRST, "r1"), read(SECOND, "r2", 4, 1)]
    claims = [(ARBITRATION, "r3")]
    assert protocol.blinding_refusal(eu(sees=True), "r3", both[0], both, claims) == ""
    assert "blinded arbitration" in protocol.blinding_refusal(eu(sees=False), "r3", both[0], both, claims)
    after = [*both, read(ARBITRATION, "r3", 4, 1)]
    assert protocol.blinding_refusal(eu(sees=False), "r3", both[0], after, claims) == ""


def test_a_qualified_arbitrator_is_blinded_before_claiming_while_an_arbitration_is_pending() -> None:
    both = [read(FIRST, "r1"), read(SECOND, "r2", 4, 1)]
    # Not yet claimed: the arbitrator qualification is enough to be blinded.
    assert "blinded arbitration" in protocol.blinding_refusal(eu(sees=False), "r3", both[0], both, [], True)
    # Anyone else (not in a reading role) sees the first reads once both are in.
    assert protocol.blinding_refusal(eu(sees=False), "r3", both[0], both, [], False) == ""
    # No arbitration to come (concordant reads), or one already read: nothing to blind.
    concordant = [read(FIRST, "r1"), read(SECOND, "r2")]
    assert protocol.blinding_refusal(eu(sees=False), "r3", concordant[0], concordant, [], True) == ""
    after = [*both, read(ARBITRATION, "r4", 4, 1)]
    assert protocol.blinding_refusal(eu(sees=False), "r3", both[0], after, [], True) == ""
    # A first reader who is also an arbitrator sees the other read: they never arbitrate this episode.
    assert protocol.blinding_refusal(eu(sees=False), "r1", both[1], both, [], True) == ""
    assert protocol.blinding_refusal(eu(sees=True), "r3", both[0], both, [], True) == ""


def test_l2_sees_the_l1_form_in_the_french_programme() -> None:
    l1 = read(L1, "centre")
    assert protocol.blinding_refusal(FR, "second", l1, [l1], [(L2, "second")]) == ""


def _image(**tags: object) -> Dataset:
    ds = Dataset()
    ds.SOPInstanceUID = "1.2.3"
    for k, v in tags.items():
        setattr(ds, k, v)
    return ds


def test_views_come_from_the_view_code_sequence_before_view_position() -> None:
    code = Dataset()
    code.CodeValue = "399368009"
    coded = image_view(_image(ViewCodeSequence=[code], ViewPosition="CC", ImageLaterality="L"))
    assert (coded.laterality, coded.view) == ("L", "MLO")
    old = Dataset()
    old.CodeValue = "R-10242"
    assert image_view(_image(ViewCodeSequence=[old], Laterality="R")).view == "CC"
    assert image_view(_image(ViewPosition="MLO ", ImageLaterality="R")).view == "MLO"


def test_an_image_without_view_or_laterality_is_flagged() -> None:
    bare = image_view(_image(ViewPosition="CC"))
    assert bare.problem == "image 1.2.3 has no laterality"
    views = [bare.as_dict(), image_view(_image(ImageLaterality="L", ViewPosition="XX")).as_dict()]
    assert flag_of(views) == "image 1.2.3 has no laterality; image 1.2.3 has no view"
    assert missing_screening_views([{"sop": "1", "laterality": "R", "view": "CC"}]) == [
        "R-MLO",
        "L-CC",
        "L-MLO",
    ]
