"""What a DICOM object says about its patient, as the master patient index wants it.

The Patient module carries more than the index keys (name, birth date, sex): the birth name, the address, the
phone numbers and, in the Other Patient IDs Sequence, the French national health identifier (INS). This module
reads those and turns them, with the index keys, into a :class:`LocalIdentityInput` for the MPI.

How the INS is recognised (see docs/decisions/0020-archive-feeds-the-mpi.md): an item of the Other Patient IDs
Sequence (0010,1002) whose assigning authority is an INS OID, given either as the Universal Entity ID (0040,0032)
of its Issuer of Patient ID Qualifiers Sequence (0010,0024), or as its Issuer of Patient ID (0010,0021). DICOM has
no attribute for the RNIV identity status (HL7 v2 carries it in PID-32, FHIR in the FR Core identity-reliability
extension), so an INS read from DICOM is recorded as provisional (``PROV``).
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Any

from pydicom.dataset import Dataset
from pydicom.multival import MultiValue

from archipel.platform.identity.intake import LocalIdentityInput

log = logging.getLogger("archipel.archive")

#: Assigning authorities of the INS (ANS): INS-NIR, INS-NIA, and their test (demonstration) counterparts.
INS_OIDS = frozenset(
    {
        "1.2.250.1.213.1.4.8",  # INS-NIR
        "1.2.250.1.213.1.4.9",  # INS-NIA
        "1.2.250.1.213.1.4.10",  # INS-NIR test (demonstration cards)
        "1.2.250.1.213.1.4.11",  # INS-NIA test
    }
)
_BIRTH_NAME = 0x00101005
_ADDRESS = 0x00101040
_PHONES = 0x00102154
_OTHER_IDS = 0x00101002
#: "12 rue des Lilas 29200 Brest": a French postcode followed by the city, at the end of a one-line address.
_POSTCODE_CITY = re.compile(r"(?:^|[\s,])(\d{5})\s+([^\d,]+?)\s*$")


@dataclass(frozen=True)
class PatientExtras:
    """The Patient module's identity attributes beyond name, birth date and sex (empty when absent)."""

    birth_name: str = ""
    address: str = ""
    phone: str = ""
    ins: str = ""


NO_EXTRAS = PatientExtras()


def _value(ds: Dataset, tag: int) -> str:
    elem = ds.get(tag)
    if elem is None or elem.value is None:
        return ""
    value: Any = elem.value
    if isinstance(value, MultiValue | list | tuple):
        value = value[0] if value else ""  # multi-valued: the first value
    if isinstance(value, bytes):
        value = value.decode("latin-1")
    return str(value).strip("\x00 ")


def _ins_of(ds: Dataset) -> str:
    seq = ds.get(_OTHER_IDS)
    if seq is None or not seq.value:
        return ""
    for item in seq.value:
        authorities = {str(item.get("IssuerOfPatientID", "") or "").strip()}
        for qualifier in item.get("IssuerOfPatientIDQualifiersSequence", None) or []:
            authorities.add(str(qualifier.get("UniversalEntityID", "") or "").strip())
        if authorities & INS_OIDS:
            ins = str(item.get("PatientID", "") or "").strip()
            if ins:
                return ins
    return ""


def read_extras(ds: Dataset) -> PatientExtras:
    """The birth name, address, first phone number and INS of ``ds`` (an absent attribute reads as ``""``).

    Most objects carry none of them, so the common case is four dictionary misses. These attributes are
    optional: one that cannot be decoded is left out (and logged) rather than refusing the object.
    """
    if _BIRTH_NAME not in ds and _ADDRESS not in ds and _PHONES not in ds and _OTHER_IDS not in ds:
        return NO_EXTRAS
    values: dict[str, str] = {}
    for name, read in (
        ("birth_name", lambda: _value(ds, _BIRTH_NAME)),
        ("address", lambda: _value(ds, _ADDRESS)),
        ("phone", lambda: _value(ds, _PHONES)),
        ("ins", lambda: _ins_of(ds)),
    ):
        try:
            values[name] = read()
        except Exception as exc:  # any decode error of a malformed optional element
            log.warning("event=patient_attribute_unreadable field=%s error=%s", name, type(exc).__name__)
    return PatientExtras(**values)


def _name_parts(pn: str) -> tuple[str, str]:
    """Family name and given names (given + middle) of a DICOM PN's alphabetic group."""
    alphabetic = pn.split("=", 1)[0]
    parts = [p.strip() for p in alphabetic.split("^")]
    family = parts[0] if parts else ""
    given = " ".join(p for p in parts[1:3] if p)
    return family, given


def _postcode_city(address: str) -> tuple[str, str, str]:
    """``(street, postcode, city)`` of an address: HL7 XAD components if ``^``-separated, else a trailing
    French postcode and city when there is one."""
    if "^" in address:
        parts = [*address.split("^"), "", "", "", "", ""]
        street = " ".join(p.strip() for p in parts[:2] if p.strip())
        return street, parts[4].strip(), parts[2].strip()
    match = _POSTCODE_CITY.search(address)
    if match is None:
        return address, "", ""
    return address[: match.start()].strip(" ,"), match.group(1), match.group(2).strip()


def identity_input(
    issuer: str,
    patient_id: str,
    patient_name: str,
    birth_date: str,
    sex: str,
    extras: PatientExtras = NO_EXTRAS,
) -> LocalIdentityInput:
    """The local identity an object describes. The Patient's Name is the birth name unless a Patient's Birth
    Name is given too, in which case the Patient's Name is the used name. The INS is provisional."""
    family, given = _name_parts(patient_name)
    birth_family, birth_given = _name_parts(extras.birth_name)
    if birth_family:
        birth_name, used_name = birth_family, family if family.upper() != birth_family.upper() else ""
    else:
        birth_name, used_name = family, ""
    street, postcode, city = _postcode_city(extras.address)
    return LocalIdentityInput(
        issuer=issuer,
        local_id=patient_id,
        birth_name=birth_name,
        used_name=used_name,
        given_names=given or birth_given,
        birth_date=birth_date,
        sex=sex,
        address=street,
        postcode=postcode,
        city=city,
        phone=extras.phone,
        ins=extras.ins,
        ins_status="PROV" if extras.ins else "",
    )
