"""Identities as they come in: the input and outcome types, validation, issuers, and their comparison traits.

Every way in (``register``, CSV import, the archive) goes through :func:`clean`: a malformed identity is refused
with a reason naming the field and value, before anything is written.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

from sqlalchemy import select
from sqlalchemy.orm import Session

from archipel.platform.db import utcnow
from archipel.platform.identity.ins import (
    InsError,
    InsStatus,
    normalize_ins,
    parse_status,
    usable_for_linking,
)
from archipel.platform.identity.models import IdentityIssuer
from archipel.platform.identity.normalize import (
    DateError,
    Traits,
    code_key,
    make_traits,
    parse_birth_date,
    parse_sex,
)

_MAX = {
    "local_id": 64,
    "birth_name": 200,
    "used_name": 200,
    "given_names": 200,
    "birth_place": 16,
    "address": 400,
    "postcode": 16,
    "city": 200,
    "phone": 32,
}


class IdentityError(ValueError):
    """A local identity or an MPI action that cannot be accepted; the message says why, nothing changed."""


class UnknownIssuer(IdentityError):
    """The issuer is not a registered site (``archipel identity issuers add``)."""


class IdentityNotFound(IdentityError):
    """The local identity, master, review item or merge named does not exist."""


class IdentityConflict(IdentityError):
    """The action does not fit the identity's current state (already linked, already undone, declared
    different...); the message says what to do first."""


@dataclass(frozen=True)
class LocalIdentityInput:
    """A local identity as a site sends it: every field but ``issuer`` and ``local_id`` may be empty."""

    issuer: str
    local_id: str
    birth_name: str = ""
    used_name: str = ""
    given_names: str = ""
    birth_date: str = ""
    sex: str = ""
    birth_place: str = ""
    address: str = ""
    postcode: str = ""
    city: str = ""
    phone: str = ""
    ins: str = ""
    ins_status: str = ""


@dataclass(frozen=True)
class LinkOutcome:
    """Where a registered identity now stands: its master, and ``linked`` / ``review`` / ``new`` / ``manual``."""

    issuer: str
    local_id: str
    master_id: int
    status: str
    score: float | None
    created: bool


FIELD_NAMES = tuple(f.name for f in fields(LocalIdentityInput))
_LIMITS = tuple((name, _MAX.get(name, 64)) for name in FIELD_NAMES)


def clean(inp: LocalIdentityInput, *, require_name: bool = True) -> dict[str, str]:
    """The validated, normalised column values of ``inp``; :class:`IdentityError` says what is wrong.

    ``require_name=False`` accepts an identity with neither a name nor an INS (an object's patient must be
    linked even when its sender left the name empty: it gets a master of its own).
    """
    raw = [getattr(inp, name) for name in FIELD_NAMES]
    try:
        text = "|".join(raw)
    except TypeError:
        for name, v in zip(FIELD_NAMES, raw, strict=True):
            if v is not None and not isinstance(v, str):
                raise IdentityError(f"{name} must be text, not {type(v).__name__}") from None
        raw = [v or "" for v in raw]
        text = "|".join(raw)
    if not text.isprintable():
        bad = next(n for n, v in zip(FIELD_NAMES, raw, strict=True) if not v.isprintable())
        raise IdentityError(f"{bad} contains control characters")
    values = {name: v.strip() for name, v in zip(FIELD_NAMES, raw, strict=True)}
    for name, limit in _LIMITS:
        if len(values[name]) > limit:
            raise IdentityError(f"{name} is longer than {limit} characters")
    if not values["issuer"]:
        raise IdentityError("issuer is required")
    if not values["local_id"]:
        raise IdentityError("local_id is required")
    try:
        values["birth_date"] = parse_birth_date(values["birth_date"])
        values["sex"] = parse_sex(values["sex"])
        values["ins"] = normalize_ins(values["ins"])
        status = parse_status(values["ins_status"])
    except (DateError, InsError, ValueError) as exc:
        raise IdentityError(str(exc)) from exc
    if status in (InsStatus.RECUP, InsStatus.QUAL) and not values["ins"]:
        raise IdentityError(f"INS status {status.value} requires an INS")
    values["ins_status"] = status.value
    values["birth_place"] = code_key(values["birth_place"])
    if require_name and not (
        values["birth_name"] or values["used_name"] or values["given_names"] or values["ins"]
    ):
        raise IdentityError("an identity needs at least a name or an INS")
    return values


def known_issuers(s: Session) -> set[str]:
    """Codes of the registered issuers."""
    return set(s.execute(select(IdentityIssuer.code)).scalars())


def add_issuer(s: Session, code: str, name: str = "") -> None:
    """Register ``code`` as an issuer of local patient IDs (idempotent)."""
    code = code.strip()
    if not code or len(code) > 64 or any(ord(c) < 33 for c in code):
        raise IdentityError("an issuer code has 1 to 64 visible characters and no spaces")
    if s.get(IdentityIssuer, code) is None:
        s.add(IdentityIssuer(code=code, name=name, created_at=utcnow()))
        s.flush()


def to_traits(v: dict[str, str]) -> Traits:
    """The comparison traits of values returned by :func:`clean`."""
    return make_traits(
        v["issuer"],
        v["local_id"],
        birth_name=v["birth_name"],
        used_name=v["used_name"],
        given_names=v["given_names"],
        birth_date=v["birth_date"],
        sex=v["sex"],
        birth_place=v["birth_place"],
        postcode=v["postcode"],
        city=v["city"],
        phone=v["phone"],
        qualified_ins=v["ins"] if usable_for_linking(v["ins"], v["ins_status"]) else "",
        any_ins=v["ins"],
    )


def traits_of_input(inp: LocalIdentityInput) -> Traits:
    """The comparison traits of a validated input (what the linker would compare)."""
    return to_traits(clean(inp))
