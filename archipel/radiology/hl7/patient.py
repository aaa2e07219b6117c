"""A PID segment as the MPI's local identity: the site's patient ID, names, birth date, sex, INS, address.

PID-3 carries several identifiers: the site's own (type ``PI``, or the first that is not an INS) is the local
ID; the INS is the one whose assigning authority is the ASIP-Santé NIR/NIA OID (or whose type is ``INS``).
PID-5 repetitions of type ``L`` give the birth name and first names, type ``D`` the used name. The RNIV status
comes from PID-32 (``PROV``/``RECUP``/``VALI``/``QUAL``; ``DOUTE`` and ``FICTI`` are provisional).
"""

from __future__ import annotations

from typing import Any

import hl7

from archipel.platform.identity.intake import LocalIdentityInput
from archipel.radiology.hl7.messages import REQUIRED_FIELD_MISSING, Refused, repetitions, value

#: OIDs of the INS assigning authorities: NIR, then NIA (temporary numbers).
INS_OIDS = frozenset({"1.2.250.1.213.1.4.8", "1.2.250.1.213.1.4.9", "1.2.250.1.213.1.4.10"})
_STATUSES = {
    "PROV": "PROV",
    "RECUP": "RECUP",
    "VALI": "VALI",
    "QUAL": "QUAL",
    "DOUTE": "PROV",
    "FICTI": "PROV",
}


def _is_ins(msg: hl7.Message, segment: Any, field: int, rep: int) -> bool:
    kind = value(msg, segment, field, rep, 5).upper()
    authority = value(msg, segment, field, rep, 4, 1).upper()
    oid = value(msg, segment, field, rep, 4, 2)
    return kind in ("INS", "INS-NIR", "INS-NIA") or oid in INS_OIDS or authority.startswith("ASIP-SANTE-INS")


def identifiers(msg: hl7.Message, segment: Any, field: int = 3) -> tuple[str, str]:
    """``(local ID, INS)`` named in a CX field (PID-3, MRG-1); either may be empty. The local ID is the
    ``PI`` repetition, else the first that is not an INS."""
    local, ins, fallback = "", "", ""
    for rep in range(1, repetitions(segment, field) + 1):
        number = value(msg, segment, field, rep, 1)
        if not number:
            continue
        if _is_ins(msg, segment, field, rep):
            ins = ins or number
        elif value(msg, segment, field, rep, 5).upper() == "PI":
            local = local or number
        else:
            fallback = fallback or number
    return local or fallback, ins


def _names(msg: hl7.Message, pid: Any) -> tuple[str, str, str]:
    birth, used, given = "", "", ""
    for rep in range(1, repetitions(pid, 5) + 1):
        family = value(msg, pid, 5, rep, 1)
        kind = value(msg, pid, 5, rep, 7).upper()
        first_names = " ".join(n for n in (value(msg, pid, 5, rep, 2), value(msg, pid, 5, rep, 3)) if n)
        if kind in ("L", "") and not birth:
            birth, given = family, first_names or given
        elif kind == "D" and not used:
            used, given = family, given or first_names
    return birth, used, given


def _status(msg: hl7.Message, pid: Any) -> str:
    for rep in range(1, repetitions(pid, 32) + 1):
        code = value(msg, pid, 32, rep).upper()
        if code in _STATUSES:
            return _STATUSES[code]
    return ""


def identity_of(msg: hl7.Message, pid: Any, issuer: str) -> LocalIdentityInput:
    """The local identity a PID describes at ``issuer``; :class:`Refused` when PID-3 names no patient ID."""
    local, ins = identifiers(msg, pid)
    if not local:
        raise Refused("PID-3 names no patient identifier of the site", REQUIRED_FIELD_MISSING)
    birth, used, given = _names(msg, pid)
    street = " ".join(p for p in (value(msg, pid, 11, 1, 1), value(msg, pid, 11, 1, 2)) if p)
    phone = value(msg, pid, 13, 1, 1) or value(msg, pid, 13, 1, 12)
    return LocalIdentityInput(
        issuer=issuer,
        local_id=local,
        birth_name=birth,
        used_name=used,
        given_names=given,
        birth_date=value(msg, pid, 7)[:8],
        sex=value(msg, pid, 8),
        birth_place=value(msg, pid, 23),
        address=street,
        postcode=value(msg, pid, 11, 1, 5),
        city=value(msg, pid, 11, 1, 3),
        phone=phone,
        ins=ins,
        ins_status=_status(msg, pid) if ins else "",
    )
