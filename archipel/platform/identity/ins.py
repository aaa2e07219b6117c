"""The INS (Identifiant National de Santé) and its RNIV identity statuses.

The French identity-vigilance framework (RNIV) gives a local identity one of four statuses:

* ``PROV``  provisional: nothing checked yet;
* ``RECUP`` retrieved: the INS and the reference traits came from the INSi teleservice;
* ``VALI``  validated: the traits were checked against an identity document;
* ``QUAL``  qualified: both.

Only a ``QUAL`` identity's INS may be used to link identities, or be written into an outgoing document or
message. Statuses change only through the events of :data:`TRANSITIONS`.
"""

from __future__ import annotations

from enum import StrEnum


class InsStatus(StrEnum):
    """The four RNIV identity statuses."""

    PROV = "PROV"
    RECUP = "RECUP"
    VALI = "VALI"
    QUAL = "QUAL"


class InsEvent(StrEnum):
    """What can happen to an identity's status."""

    #: The INSi teleservice returned the INS and the reference traits.
    INSI_RETRIEVED = "insi-retrieved"
    #: The traits were checked against a high-trust identity document.
    DOCUMENT_CHECKED = "document-checked"
    #: INSi reports the INS invalid or deactivated.
    INS_INVALIDATED = "ins-invalidated"
    #: The document check turned out wrong (forged, other person's document).
    DOCUMENT_REVOKED = "document-revoked"
    #: The identity is doubtful or fictitious: back to provisional.
    DOUBT_RAISED = "doubt-raised"


#: ``(status, event) -> new status``; a pair missing here is an impossible transition.
TRANSITIONS: dict[tuple[InsStatus, InsEvent], InsStatus] = {
    (InsStatus.PROV, InsEvent.INSI_RETRIEVED): InsStatus.RECUP,
    (InsStatus.PROV, InsEvent.DOCUMENT_CHECKED): InsStatus.VALI,
    (InsStatus.RECUP, InsEvent.DOCUMENT_CHECKED): InsStatus.QUAL,
    (InsStatus.RECUP, InsEvent.INS_INVALIDATED): InsStatus.PROV,
    (InsStatus.RECUP, InsEvent.DOUBT_RAISED): InsStatus.PROV,
    (InsStatus.VALI, InsEvent.INSI_RETRIEVED): InsStatus.QUAL,
    (InsStatus.VALI, InsEvent.DOCUMENT_REVOKED): InsStatus.PROV,
    (InsStatus.VALI, InsEvent.DOUBT_RAISED): InsStatus.PROV,
    (InsStatus.QUAL, InsEvent.INS_INVALIDATED): InsStatus.VALI,
    (InsStatus.QUAL, InsEvent.DOCUMENT_REVOKED): InsStatus.RECUP,
    (InsStatus.QUAL, InsEvent.DOUBT_RAISED): InsStatus.PROV,
}


class InsError(ValueError):
    """An INS value or status change that cannot be accepted; the message says why."""


_BY_NAME = {s.value: s for s in InsStatus}


def parse_status(value: str | None) -> InsStatus:
    """The status named by ``value`` (case-insensitive); empty means ``PROV``."""
    text = (value or "").strip().upper()
    if not text:
        return InsStatus.PROV
    try:
        return _BY_NAME[text]
    except KeyError as exc:
        raise InsError(f"unknown INS status {value!r}; expected PROV, RECUP, VALI or QUAL") from exc


def apply(status: InsStatus, event: InsEvent) -> InsStatus:
    """The status after ``event``; :class:`InsError` if RNIV does not allow it from ``status``."""
    try:
        return TRANSITIONS[(status, event)]
    except KeyError:
        raise InsError(f"INS status {status.value} cannot change on event {event.value}") from None


def can_move(old: InsStatus, new: InsStatus) -> bool:
    """Whether some single event takes ``old`` to ``new`` (staying put is always allowed)."""
    return old == new or any(src == old and dst == new for (src, _), dst in TRANSITIONS.items())


def normalize_ins(value: str | None) -> str:
    """A 15-character INS (NIR or NIA with its key), or ``""`` when none is given.

    Corsican department codes ``2A``/``2B`` are accepted. The key must be ``97 - (number mod 97)``; a wrong
    key raises :class:`InsError` naming the value, since a mistyped INS must never link two people.
    """
    text = (value or "").replace(" ", "").replace(".", "").upper()
    if not text:
        return ""
    if len(text) != 15:
        raise InsError(f"INS {value!r} must have 15 characters (13 digits and a 2-digit key)")
    body, key = text[:13], text[13:]
    numeric = body.replace("2A", "19", 1) if body[5:7] == "2A" else body
    numeric = numeric.replace("2B", "18", 1) if body[5:7] == "2B" else numeric
    if not numeric.isdigit() or not key.isdigit():
        raise InsError(f"INS {value!r} has characters that are not digits")
    if body[0] not in "12378":
        raise InsError(f"INS {value!r} must start with 1, 2, 3, 7 or 8")
    if 97 - int(numeric) % 97 != int(key):
        raise InsError(f"INS {value!r} has a wrong control key")
    return text


def ins_key(body13: str) -> str:
    """The two-digit control key of a 13-character NIR body (used to make valid test INS)."""
    numeric = body13.replace("2A", "19", 1).replace("2B", "18", 1)
    return f"{97 - int(numeric) % 97:02d}"


def usable_for_linking(ins: str, status: InsStatus | str) -> bool:
    """Only a qualified INS may link two identities."""
    return bool(ins) and status == InsStatus.QUAL


def outgoing_ins(ins: str, status: InsStatus | str) -> str | None:
    """The INS to write into an outgoing document or message: only a qualified one, else ``None``."""
    return ins if usable_for_linking(ins, status) else None
