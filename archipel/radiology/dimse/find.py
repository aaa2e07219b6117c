"""C-FIND SCP: patient root and study root, all levels, over the shared query engine.

The calling node's read scope decides which studies can match, inside the SQL: its site's (a regional consumer:
every site's, except patients who refuse sharing and studies hidden from professionals or labelled sensitive). Each
C-FIND is audited once as a query. Responses carry the requested keys (zero length where the archive has no value),
the Query/Retrieve Level and our Retrieve AE Title. Keys the archive cannot match on are returned empty and the
matches are sent with the 0xFF01 "optional keys not supported" pending status, as PS3.4 C.4.1.1.4 allows.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass

from pydicom.dataset import Dataset
from pynetdicom import evt

from archipel.platform import access, access_facts, audit
from archipel.platform.runtime import Runtime
from archipel.radiology import matching
from archipel.radiology.dimse.nodes import NodeRegistry
from archipel.radiology.query import BY_KEYWORD, Level, MatchError, Query, iter_search, to_dataset

log = logging.getLogger("archipel.dimse")

PATIENT_ROOT_FIND = "1.2.840.10008.5.1.4.1.2.1.1"
STUDY_ROOT_FIND = "1.2.840.10008.5.1.4.1.2.2.1"
#: The levels each information model allows.
MODEL_LEVELS = {
    PATIENT_ROOT_FIND: (Level.PATIENT, Level.STUDY, Level.SERIES, Level.IMAGE),
    STUDY_ROOT_FIND: (Level.STUDY, Level.SERIES, Level.IMAGE),
}
PENDING = 0xFF00
PENDING_OPTIONAL_KEYS_UNSUPPORTED = 0xFF01
SUCCESS = 0x0000
CANCELLED = 0xFE00
IDENTIFIER_DOES_NOT_MATCH = 0xA900
UNABLE_TO_PROCESS = 0xC000
NOT_AUTHORIZED = 0x0124
#: Rows fetched from the index cursor at a time; a cancel is noticed between two responses.
BATCH = 200
#: Attributes we add to every response whatever the identifier asks.
_ALWAYS = {"QueryRetrieveLevel", "SpecificCharacterSet", "RetrieveAETitle"}


class IdentifierError(ValueError):
    """The identifier does not fit the SOP class or cannot be read; the message says why."""


@dataclass(frozen=True)
class FindRequest:
    """A C-FIND identifier understood: the query, the keys to return, and the keys we cannot match."""

    query: Query
    returns: list[str]
    unsupported: list[str]


def read_identifier(identifier: Dataset, sop_class: str) -> FindRequest:
    """Turn a C-FIND identifier into a query; :class:`IdentifierError` names what does not fit.

    Keys below the query level, or that the archive does not index, are returned empty and do not restrict
    the matches.
    """
    levels = MODEL_LEVELS.get(sop_class)
    if levels is None:
        raise IdentifierError(f"SOP class {sop_class} is not a supported C-FIND information model")
    raw_level = str(identifier.get("QueryRetrieveLevel", "")).strip().upper()
    if raw_level not in Level.__members__:
        raise IdentifierError(f"QueryRetrieveLevel {raw_level!r} is not PATIENT, STUDY, SERIES or IMAGE")
    level = Level(raw_level)
    if level not in levels:
        raise IdentifierError(f"QueryRetrieveLevel {level.value} is not allowed in this information model")
    keys: dict[str, str] = {}
    returns: list[str] = []
    unsupported: list[str] = []
    for elem in identifier:
        keyword = elem.keyword
        if not keyword or elem.tag.group == 0x0000 or keyword in _ALWAYS:
            continue
        if elem.VR == "SQ":
            returns.append(keyword)
            continue
        returns.append(keyword)
        value = _value_text(elem.value)
        attr = BY_KEYWORD.get(keyword)
        if attr is None or attr.level.depth > level.depth or not attr.matchable:
            if not matching.is_universal(value):
                unsupported.append(keyword)
            continue
        keys[keyword] = value
    query = Query(level=level, keys=keys, combined_datetime=False, returns=frozenset(returns))
    try:
        query.check()
    except MatchError as exc:
        raise IdentifierError(str(exc)) from exc
    return FindRequest(query=query, returns=returns, unsupported=unsupported)


def _value_text(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, list | tuple) or type(value).__name__ == "MultiValue":
        return "\\".join(str(v) for v in value)  # type: ignore[attr-defined]
    return str(value)


def _response(row: dict[str, object], request: FindRequest, aet: str) -> Dataset:
    ds = to_dataset(row, request.returns)
    ds.QueryRetrieveLevel = request.query.level.value
    ds.RetrieveAETitle = aet
    return ds


def handle_find(
    event: evt.Event, rt: Runtime, nodes: NodeRegistry
) -> Iterator[tuple[int | Dataset, Dataset | None]]:
    """EVT_C_FIND: yield pending matches, then the final status."""
    requestor = event.assoc.requestor
    calling = str(requestor.ae_title).strip()
    principal = nodes.principal(event.assoc)
    sop_class = str(event.request.AffectedSOPClassUID)
    _resource, facts = access_facts.load(rt.db, principal)
    try:
        access.check(
            rt.db,
            principal,
            access.SEARCH,
            access.Resource(kind="study"),
            event_type=audit.QUERY,
            source=f"{calling}@{requestor.address}",
            facts=facts,
        )
    except access.AccessDenied as exc:
        log.warning("event=find_refused calling_ae=%s reason=%s", calling, exc.reason)
        yield NOT_AUTHORIZED, None
        return
    try:
        request = read_identifier(event.identifier, sop_class)
    except IdentifierError as exc:
        log.warning("event=find_bad_identifier calling_ae=%s sop_class=%s reason=%s", calling, sop_class, exc)
        yield _failure(IDENTIFIER_DOES_NOT_MATCH, str(exc)), None
        return
    except Exception as exc:
        log.warning("event=find_unreadable_identifier calling_ae=%s error=%s", calling, exc)
        yield _failure(UNABLE_TO_PROCESS, f"the identifier cannot be decoded: {exc}"), None
        return
    query = request.query
    query.scope = access.read_scope(principal, facts)
    pending = PENDING_OPTIONAL_KEYS_UNSUPPORTED if request.unsupported else PENDING
    aet = rt.settings.ae_title
    sent = 0
    log.info(
        "event=find_started calling_ae=%s level=%s keys=%s unsupported=%s",
        calling,
        query.level.value,
        ",".join(sorted(query.keys)),
        ",".join(request.unsupported),
    )
    try:
        for rows in iter_search(rt.db, query, BATCH):
            for row in rows:
                if event.is_cancelled:
                    log.info("event=find_cancelled calling_ae=%s sent=%d", calling, sent)
                    yield CANCELLED, None
                    return
                yield pending, _response(row, request, aet)
                sent += 1
    except Exception:
        log.exception("event=find_failed calling_ae=%s level=%s sent=%d", calling, query.level.value, sent)
        yield _failure(UNABLE_TO_PROCESS, "the archive could not complete the query"), None
        return
    log.info("event=find_done calling_ae=%s level=%s matches=%d", calling, query.level.value, sent)
    yield SUCCESS, None


def _failure(code: int, comment: str) -> Dataset:
    """A failure status with an Error Comment (at most 64 characters, as LO allows)."""
    ds = Dataset()
    ds.Status = code
    ds.ErrorComment = comment[:64]
    return ds
