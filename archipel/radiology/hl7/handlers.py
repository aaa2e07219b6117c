"""What each accepted message does: ADT feeds the MPI, A40 asks it for a merge, orders and reports are handed to
their modules (:mod:`archipel.radiology.hl7.orders`, :mod:`archipel.radiology.hl7.results`).

A handler takes the parsed message and its sender, applies it, and returns an :class:`Outcome` (what it touched,
without names) or raises :class:`Refused`. The MPI is fed exactly as the DICOM archive feeds it
(:func:`archipel.platform.identity.feed.update_identities`): what the RIS leaves empty never erases what is known.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from archipel.platform.authn import Principal
from archipel.platform.db import utcnow
from archipel.platform.identity import review, store
from archipel.platform.identity.feed import update_identities
from archipel.platform.identity.intake import IdentityError
from archipel.platform.identity.models import LocalIdentity, NoLink, ReviewItem
from archipel.platform.identity.service import master_of
from archipel.platform.runtime import Runtime
from archipel.radiology.hl7.messages import (
    DATA_TYPE_ERROR,
    REQUIRED_FIELD_MISSING,
    UNSUPPORTED_EVENT,
    UNSUPPORTED_MESSAGE_TYPE,
    Parsed,
    Refused,
    first,
)
from archipel.radiology.hl7.patient import identifiers, identity_of

log = logging.getLogger("archipel.hl7")


@dataclass(frozen=True)
class Sender:
    """Who sent a message: the site its patient IDs are of, and the principal it acts as (a node of that site)."""

    site: str
    principal: Principal
    peer: str = ""


@dataclass(frozen=True)
class Outcome:
    """What an applied message did: a short description (no patient names), and the patient it is about."""

    text: str
    patient: str = ""
    master: int | None = None


Handler = Callable[[Runtime, Parsed, Sender], Outcome]


def feed_patient(rt: Runtime, parsed: Parsed, sender: Sender) -> Outcome:
    """ADT^A01/A04/A08 (and any message's PID): create or update the patient's identity at the sender's site."""
    db = rt.db
    inp = identity_of(parsed.message, first(parsed.message, "PID"), sender.site)
    try:
        outcomes = update_identities(db, [inp])
    except IdentityError as exc:
        raise Refused(f"the MPI refuses the patient: {exc}", DATA_TYPE_ERROR) from exc
    patient = f"{inp.issuer}/{inp.local_id}"
    if not outcomes:
        return Outcome("identity unchanged", patient, master_of(db, inp.issuer, inp.local_id))
    o = outcomes[0]
    verb = "created" if o.created else "updated"
    return Outcome(f"identity {verb}, link {o.status}", patient, o.master_id)


#: Who decides merges the RIS asked for when the MPI's hard rules settle them (same qualified INS).
MERGE_ACTOR = "hl7-merge"


def merge_patients(rt: Runtime, parsed: Parsed, sender: Sender) -> Outcome:
    """ADT^A40: the site says the prior patient (MRG-1) is the surviving one (PID-3).

    Never a blind merge: the surviving identity is fed to the MPI, then the prior one is put in the identity
    officers' review queue as a candidate for the survivor's master, with the MPI's score and per-field evidence
    for the pair (the prior identity against the survivor's master, as the linker scores a candidate). It is
    linked at once only when the MPI's hard rules settle it: both already on one master, or both with the same
    qualified INS. Two different qualified INS, or an officer's earlier "different people" decision, refuse the
    merge (``AE``).
    """
    msg = parsed.message
    mrg = first(msg, "MRG")
    prior, _ins = identifiers(msg, mrg, 1)
    if not prior:
        raise Refused("MRG-1 names no prior patient identifier", REQUIRED_FIELD_MISSING)
    db = rt.db
    survivor = feed_patient(rt, parsed, sender)
    surviving_id = survivor.patient.split("/", 1)[1]
    if prior == surviving_id:
        raise Refused(f"MRG-1 and PID-3 name the same patient {prior}", DATA_TYPE_ERROR)
    with store.process_lock, db.write() as s:
        store.lock_mpi(s)
        rows = {
            r.local_id: r
            for r in s.execute(
                select(LocalIdentity).where(
                    LocalIdentity.issuer == sender.site, LocalIdentity.local_id.in_([prior, surviving_id])
                )
            ).scalars()
        }
        old, new = rows.get(prior), rows[surviving_id]
        if old is None:
            return Outcome(
                f"merge: prior patient {sender.site}/{prior} unknown, nothing to merge", survivor.patient
            )
        if old.master_id == new.master_id:
            return Outcome("merge: already one master patient", survivor.patient, new.master_id)
        qualified = {r.ins for r in (old, new) if r.ins and r.ins_status == "QUAL"}
        if len(qualified) > 1:
            raise Refused(
                f"merge of {sender.site}/{prior} refused: the two identities have different qualified INS",
                DATA_TYPE_ERROR,
            )
        members = list(
            s.execute(select(LocalIdentity.id).where(LocalIdentity.master_id == new.master_id)).scalars()
        )
        banned = s.execute(
            select(NoLink.id).where(
                ((NoLink.a_pk == old.id) & NoLink.b_pk.in_(members))
                | ((NoLink.b_pk == old.id) & NoLink.a_pk.in_(members))
            )
        ).first()
        if banned is not None:
            raise Refused(
                f"merge of {sender.site}/{prior} refused: an identity officer declared them different people",
                DATA_TYPE_ERROR,
            )
        same_ins = len(qualified) == 1 and old.ins == new.ins and old.ins_status == new.ins_status == "QUAL"
        reason = f"HL7 ADT^A40 from {sender.site}: prior patient {prior} merged into {surviving_id}"
        if not same_ins:
            # The officer decides with the MPI's own evidence, as for the candidates the linker finds.
            score, contributions = store.index_for(s).evidence(store.traits_of(old), new.master_id)
            if score is not None:
                reason += f"; MPI score {score:.1f} bits"
            _queue_review(s, old.id, new.master_id, reason, score, contributions)
            log.info("event=hl7_merge_review issuer=%s score=%s", sender.site, score)
            return Outcome("merge: queued for identity review", survivor.patient, new.master_id)
        old_pk, new_pk, old_master, target = old.id, new.id, old.master_id, new.master_id
    review.link(
        db, Principal(MERGE_ACTOR, "identity-officer", kind="system"), sender.site, prior, target, reason
    )
    with store.process_lock, db.write() as s:
        # The survivor's own doubt about the prior's master is settled by the same link.
        s.execute(
            update(ReviewItem)
            .where(
                ReviewItem.local_pk == new_pk,
                ReviewItem.candidate_master_id == old_master,
                ReviewItem.state == "open",
            )
            .values(state="resolved", resolution="linked", resolved_by=MERGE_ACTOR, resolved_at=utcnow())
        )
    log.info("event=hl7_merge_linked issuer=%s pk=%d", sender.site, old_pk)
    return Outcome("merge: linked (same qualified INS)", survivor.patient, target)


def _queue_review(
    s: Session,
    local_pk: int,
    candidate: int,
    reason: str,
    score: float | None,
    contributions: dict[str, float],
) -> None:
    exists = s.execute(
        select(ReviewItem.id).where(
            ReviewItem.local_pk == local_pk,
            ReviewItem.candidate_master_id == candidate,
            ReviewItem.state == "open",
        )
    ).first()
    if exists is None:
        s.add(
            ReviewItem(
                local_pk=local_pk,
                candidate_master_id=candidate,
                score=score,
                contributions=json.dumps(contributions),
                reason=reason,
                state="open",
                created_at=utcnow(),
            )
        )


_HANDLERS: dict[str, Handler] = {
    "ADT^A01": feed_patient,
    "ADT^A04": feed_patient,
    "ADT^A08": feed_patient,
    # Pre-admission, and the "person" variants some RIS send for outpatients: the same feed.
    "ADT^A05": feed_patient,
    "ADT^A28": feed_patient,
    "ADT^A31": feed_patient,
    "ADT^A40": merge_patients,
}


def register(kind: str, handler: Handler) -> None:
    """Handle messages of ``kind`` (``TYPE^TRIGGER``) with ``handler`` (orders and results register here)."""
    _HANDLERS[kind] = handler


def handler_for(kind: str) -> Handler:
    """The handler of ``kind``; :class:`Refused` naming the types we accept for any other."""
    found = _HANDLERS.get(kind)
    if found is not None:
        return found
    accepted = ", ".join(sorted(_HANDLERS))
    types = {k.split("^")[0] for k in _HANDLERS}
    error = UNSUPPORTED_EVENT if kind.split("^")[0] in types else UNSUPPORTED_MESSAGE_TYPE
    raise Refused(f"message type {kind} is not accepted; we accept {accepted}", error)
