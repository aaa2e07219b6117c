"""Second opinions (tele-expertise): a professional asks a named specialist (a user) or a reference centre (a
site) about a patient's study; the expert answers with a signed document of the registry.

- :func:`ask` records the question and tells the expert (or every radiologist and pathologist of the centre)
  in the inbox; a named specialist gets a reading assignment on the patient at once, so they can open the study;
- :func:`take` lets one expert of the addressed centre take the question (and the assignment) for themselves;
- :func:`answer` registers the answer as a final document linked to the study, and tells the asker. Answering
  twice is 409.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from archipel.platform import access, access_facts, audit, care, inbox
from archipel.platform.authn import Principal, User, find_user
from archipel.platform.runtime import Runtime
from archipel.radiology import documents
from archipel.radiology.telerad_models import ANSWERED, ASKED, SecondOpinion, TeleradError

log = logging.getLogger("archipel.telerad")

FOLLOW_UP = timedelta(days=30)
KIND = "second-opinion"
#: LOINC 11488-4: Consult note.
ANSWER_TYPE, ANSWER_DISPLAY = "11488-4", "Consult note"


def resource(op: SecondOpinion) -> access.Resource:
    """The policy resource of a second-opinion request."""
    return access.Resource(
        kind=access.SECOND_OPINION,
        site=op.issuer,
        patient=op.patient,
        master=op.master_id,
        ident=f"second-opinion:{op.id}",
    )


def get(s: Session, opinion_id: int) -> SecondOpinion:
    """The request, or 404."""
    op = s.get(SecondOpinion, opinion_id)
    if op is None:
        raise TeleradError(404, f"no second-opinion request {opinion_id}")
    return op


def get_for_update(s: Session, opinion_id: int) -> SecondOpinion:
    """The request read with a row lock held until the transaction ends (``SELECT ... FOR UPDATE``), or 404:
    how every step that changes it reads it, so that two takes or two answers at once run one after the other."""
    op = s.get(SecondOpinion, opinion_id, with_for_update=True, populate_existing=True)
    if op is None:
        raise TeleradError(404, f"no second-opinion request {opinion_id}")
    return op


def _experts_of(s: Session, site: str) -> list[str]:
    stmt = select(User.username).where(
        User.site == site, User.active.is_(True), User.role.in_(sorted(access.SECOND_OPINION_ROLES))
    )
    return list(s.execute(stmt.order_by(User.username)).scalars())


def _assign(s: Session, op: SecondOpinion, expert: str, now: datetime) -> None:
    care.record(
        s,
        expert,
        op.master_id,
        care.READING_ASSIGNMENT,
        recorded_by=op.asked_by,
        valid_from=now,
        valid_to=now + FOLLOW_UP,
        context=f"second-opinion:{op.id} expert",
    )


def link_of(op: SecondOpinion) -> str:
    """The page of the request."""
    return f"/app/telerad-worklist.html?opinion={op.id}"


def ask(
    rt: Runtime,
    principal: Principal,
    *,
    issuer: str,
    patient_id: str,
    study_uid: str,
    question: str,
    to_site: str = "",
    to_user: str = "",
    reading_request_id: int | None = None,
    client: str = "",
) -> SecondOpinion:
    """Ask a named specialist (``to_user``) or reference centre (``to_site``), exactly one of them, about a study.
    422 for an unknown or unqualified specialist, a centre without experts, or no question; 403 from the policy."""
    now = rt.clock()
    if bool(to_site) == bool(to_user):
        raise TeleradError(422, "name either a reference centre (to_site) or a specialist (to_user)")
    if not question.strip():
        raise TeleradError(422, "the question is required")
    res = access.Resource(kind=access.SECOND_OPINION, site=issuer, patient=f"{issuer}/{patient_id}")
    res, facts = access_facts.load(rt.db, principal, res, now)
    try:
        access.check(
            rt.db, principal, access.CREATE, res, event_type=audit.PATIENT_RECORD, source=client, facts=facts
        )
    except access.AccessDenied as exc:
        raise TeleradError(403, exc.reason) from exc
    if res.master is None:
        raise TeleradError(422, f"patient {issuer}/{patient_id} is unknown to the master patient index")
    with rt.db.write() as s:
        if to_user:
            user = find_user(s, to_user)
            if user is None or not user.active or user.role not in access.SECOND_OPINION_ROLES:
                raise TeleradError(422, f"{to_user} is not an active radiologist or pathologist")
            experts = [to_user]
        else:
            experts = _experts_of(s, to_site)
            if not experts:
                raise TeleradError(
                    422, f"reference centre {to_site} has no active radiologist or pathologist"
                )
        op = SecondOpinion(
            reading_request_id=reading_request_id,
            issuer=issuer,
            patient_id=patient_id,
            master_id=res.master,
            study_uid=study_uid,
            question=question.strip(),
            to_site=to_site,
            to_user=to_user,
            asked_by=principal.subject,
            asked_at=now,
            state=ASKED,
        )
        s.add(op)
        s.flush()
        if to_user:
            _assign(s, op, to_user, now)
        for expert in experts:
            inbox.notify_user(
                s,
                expert,
                kind=KIND,
                title=f"Second opinion asked by {principal.subject} ({principal.site or '-'})",
                body=question.strip()[:2000],
                link=link_of(op),
                master=op.master_id,
            )
        log.info("event=second_opinion_asked opinion=%d to_site=%s named=%s", op.id, to_site, bool(to_user))
        return op


def take(s: Session, op: SecondOpinion, principal: Principal, now: datetime) -> bool:
    """An expert of the addressed centre takes the question; ``False`` when they had it already. 409 when
    another expert has it or it is answered, 403 for anyone outside the centre. ``op`` is read by
    :func:`get_for_update` in ``s``."""
    if op.state != ASKED:
        raise TeleradError(409, f"second-opinion request {op.id} is answered")
    if op.to_user:
        if op.to_user == principal.subject:
            return False
        raise TeleradError(409, f"{op.to_user} has this second-opinion request")
    if principal.site != op.to_site or principal.role not in access.SECOND_OPINION_ROLES:
        raise TeleradError(403, f"only a radiologist or pathologist of {op.to_site} takes this request")
    op.to_user = principal.subject
    _assign(s, op, principal.subject, now)
    s.flush()
    return True


def _check_answerable(op: SecondOpinion, principal: Principal) -> None:
    if op.state == ANSWERED:
        raise TeleradError(409, f"second-opinion request {op.id} was answered by {op.answered_by}")
    if op.to_user != principal.subject:
        who = op.to_user or f"an expert of {op.to_site} (take it first)"
        raise TeleradError(403, f"this request is for {who}")


def answer(
    rt: Runtime, principal: Principal, opinion_id: int, text: str, *, client: str = ""
) -> SecondOpinion:
    """Answer with a signed document (the expert who has the request); 409 when answered already.

    The request is checked again, locked, in the transaction that registers the answer document: of two
    answers at once, the second is 409 and leaves no document."""
    now = rt.clock()
    with rt.db.sessions() as s:
        op = get(s, opinion_id)
    _check_answerable(op, principal)
    if not text.strip():
        raise TeleradError(422, "the answer is empty")
    answered: list[SecondOpinion] = []

    def record(s: Session, doc: documents.Document) -> None:
        op = get_for_update(s, opinion_id)
        _check_answerable(op, principal)  # raising here rolls the document back
        op.state, op.answered_by, op.answered_at = ANSWERED, principal.subject, now
        op.answer_text, op.answer_document_id = text.strip(), str(doc.id)
        inbox.notify_user(
            s,
            op.asked_by,
            kind=KIND,
            title=f"Second opinion #{op.id} answered by {principal.subject}",
            body=text.strip()[:2000],
            link=link_of(op),
            master=op.master_id,
        )
        answered.append(op)

    try:
        doc = documents.register(
            rt.db,
            rt.blobs,
            principal,
            issuer=op.issuer,
            patient_id=op.patient_id,
            type_code=ANSWER_TYPE,
            type_display=ANSWER_DISPLAY,
            title=f"Second opinion #{op.id}",
            content=f"Question: {op.question}\n\nAnswer:\n{text.strip()}\n".encode(),
            content_type="text/plain",
            author=principal.subject,
            organisation=principal.site,
            site=op.issuer,
            status=documents.FINAL,
            study_uids=[op.study_uid] if op.study_uid else [],
            source="second-opinion",
            client=client,
            in_transaction=record,
        )
    except documents.DocumentInvalid as exc:
        raise TeleradError(422, str(exc)) from exc
    log.info("event=second_opinion_answered opinion=%d document=%s", opinion_id, doc.id)
    return answered[0]


def worklist(
    s: Session, principal: Principal, *, asked: bool = False, open_only: bool = True
) -> list[SecondOpinion]:
    """The requests addressed to the caller (by name, or to their centre and not yet taken), oldest first; with
    ``asked``, those the caller asked."""
    stmt = select(SecondOpinion)
    if asked:
        stmt = stmt.where(SecondOpinion.asked_by == principal.subject)
    else:
        mine = SecondOpinion.to_user == principal.subject
        site = principal.site if principal.site not in ("", "*") else ""
        centre = (SecondOpinion.to_site == site) & (SecondOpinion.to_user == "") if site else None
        stmt = stmt.where(or_(mine, centre) if centre is not None else mine)
    if open_only:
        stmt = stmt.where(SecondOpinion.state == ASKED)
    return list(s.execute(stmt.order_by(SecondOpinion.asked_at, SecondOpinion.id)).scalars())


def view(op: SecondOpinion) -> dict[str, Any]:
    """A second-opinion request as the API shows it."""
    return {
        "opinion_id": op.id,
        "reading_request_id": op.reading_request_id,
        "patient": op.patient,
        "master_id": op.master_id,
        "study_uid": op.study_uid,
        "viewer_url": f"/app/study.html?study={op.study_uid}" if op.study_uid else "",
        "question": op.question,
        "to_site": op.to_site,
        "to_user": op.to_user,
        "asked_by": op.asked_by,
        "asked_at": op.asked_at.isoformat(),
        "state": op.state,
        "answered_by": op.answered_by,
        "answered_at": op.answered_at.isoformat() if op.answered_at else None,
        "answer": op.answer_text,
        "answer_document_id": op.answer_document_id,
    }
