"""Reading an HL7 v2 message and building its acknowledgement.

A message arrives as bytes in the character set its MSH-18 names (HL7 table 0211). :func:`parse` decodes it
by that name and parses it with the ``hl7`` library; anything that cannot be read raises :class:`Rejected`
(acknowledged ``AR``). A handler that understood a message but refuses it raises :class:`Refused` (``AE``).
:func:`ack` builds the answer, with the error text in MSA-3 and an ERR segment.
"""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass
from typing import Any

import hl7

#: HL7 table 0211 names and the Python codecs they mean. Absent MSH-18 is read as UTF-8 (a superset of ASCII,
#: the standard's default), which is what most RIS send today.
CHARSETS = {
    "": "utf-8",
    "ASCII": "ascii",
    "8859/1": "latin-1",
    "8859/15": "iso8859-15",
    "UNICODE UTF-8": "utf-8",
    "UTF-8": "utf-8",
}

#: HL7 table 0357 error codes we answer with.
SEGMENT_SEQUENCE = "100"
REQUIRED_FIELD_MISSING = "101"
DATA_TYPE_ERROR = "102"
TABLE_VALUE_NOT_FOUND = "103"
UNSUPPORTED_MESSAGE_TYPE = "200"
UNSUPPORTED_EVENT = "201"
UNKNOWN_KEY = "204"
APPLICATION_ERROR = "207"


class MessageError(Exception):
    """A message we do not apply; ``code`` is its acknowledgement code, ``error`` an HL7 table 0357 code."""

    code = "AE"

    def __init__(self, reason: str, error: str = APPLICATION_ERROR) -> None:
        super().__init__(reason)
        self.reason = reason
        self.error = error


class Rejected(MessageError):
    """A message we cannot read (no MSH, unknown character set, broken structure): ``AR``."""

    code = "AR"


class Refused(MessageError):
    """A message we read but refuse (unknown sender or patient, missing field...): ``AE``."""

    code = "AE"


@dataclass(frozen=True)
class Header:
    """What MSH says about a message: who sent it, its control id, type and trigger, version and charset."""

    sending_application: str
    sending_facility: str
    receiving_application: str
    receiving_facility: str
    control_id: str
    message_type: str
    trigger: str
    version: str
    charset: str

    @property
    def kind(self) -> str:
        """``TYPE^TRIGGER``, e.g. ``ADT^A01``."""
        return f"{self.message_type}^{self.trigger}"


@dataclass(frozen=True)
class Parsed:
    """A decoded, parsed message."""

    header: Header
    message: hl7.Message


def _msh_fields(raw: bytes) -> list[str]:
    """The raw MSH fields (MSH-1 is the separator itself), read without knowing the charset yet: MSH-18 is
    what tells it, and the header itself is ASCII in practice."""
    first = raw.lstrip().split(b"\r", 1)[0].split(b"\n", 1)[0].decode("latin-1")
    if not first.startswith("MSH") or len(first) < 8:
        raise Rejected("the message does not begin with an MSH segment", SEGMENT_SEQUENCE)
    sep = first[3]
    return ["MSH", sep, *first[4:].split(sep)]


def header_fields(raw: bytes) -> dict[str, str]:
    """Sender, control id and type of a raw message as far as they can be read (for a dead letter of a
    message that cannot be parsed); empty strings for what cannot."""
    try:
        f = _msh_fields(raw)
    except Rejected:
        return {"facility": "", "application": "", "control_id": "", "message_type": ""}
    comp = f[2][:1] if len(f) > 2 else "^"

    def at(n: int) -> str:
        return f[n].split(comp)[0][:64] if len(f) > n else ""

    kind = "^".join(f[9].split(comp)[:2])[:16] if len(f) > 9 else ""
    return {"facility": at(4), "application": at(3), "control_id": at(10), "message_type": kind}


def charset_of(raw: bytes) -> str:
    """The Python codec named by the message's MSH-18; :class:`Rejected` for a character set we do not know."""
    f = _msh_fields(raw)
    comp = f[2][:1] if len(f) > 2 else "^"
    name = f[18].split(comp)[0].strip().upper() if len(f) > 18 else ""
    codec = CHARSETS.get(name)
    if codec is None:
        raise Rejected(f"character set {name!r} (MSH-18) is not supported", TABLE_VALUE_NOT_FOUND)
    return codec


def parse(raw: bytes) -> Parsed:
    """Decode ``raw`` by its MSH-18 and parse it; :class:`Rejected` says what makes it unreadable."""
    codec = charset_of(raw)
    try:
        text = raw.decode(codec)
    except UnicodeDecodeError as exc:
        raise Rejected(
            f"byte {exc.start} is not valid {codec} (the character set MSH-18 declares)", DATA_TYPE_ERROR
        ) from exc
    text = text.strip().replace("\r\n", "\r").replace("\n", "\r")
    try:
        msg = hl7.parse(text)
        msh = msg.segment("MSH")
    except Exception as exc:  # the library raises bare errors on broken structure
        raise Rejected(f"the message cannot be parsed: {exc}", SEGMENT_SEQUENCE) from exc
    header = Header(
        sending_application=value(msg, msh, 3),
        sending_facility=value(msg, msh, 4),
        receiving_application=value(msg, msh, 5),
        receiving_facility=value(msg, msh, 6),
        control_id=value(msg, msh, 10),
        message_type=value(msg, msh, 9, comp=1).upper(),
        trigger=value(msg, msh, 9, comp=2).upper(),
        version=value(msg, msh, 12),
        charset=codec,
    )
    if not header.control_id:
        raise Rejected("MSH-10 (message control id) is empty", REQUIRED_FIELD_MISSING)
    if not header.message_type:
        raise Rejected("MSH-9 (message type) is empty", REQUIRED_FIELD_MISSING)
    return Parsed(header, msg)


def value(msg: hl7.Message, segment: Any, field: int, rep: int = 1, comp: int = 1, sub: int = 1) -> str:
    """One unescaped value of ``segment`` (1-based field, repetition, component, subcomponent), ``""`` when
    the message does not carry it."""
    try:
        node: Any = segment(field)
        for depth, index in enumerate((rep, comp, sub)):
            if isinstance(node, str):
                # A level without separators is a plain string: it is the first item of every deeper level.
                if any(i != 1 for i in (rep, comp, sub)[depth:]):
                    return ""
                break
            node = node(index)
    except (IndexError, KeyError, TypeError):
        return ""
    text = str(node)
    return str(msg.unescape(text)).strip() if text else ""


def repetitions(segment: Any, field: int) -> int:
    """How many repetitions ``field`` of ``segment`` has (0 when absent)."""
    try:
        node = segment(field)
    except IndexError:
        return 0
    return 1 if isinstance(node, str) else len(node)


def segments(msg: hl7.Message, name: str) -> list[Any]:
    """Every ``name`` segment of ``msg``, in order (empty when there is none)."""
    try:
        return list(msg.segments(name))
    except KeyError:
        return []


def first(msg: hl7.Message, name: str, required: bool = True) -> Any:
    """The first ``name`` segment; :class:`Refused` when a required one is missing."""
    found = segments(msg, name)
    if not found:
        if required:
            raise Refused(f"the message has no {name} segment", SEGMENT_SEQUENCE)
        return None
    return found[0]


def _escape(text: str) -> str:
    out = text.replace("\\", "\\E\\")
    for ch, esc in (("|", "\\F\\"), ("^", "\\S\\"), ("&", "\\T\\"), ("~", "\\R\\")):
        out = out.replace(ch, esc)
    return out.replace("\r", " ").replace("\n", " ")


_CHARSET_NAMES = {"ascii": "ASCII", "latin-1": "8859/1", "iso8859-15": "8859/15", "utf-8": "UNICODE UTF-8"}
_ids = itertools.count(1)


def _control_id() -> str:
    return f"ACK{int(time.time() * 1000)}{next(_ids) % 1000:03d}"


def ack(
    header: Header | None,
    code: str,
    text: str = "",
    error: str = "",
    *,
    raw_fields: dict[str, str] | None = None,
) -> bytes:
    """The acknowledgement of a message: ``code`` AA/AE/AR, the error in MSA-3 and an ERR segment.

    ``header`` is the message's; for one that could not be parsed, ``raw_fields`` (:func:`header_fields`)
    give what could be read of its MSH. Encoded in the message's own character set.
    """
    if header is not None:
        app, fac, to_app, to_fac = (
            header.receiving_application or "ARCHIPEL",
            header.receiving_facility,
            header.sending_application,
            header.sending_facility,
        )
        control, trigger, version, codec = header.control_id, header.trigger, header.version, header.charset
    else:
        f = raw_fields or {}
        app, fac, to_app, to_fac = "ARCHIPEL", "", f.get("application", ""), f.get("facility", "")
        control, trigger, version, codec = f.get("control_id", ""), "", "2.5", "utf-8"
    now = time.strftime("%Y%m%d%H%M%S", time.gmtime())
    msh = "|".join(
        [
            "MSH",
            "^~\\&",
            _escape(app),
            _escape(fac),
            _escape(to_app),
            _escape(to_fac),
            now,
            "",
            f"ACK^{_escape(trigger)}^ACK",
            _control_id(),
            "P",
            _escape(version or "2.5"),
        ]
    )
    msh += "||||||" + _CHARSET_NAMES.get(codec, "UNICODE UTF-8")
    lines = [msh, "|".join(["MSA", code, _escape(control), _escape(text[:80])])]
    if code != "AA":
        # ERR-3 the HL7 error code (table 0357), ERR-4 the severity, ERR-8 the text for the RIS's user.
        lines.append(f"ERR|||{error or APPLICATION_ERROR}^^HL70357|E||||{_escape(text)}")
    return "\r".join(lines).encode(codec, errors="replace") + b"\r"
