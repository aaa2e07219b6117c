"""Linking decisions on invented identities, against a background population the model was estimated on."""

from __future__ import annotations

import pytest

from archipel.platform.identity.compare import DATE, FAMILY, GIVEN, compare, date_level
from archipel.platform.identity.linker import LinkIndex
from archipel.platform.identity.model import FellegiSunter
from archipel.platform.identity.models import LINKED, NEW, REVIEW
from archipel.platform.identity.normalize import Traits, fold, make_traits, parse_birth_date
from archipel.platform.identity.service import LocalIdentityInput, traits_of_input
from archipel.platform.identity.synthetic import Population
from archipel.platform.identity.training import estimate_from

BASE = {
    "birth_name": "Kervadouec",
    "given_names": "Aurélien",
    "birth_date": "1984-07-19",
    "sex": "M",
    "birth_place": "29232",
    "postcode": "29200",
    "city": "Brestoual",
    "phone": "06 12 34 56 78",
}


@pytest.fixture(scope="module")
def background() -> list[tuple[str, str, LocalIdentityInput]]:
    """Two sites' records of 1,500 invented people (with the usual errors)."""
    pop = Population(seed=3)
    rows = []
    for _ in range(1500):
        p = pop.person()
        for site in ("BG-A", "BG-B"):
            rec = pop.record(p, f"{site}-{p.person}")
            rows.append((site, rec.local_id, LocalIdentityInput(issuer=site, **rec.row())))
    return rows


@pytest.fixture(scope="module")
def background_traits(background: list[tuple[str, str, LocalIdentityInput]]) -> list[Traits]:
    return [traits_of_input(inp) for _, _, inp in background]


@pytest.fixture(scope="module")
def model(background_traits: list[Traits]) -> FellegiSunter:
    """The model estimated by EM from the background (not the priors)."""
    estimated = estimate_from(background_traits)
    assert estimated is not None, "EM must separate matches from non-matches on the background"
    return estimated


@pytest.fixture
def index(background_traits: list[Traits], model: FellegiSunter) -> LinkIndex:
    """An index holding the background population."""
    traits = background_traits
    idx = LinkIndex(model)
    for pk, t in enumerate(traits, 1):
        idx.put(pk, t, pk)
    return idx


def add(idx: LinkIndex, issuer: str, local_id: str, **fields: str) -> int:
    """Index one identity on a master of its own; return that master."""
    pk = idx.next_local
    master = idx.next_master
    idx.put(pk, traits_of_input(LocalIdentityInput(issuer=issuer, local_id=local_id, **fields)), master)
    return master


def decide(idx: LinkIndex, issuer: str, local_id: str, **fields: str) -> tuple[str, int | None, int | None]:
    d = idx.decide(traits_of_input(LocalIdentityInput(issuer=issuer, local_id=local_id, **fields)))
    return d.status, d.master_id, d.candidate_master_id


VARIANTS = {
    "typo in family name": {"birth_name": "Kervaduoec"},
    "typo in first name": {"given_names": "Aurelein"},
    "accents and case": {"birth_name": "KERVADOUËC", "given_names": "aurelien"},
    "swapped given and family": {"birth_name": "Aurélien", "given_names": "Kervadouec"},
    "used name after marriage": {"birth_name": "Kervadouec", "used_name": "épouse Lagrenaud"},
    "married name typed as birth name": {"birth_name": "Lagrenaud", "used_name": "", "postcode": "35000"},
    "hyphenated compound family name": {"birth_name": "Kervadouec-Lagrenaud"},
    "iso vs dicom date": {"birth_date": "19840719"},
    "missing fields": {"birth_place": "", "phone": "", "postcode": "", "city": ""},
    "moved": {"postcode": "75011", "city": "Parisville", "phone": "0699999999"},
}


@pytest.mark.parametrize("change", list(VARIANTS), ids=list(VARIANTS))
def test_variants_of_the_same_person_link(index: LinkIndex, change: str) -> None:
    master = add(index, "SITE-A", "A1", **BASE)
    status, linked_to, _ = decide(index, "SITE-B", "B1", **{**BASE, **VARIANTS[change]})
    assert (status, linked_to) == (LINKED, master)


def test_compound_given_names_written_with_hyphen_or_space_link(index: LinkIndex) -> None:
    fields = {**BASE, "given_names": "Jean-Aurélien"}
    master = add(index, "SITE-A", "A1", **fields)
    assert decide(index, "SITE-B", "B1", **{**fields, "given_names": "JEAN AURELIEN"})[:2] == (LINKED, master)


def test_particles_are_ignored(index: LinkIndex) -> None:
    master = add(index, "SITE-A", "A1", **{**BASE, "birth_name": "de la Kervadouec"})
    assert decide(index, "SITE-B", "B1", **{**BASE, "birth_name": "DELAKERVADOUEC"})[:2] == (LINKED, master)
    assert decide(index, "SITE-C", "C1", **{**BASE, "birth_name": "Kervadouec"})[:2] == (LINKED, master)


@pytest.mark.parametrize(
    ("stored", "received"),
    [
        ("1984-07-09", "1984-09-07"),
        ("1984-07-19", "1948-07-19"),
        ("1984-07-12", "1984-07-21"),
        ("1984-07-19", "1984-07-18"),
    ],
    ids=["day-month swapped", "year digits transposed", "day digits transposed", "one digit wrong"],
)
def test_transposed_birth_dates_still_link(index: LinkIndex, stored: str, received: str) -> None:
    master = add(index, "SITE-A", "A1", **{**BASE, "birth_date": stored})
    assert decide(index, "SITE-B", "B1", **{**BASE, "birth_date": received})[:2] == (LINKED, master)


def test_model_is_estimated_from_the_data_not_the_priors(model: FellegiSunter) -> None:
    prior = FellegiSunter.prior()
    assert model.m != prior.m and model.u != prior.u
    assert model.n_pairs > 100
    # Exact agreement is likelier among matches than among non-matches, far likelier for names and dates.
    for k, levels in enumerate(model.m):
        assert levels[-1] > model.u[k][-1] * (10 if k in (FAMILY, GIVEN, DATE) else 1)


def test_date_levels() -> None:
    assert date_level("19840709", "19840709") == 3
    assert date_level("19840709", "19840907") == 2  # day and month swapped
    assert date_level("19840712", "19840721") == 2  # two digits transposed
    assert date_level("19840719", "19480719") == 2
    assert date_level("19840719", "19840718") == 2  # one digit
    assert date_level("19840719", "19840101") == 0
    assert date_level("", "19840101") == -1


def test_twins_go_to_review_never_linked(index: LinkIndex) -> None:
    master = add(index, "SITE-A", "A1", **BASE)
    status, linked_to, candidate = decide(index, "SITE-B", "B2", **{**BASE, "given_names": "Mathurin"})
    assert (status, linked_to, candidate) == (REVIEW, None, master)


def test_homonyms_born_elsewhere_are_never_auto_linked(index: LinkIndex) -> None:
    add(index, "SITE-A", "A1", **BASE)
    other = {**BASE, "birth_place": "13055", "postcode": "13001", "city": "Marsaillon", "phone": "0611111111"}
    status, linked_to, _ = decide(index, "SITE-B", "B9", **other)
    assert status != LINKED and linked_to is None


def test_two_local_ids_of_the_same_issuer_are_never_auto_linked(index: LinkIndex) -> None:
    master = add(index, "SITE-A", "A1", **BASE)
    status, linked_to, candidate = decide(index, "SITE-A", "A2", **BASE)
    assert (status, linked_to, candidate) == (REVIEW, None, master)


def _ins(body: str) -> str:
    from archipel.platform.identity.ins import ins_key

    return body + ins_key(body)


def test_qualified_ins_links_whatever_the_names_say(index: LinkIndex) -> None:
    ins = _ins("1840729232001")
    master = add(index, "SITE-A", "A1", **BASE, ins=ins, ins_status="QUAL")
    other = {"birth_name": "Zorbalec", "given_names": "Tim", "ins": ins, "ins_status": "QUAL"}
    assert decide(index, "SITE-B", "B1", **other)[:2] == (LINKED, master)


def test_unqualified_ins_does_not_link(index: LinkIndex) -> None:
    ins = _ins("1840729232001")
    add(index, "SITE-A", "A1", **BASE, ins=ins, ins_status="QUAL")
    other = {"birth_name": "Zorbalec", "given_names": "Tim", "ins": ins, "ins_status": "RECUP"}
    assert decide(index, "SITE-B", "B1", **other)[0] == NEW


def test_two_different_qualified_ins_are_a_hard_non_match(index: LinkIndex) -> None:
    add(index, "SITE-A", "A1", **BASE, ins=_ins("1840729232001"), ins_status="QUAL")
    status, linked_to, candidate = decide(
        index, "SITE-B", "B1", **BASE, ins=_ins("1840729232002"), ins_status="QUAL"
    )
    assert (status, linked_to, candidate) == (NEW, None, None)


def test_two_different_ins_of_any_status_are_a_hard_non_match(index: LinkIndex) -> None:
    add(index, "SITE-A", "A1", **BASE, ins=_ins("1840729232001"), ins_status="RECUP")
    status, linked_to, candidate = decide(
        index, "SITE-B", "B1", **BASE, ins=_ins("1840729232002"), ins_status="PROV"
    )
    assert (status, linked_to, candidate) == (NEW, None, None)


def test_declared_different_people_are_not_linked_again(index: LinkIndex) -> None:
    add(index, "SITE-A", "A1", **BASE)
    b_pk = index.next_local
    add(index, "SITE-B", "B1", **BASE)
    index.forbid(b_pk - 1, b_pk)
    t = traits_of_input(LocalIdentityInput(issuer="SITE-B", local_id="B1", **BASE))
    assert index.decide(t, self_pk=b_pk).status == NEW


def test_unrelated_person_gets_a_new_master(index: LinkIndex) -> None:
    add(index, "SITE-A", "A1", **BASE)
    other = {"birth_name": "Plouzanec", "given_names": "Gwenola", "birth_date": "1951-02-03", "sex": "F"}
    assert decide(index, "SITE-B", "B1", **other)[0] == NEW


def test_names_fold_accents_case_hyphens_and_apostrophes() -> None:
    assert fold("d'Ambrosio-Lefèvre") == "D AMBROSIO LEFEVRE"
    assert fold("Œdipe") == "OEDIPE"
    t = make_traits("S", "1", birth_name="de la Fontaine", given_names="Marie-Claire", birth_date="19700101")
    assert t.birth == "DELAFONTAINE" and t.birth_core == "FONTAINE"
    assert t.given == "MARIECLAIRE" and "MARIE" in t.given_tokens


def test_swapped_names_are_recognised() -> None:
    a = make_traits("S", "1", birth_name="Kervadouec", given_names="Aurelien", birth_date="19840719")
    b = make_traits("S", "2", birth_name="Aurelien", given_names="Kervadouec", birth_date="19840719")
    levels, swapped = compare(a, b)
    assert swapped and levels[FAMILY] == 2 and levels[GIVEN] == 2 and levels[DATE] == 3


@pytest.mark.parametrize(
    "bad", ["1984-02-30", "19841301", "2999-01-01", "1870-01-01", "84-07-19", "19/07/1984"]
)
def test_impossible_or_malformed_dates_are_refused(bad: str) -> None:
    with pytest.raises(ValueError, match="birth date"):
        parse_birth_date(bad)
