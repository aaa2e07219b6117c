"""Identity traits as the linker compares them: accents, case, hyphens, particles and name kinds folded away.

:class:`Traits` is the compact, comparison-ready form of one local identity; the in-memory blocking index holds
one per local identity, so it has slots and interned strings only.
"""

from __future__ import annotations

import re
import sys
import unicodedata
from datetime import date

#: Name particles dropped from the "core" form of a family name ("DE LA FONTAINE" -> "FONTAINE").
PARTICLES = frozenset(
    {
        "DE",
        "DU",
        "DES",
        "LA",
        "LE",
        "LES",
        "D",
        "L",
        "VAN",
        "VON",
        "DER",
        "DEN",
        "DA",
        "DI",
        "DEL",
        "DELLA",
        "DOS",
        "DAS",
        "DO",
        "Y",
        "ST",
        "STE",
    }
)
#: Words that introduce a used (married) name and are not part of it.
USED_NAME_MARKERS = frozenset({"EPOUSE", "EP", "EPX", "VEUVE", "VVE", "NEE", "DIVORCEE", "DIV", "EPSE"})

_NON_LETTERS = re.compile(r"[^A-Z ]+")
_SPACES = re.compile(r" +")
_DIGITS = re.compile(r"\D+")


def fold(text: str | None) -> str:
    """Upper-case ASCII letters separated by single spaces: accents stripped, hyphens and apostrophes as spaces.

    ``"d'Ambrosio-Lefèvre"`` becomes ``"D AMBROSIO LEFEVRE"``; ligatures such as ``Œ`` become ``OE``.
    """
    if not text:
        return ""
    if text.isascii():
        ascii_only = text.upper()
        if ascii_only.isalpha():
            return ascii_only
    else:
        decomposed = unicodedata.normalize(
            "NFKD",
            text.replace("Œ", "OE")
            .replace("œ", "oe")
            .replace("Æ", "AE")
            .replace("æ", "ae")
            .replace("ß", "SS"),
        )
        ascii_only = "".join(c for c in decomposed if not unicodedata.combining(c)).upper()
    return _SPACES.sub(" ", _NON_LETTERS.sub(" ", ascii_only)).strip()


def name_tokens(text: str | None, *, used: bool = False) -> tuple[str, ...]:
    """The words of a name, folded; for a used name the "épouse"/"veuve" markers are dropped."""
    tokens = tuple(fold(text).split())
    if used:
        tokens = tuple(t for t in tokens if t not in USED_NAME_MARKERS)
    return tokens


def compact(tokens: tuple[str, ...]) -> str:
    """The tokens glued together: "JEAN PIERRE" and "JEAN-PIERRE" both give ``"JEANPIERRE"``."""
    return sys.intern("".join(tokens))


def core(tokens: tuple[str, ...]) -> str:
    """The family name without its particles ("DE LA FONTAINE" -> "FONTAINE"); the full form if only particles."""
    kept = tuple(t for t in tokens if t not in PARTICLES)
    return compact(kept or tokens)


class DateError(ValueError):
    """A birth date that cannot be read or cannot exist; the message names the value."""


def parse_birth_date(value: str | None, *, today: date | None = None) -> str:
    """A birth date as ``YYYYMMDD`` from ISO (``1970-01-31``) or DICOM (``19700131``) text; ``""`` if empty.

    Impossible dates (30 February, the future, before 1880) raise :class:`DateError`.
    """
    text = (value or "").strip()
    if not text:
        return ""
    digits = text.replace("-", "") if len(text) == 10 and text[4] == "-" and text[7] == "-" else text
    if len(digits) != 8 or not digits.isdigit() or not digits.isascii():
        raise DateError(f"birth date {value!r} is neither YYYY-MM-DD nor YYYYMMDD")
    try:
        born = date(int(digits[:4]), int(digits[4:6]), int(digits[6:]))
    except ValueError as exc:
        raise DateError(f"birth date {value!r} does not exist") from exc
    if born.year < 1880 or born > (today or date.today()):
        raise DateError(f"birth date {value!r} is out of range (1880 to today)")
    return digits


_SEX_CODES = {"": "", "M": "M", "F": "F", "U": "", "O": ""}


def parse_sex(value: str | None) -> str:
    """``"M"``, ``"F"`` or ``""`` (unknown/other) from the usual spellings; anything else raises ValueError."""
    text = (value or "").strip().upper()
    if text in _SEX_CODES:
        return _SEX_CODES[text]
    text = fold(value)
    if text in ("", "U", "O", "I", "X", "UNKNOWN", "INCONNU"):
        return ""
    if text in ("M", "H", "MALE", "HOMME", "MASCULIN", "1"):
        return "M"
    if text in ("F", "FEMALE", "FEMME", "FEMININ", "2"):
        return "F"
    raise ValueError(f"sex {value!r} is not M, F or unknown")


def code_key(value: str | None) -> str:
    """A code (INSEE birth place, country) as upper-case letters and digits only."""
    text = unicodedata.normalize("NFKD", value or "").encode("ascii", "ignore").decode().upper()
    return re.sub(r"[^0-9A-Z]", "", text)


def phone_key(value: str | None) -> str:
    """The last nine digits of a phone number (drops +33 / 0 prefixes and separators)."""
    digits = _DIGITS.sub("", value or "")
    return digits[-9:] if len(digits) >= 9 else ""


class Traits:
    """One local identity in comparison-ready form (what the in-memory index keeps)."""

    __slots__ = (
        "birth",
        "birth_core",
        "birth_tokens",
        "city",
        "date",
        "forms",
        "given",
        "given_tokens",
        "ins",
        "issuer",
        "local_id",
        "nir",
        "phone",
        "place",
        "postcode",
        "sex",
        "used",
        "used_core",
    )

    def __init__(
        self,
        issuer: str,
        local_id: str,
        birth_tokens: tuple[str, ...],
        used_tokens: tuple[str, ...],
        given_tokens: tuple[str, ...],
        birth_date: str,
        sex: str,
        place: str,
        postcode: str,
        city: str,
        phone: str,
        qualified_ins: str,
        nir: str = "",
    ) -> None:
        self.issuer = sys.intern(issuer)
        self.local_id = local_id
        self.birth_tokens = birth_tokens
        self.birth = compact(birth_tokens)
        self.birth_core = core(birth_tokens)
        used = compact(used_tokens)
        self.used = "" if used == self.birth else used
        self.used_core = core(used_tokens) if self.used else ""
        self.given_tokens = given_tokens
        self.given = given_tokens[0] if given_tokens else ""
        self.date = birth_date
        self.sex = sex
        self.place = sys.intern(place)
        self.postcode = sys.intern(postcode)
        self.city = sys.intern(city)
        self.phone = phone
        #: The INS, kept only when qualified: nothing else may link or refuse a link by INS.
        self.ins = qualified_ins
        #: The INS whatever its status: never used to link, but two different ones are two people.
        self.nir = nir
        #: Every form of the family name to compare: birth, used, and their particle-free cores.
        self.forms = tuple(
            dict.fromkeys(f for f in (self.birth, self.birth_core, self.used, self.used_core) if f)
        )


def make_traits(
    issuer: str,
    local_id: str,
    *,
    birth_name: str = "",
    used_name: str = "",
    given_names: str = "",
    birth_date: str = "",
    sex: str = "",
    birth_place: str = "",
    postcode: str = "",
    city: str = "",
    phone: str = "",
    qualified_ins: str = "",
    any_ins: str = "",
) -> Traits:
    """Fold already-validated fields into :class:`Traits` (``birth_date`` is ``YYYYMMDD`` or empty,
    ``birth_place`` already through :func:`code_key`)."""
    birth = name_tokens(birth_name)
    used = name_tokens(used_name, used=True)
    if not birth and used:
        birth, used = used, ()
    given = tuple(sys.intern(t) for t in name_tokens(given_names))
    # Compound given names ("JEAN PIERRE") compare as one first name and as separate words.
    if len(given) > 1 and "," not in given_names and " " not in given_names.strip():
        given = (compact(given), *given)
    return Traits(
        issuer,
        local_id,
        birth,
        used,
        given,
        birth_date,
        sex,
        birth_place,
        _DIGITS.sub("", postcode or "")[:5],
        compact(name_tokens(city)),
        phone_key(phone),
        qualified_ins,
        any_ins,
    )
