"""Field comparators: each turns two :class:`Traits` into an agreement level for one field.

Levels are small integers, higher meaning closer; ``MISSING`` (-1) means one side lacks the field, which then
adds no evidence either way. The Fellegi-Sunter model (:mod:`.model`) gives each level its weight.
"""

from __future__ import annotations

from rapidfuzz.distance import OSA, JaroWinkler

from archipel.platform.identity.normalize import Traits

MISSING = -1

#: The compared fields, in the order of every comparison vector.
FIELDS = ("family", "given", "birth_date", "sex", "birth_place", "address", "phone")
#: Number of levels of each field (levels run from 0 to n-1).
LEVELS = (4, 4, 4, 2, 2, 3, 2)
#: Level meaning "exact agreement" for the fields whose weight is adjusted by value frequency.
EXACT = 3

FAMILY, GIVEN, DATE, SEX, PLACE, ADDRESS, PHONE = range(7)

_jw = JaroWinkler.normalized_similarity
_osa = OSA.distance


def string_level(a: str, b: str) -> int:
    """3 identical, 2 one typo away (Jaro-Winkler >= 0.94, or one edit/transposition), 1 close, 0 different."""
    if a == b:
        return 3
    if min(len(a), len(b)) >= 4 and _osa(a, b, score_cutoff=1) <= 1:
        return 2
    sim = _jw(a, b)
    if sim >= 0.94:
        return 2
    if sim >= 0.88:
        return 1
    return 0


def family_level(a: Traits, b: Traits) -> int:
    """Best agreement between any family-name forms (birth or used, with or without particles)."""
    if not a.birth or not b.birth:
        return MISSING
    if a.birth == b.birth:
        return 3
    best = 0
    for x in a.forms:
        for y in b.forms:
            if x == y:
                return 3
            if best < 2:
                best = max(best, string_level(x, y))
    if best < 2 and _contains(a.birth_tokens, b.birth_tokens):
        best = 2  # compound names: "MARTIN" within "MARTIN DUBOIS"
    return best


def given_level(a: Traits, b: Traits) -> int:
    """Agreement of the first given names; a first name among the other's given names counts as close."""
    if not a.given or not b.given:
        return MISSING
    if a.given == b.given:
        return 3
    level = string_level(a.given, b.given)
    if level < 2 and (a.given in b.given_tokens or b.given in a.given_tokens):
        level = 2
    return level


def _contains(x: tuple[str, ...], y: tuple[str, ...]) -> bool:
    if not x or not y:
        return False
    small, big = (x, y) if len(x) <= len(y) else (y, x)
    return all(len(t) >= 3 for t in small) and set(small) <= set(big)


def swapped_level(a: Traits, b: Traits) -> bool:
    """Whether a's family and first given names are b's first given and family names (entered swapped)."""
    if not (a.birth and b.birth and a.given and b.given):
        return False
    return string_level(a.birth, b.given) >= 2 and string_level(a.given, b.birth) >= 2


def date_level(a: str, b: str) -> int:
    """Birth dates (``YYYYMMDD``): 3 same; 2 day/month swapped or one digit typo or two digits transposed;
    1 two of year, month, day agree; 0 otherwise."""
    if not a or not b:
        return MISSING
    if a == b:
        return 3
    if (a[:4] == b[:4] and a[4:6] == b[6:8] and a[6:8] == b[4:6]) or _osa(a, b, score_cutoff=1) <= 1:
        return 2
    same = (a[:4] == b[:4]) + (a[4:6] == b[4:6]) + (a[6:8] == b[6:8])
    return 1 if same >= 2 else 0


def equal_level(a: str, b: str) -> int:
    """1 equal, 0 different, MISSING if either is empty."""
    if not a or not b:
        return MISSING
    return 1 if a == b else 0


def address_level(a: Traits, b: Traits) -> int:
    """2 same postcode, 1 same city or same department, 0 different, MISSING if neither side can tell."""
    if a.postcode and b.postcode:
        if a.postcode == b.postcode:
            return 2
        if a.city and a.city == b.city:
            return 1
        return 1 if a.postcode[:2] == b.postcode[:2] else 0
    if a.city and b.city:
        return 1 if a.city == b.city else 0
    return MISSING


def compare(a: Traits, b: Traits) -> tuple[tuple[int, ...], bool]:
    """The comparison vector of ``a`` and ``b`` (one level per :data:`FIELDS`), and whether the names were
    matched swapped."""
    fam = family_level(a, b)
    giv = given_level(a, b)
    swapped = False
    if fam < 2 and giv < 2 and swapped_level(a, b):
        fam, giv, swapped = 2, 2, True
    return (
        (
            fam,
            giv,
            date_level(a.date, b.date),
            equal_level(a.sex, b.sex),
            equal_level(a.place, b.place),
            address_level(a, b),
            equal_level(a.phone, b.phone),
        ),
        swapped,
    )
