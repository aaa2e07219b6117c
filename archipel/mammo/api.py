"""HTTP routes of screening: programmes, episodes (intake, L1 form, reconciliation, decision, outcome) and reads.

Every route asks the access policy (kind ``screening-episode``, or ``reading-task`` to claim) and is audited;
the protocol's own refusals (blinding, the same reader twice, an unqualified reader) are 403 and audited as
denials too. The worklist and metrics routes are in ``worklist_api``.
"""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

from fastapi import APIRouter, HTTPException, Request, status
from sqlalchemy.orm import Session

from archipel.mammo import decision, episodes, priors, protocol, reading, workup
from archipel.mammo.episodes import ScreeningError
from archipel.mammo.models import (
    PRIORS_FAILED,
    PRIORS_HELD,
    RECALL,
    Episode,
    Programme,
    Reading,
    ScreeningDecision,
    ScreeningStudy,
)
from archipel.mammo.reconciliation import reconciliation
from archipel.mammo.schemas import (
    EpisodeBody,
    L1FormBody,
    MatchBody,
    OutcomeBody,
    PriorsBody,
    ProgrammeBody,
    QualificationBody,
)
from archipel.platform import access, access_facts, audit
from archipel.platform.authn import Principal
from archipel.platform.credentials import PrincipalDep, RuntimeDep, client_address
from archipel.platform.http import guard
from archipel.platform.runtime import Runtime

router = APIRouter(prefix="/api/mammo", tags=["screening"])


def refused(err: ScreeningError) -> HTTPException:
    """The HTTP error for a refusal of the workflow."""
    return HTTPException(err.status, str(err))


def episode_resource(ep: Episode, what: str = "") -> access.Resource:
    """The access-policy resource for an episode."""
    return access.Resource(
        kind=access.SCREENING,
        site=ep.site,
        patient=f"{ep.issuer}/{ep.patient_id}",
        master=ep.master_id,
        ident=what or f"screening episode {ep.id}",
    )


def check(
    rt: Runtime, principal: Principal, action: str, resource: access.Resource, request: Request, event: str
) -> None:
    """The access guard, with the facts (care relationships) taken at the runtime's clock."""
    resource, facts = access_facts.load(rt.db, principal, resource, rt.clock())
    guard(rt, principal, action, resource, event_type=event, request=request, facts=facts)


def programme_facts(rt: Runtime, principal: Principal, code: str) -> access.Facts:
    """The caller's facts for a programme's lists and figures: whether they coordinate programme ``code``."""
    _, facts = access_facts.load(rt.db, principal, None, rt.clock())
    with rt.db.sessions() as s:
        return replace(facts, coordinator=bool(code) and reading.coordinates(s, code, principal.subject))


def deny(
    rt: Runtime, principal: Principal, request: Request, action: str, resource: access.Resource, why: str
) -> HTTPException:
    """Audit a refusal by the protocol's rules and return the 403 to raise."""
    audit.record(
        rt.db,
        principal,
        audit.PATIENT_RECORD,
        action,
        outcome=audit.DENIED,
        patient=resource.patient,
        master=resource.master,
        obj=resource.ident,
        source=client_address(request),
        detail=why,
    )
    return HTTPException(status.HTTP_403_FORBIDDEN, why)


def load_episode(rt: Runtime, episode_id: int) -> Episode:
    """The episode, or 404."""
    with rt.db.sessions() as s:
        try:
            return episodes.episode(s, episode_id)
        except ScreeningError as exc:
            raise refused(exc) from exc


def _programme_row(p: Programme) -> dict[str, Any]:
    return {
        "code": p.code,
        "name": p.name,
        "protocol": p.protocol,
        "arbitration_policy": p.arbitration_policy,
        "discordance_resolution": p.discordance_resolution,
        "arbitrator_sees_reads": p.arbitrator_sees_reads,
        "min_yearly_reads": p.min_yearly_reads,
        "result_deadline_days": p.result_deadline_days,
        "interval_months": p.interval_months,
        "screening_views": p.screening_views.split(","),
        "settle_minutes": p.settle_minutes,
    }


@router.post("/programmes", status_code=status.HTTP_201_CREATED)
def create_programme(
    body: ProgrammeBody, request: Request, rt: RuntimeDep, principal: PrincipalDep
) -> dict[str, Any]:
    """Create a screening programme with its protocol and settings (administrators)."""
    resource = access.Resource(kind="platform", ident=f"screening programme {body.code}")
    guard(rt, principal, access.ADMINISTER, resource, event_type=audit.SECURITY_ALERT, request=request)
    with rt.db.write() as s:
        try:
            episodes.programme(s, body.code)
        except ScreeningError:
            row = Programme(**body.model_dump(), created_at=rt.clock())
            s.add(row)
            s.flush()
            return _programme_row(row)
    raise HTTPException(status.HTTP_409_CONFLICT, f"programme {body.code} exists already")


@router.get("/programmes")
def list_programmes(rt: RuntimeDep, principal: PrincipalDep) -> list[dict[str, Any]]:
    """The programmes and their settings."""
    from sqlalchemy import select

    with rt.db.sessions() as s:
        return [_programme_row(p) for p in s.execute(select(Programme).order_by(Programme.id)).scalars()]


@router.post("/programmes/{code}/readers", status_code=status.HTTP_201_CREATED)
def qualify_reader(
    code: str, body: QualificationBody, request: Request, rt: RuntimeDep, principal: PrincipalDep
) -> dict[str, Any]:
    """Qualify a reader for a role of the programme (administrators)."""
    resource = access.Resource(kind="platform", ident=f"screening programme {code} reader {body.reader}")
    guard(rt, principal, access.ADMINISTER, resource, event_type=audit.SECURITY_ALERT, request=request)
    with rt.db.write() as s:
        try:
            prog = episodes.programme(s, code)
        except ScreeningError as exc:
            raise refused(exc) from exc
        added = reading.qualify(s, prog, body.reader, body.qualification, principal.subject, rt.clock())
    return {"programme": code, "reader": body.reader, "qualification": body.qualification, "added": added}


def blinding(s: Session, prog: Programme, ep: Episode, subject: str, target: Reading) -> str:
    """Why ``subject`` may not see ``target``'s assessment yet (empty: they may): the protocol's blinding,
    with the reader's arbitrator qualification, so that a would-be arbitrator is blinded before claiming too."""
    return protocol.blinding_refusal(
        episodes.settings_of(prog),
        subject,
        episodes.as_rule_read(target),
        episodes.rule_reads(s, ep.id),
        episodes.claims_of(s, ep.id),
        "arbitrator" in reading.qualifications(s, prog.id, subject),
    )


def _withheld(s: Session, prog: Programme, ep: Episode, subject: str, reads: list[Reading]) -> str:
    """Why the next step's reasons (which say what the reads found) are withheld from ``subject``, or empty:
    they are whenever one of the reads they speak of is still hidden from them."""
    return next((why for r in reads if (why := blinding(s, prog, ep, subject, r))), "")


def _held_for(s: Session, ep: Episode) -> str:
    """What a case whose next step is a read is held back for (empty: nothing): its exam at intake (flagged or
    incomplete), or its priors (requested and not here yet, or failed), as the worklists hold it back."""
    if ep.status in ("awaiting-images", "awaiting-l1-form"):
        return ""  # the protocol's own wait says it (the images, the L1 form)
    if ep.status == "flagged":
        return f"the intake flag to be resolved ({ep.flag})"
    if ep.status == "incomplete":
        return "the exam's missing views"
    if ep.priors in PRIORS_HELD:
        if ep.priors == PRIORS_FAILED:
            fetch = priors.latest_fetch(s, ep.id)
            why = f": {fetch.reason}" if fetch is not None and fetch.reason else ""
            return f"the priors (fetching them failed{why}; ask again or release the case)"
        return f"the priors ({ep.priors})"
    return ""


def _workup_state(decided: ScreeningDecision | None, forms: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The deferred work-up after a recall: ``awaited`` (no form yet), ``pathology-awaited`` (a suspicious
    form, the biopsy's result to come) or ``done`` (a final form), with the forms and the outcome recorded;
    ``None`` when the episode was not recalled."""
    if decided is None or decided.decision != RECALL:
        return None
    final = next((w for w in forms if w["conclusion"] != "suspicious"), None)
    state = "done" if final is not None else ("pathology-awaited" if forms else "awaited")
    return {
        "state": state,
        "final": final["conclusion"] if final is not None else None,
        "outcome": final["outcome"] if final is not None else None,
        "forms": forms,
    }


def episode_view(rt: Runtime, ep: Episode, principal: Principal, request: Request) -> dict[str, Any]:
    """What anyone who may read the episode sees: state, studies and views, tasks, who read (not what), the
    next step, the decision and the delays. The next step's reasons are left out (``withheld`` says why, and
    the refusal is audited) while the protocol hides a read they speak of from the caller."""
    with rt.db.sessions() as s:
        prog = s.get(Programme, ep.programme_id)
        assert prog is not None
        reads = episodes.reading_rows(s, ep.id)
        step = protocol.next_step(episodes.settings_of(prog), [episodes.as_rule_read(r) for r in reads])
        decided = episodes.decision_of(s, ep.id)
        withheld = _withheld(s, prog, ep, principal.subject, reads) if step.reasons and not decided else ""
        held = _held_for(s, ep) if step.kind != "decide" and decided is None else ""
        workups = [workup.view(s, w) for w in workup.workups_of(s, ep.id)]
        resolutions = [
            {
                "action": f.action,
                "lines": json.loads(f.problems),
                "reason": f.reason,
                "resolved_by": f.resolved_by,
                "resolved_at": f.resolved_at.isoformat(),
            }
            for f in episodes.flag_resolutions(s, ep.id)
        ]
        view = {
            "id": ep.id,
            "programme": prog.code,
            "protocol": prog.protocol,
            "patient": f"{ep.issuer}/{ep.patient_id}",
            "master_id": ep.master_id,
            "site": ep.site,
            "round": ep.round,
            "screen_date": ep.screen_date.isoformat(),
            "status": ep.status,
            "flag": ep.flag,
            "priors": ep.priors,
            "prior_fetch": priors.view(rt.db, ep.id),
            "retake_of": ep.retake_of,
            "flag_resolutions": resolutions,
            "studies": [
                {"study_uid": st.study_uid, "views": json.loads(st.views), "flag": st.flag}
                for st in episodes.studies_of(s, ep.id)
            ],
            "tasks": [
                {"id": t.id, "role": t.role, "status": t.status, "claimed_by": t.claimed_by, "note": t.note}
                for t in episodes.tasks_of(s, ep.id)
            ],
            "readings": [
                {"id": r.id, "role": r.role, "reader": r.reader, "submitted_at": r.submitted_at.isoformat()}
                for r in reads
            ],
            "next": {
                "step": "wait" if held else step.kind,
                "role": step.role,
                "waiting_for": held or step.waiting_for,
                "reasons": [] if withheld else list(step.reasons),
                "withheld": withheld,
            }
            if decided is None
            else None,
            "decision": None
            if decided is None
            else {
                "decision": decided.decision,
                "reasons": json.loads(decided.reasons),
                "decided_at": decided.decided_at.isoformat(),
                "letters": decision.letter_ids(decided),
                "result": decision.result_state(ep, decided),
                "result_sent_at": ep.result_sent_at.isoformat() if ep.result_sent_at else None,
                "due": decision.due(ep, prog).isoformat(),
                "within_deadline": decision.within_deadline(ep, prog, rt.clock()),
            },
            "delays": decision.delays(s, ep),
            "workup": _workup_state(decided, workups),
        }
    if withheld:
        resource = episode_resource(ep, f"next step's reasons of screening episode {ep.id}")
        deny(rt, principal, request, "read:screening-reading", resource, withheld)
    return view


@router.post("/episodes", status_code=status.HTTP_201_CREATED)
def register_episode(
    body: EpisodeBody, request: Request, rt: RuntimeDep, principal: PrincipalDep
) -> dict[str, Any]:
    """Register a woman's screening episode (matched to her study when it is, or when it arrives)."""
    probe = Episode(site=body.site, issuer=body.issuer, patient_id=body.patient_id, id=0)
    check(
        rt,
        principal,
        access.CREATE,
        episode_resource(probe, "new screening episode"),
        request,
        audit.PATIENT_RECORD,
    )
    try:
        with rt.db.write() as s:
            ep = reading.register(s, episodes.programme(s, body.programme), body, rt.clock())
    except ScreeningError as exc:
        raise refused(exc) from exc
    return episode_view(rt, ep, principal, request)


@router.post("/l1-forms", status_code=status.HTTP_201_CREATED)
def submit_l1_form(
    body: L1FormBody, request: Request, rt: RuntimeDep, principal: PrincipalDep
) -> dict[str, Any]:
    """The imaging centre's L1 form (French programme): the episode is matched or registered, the L1 read kept,
    and an L2 task created when the exam ends ACR 1-2."""
    probe = Episode(site=body.site, issuer=body.issuer, patient_id=body.patient_id, id=0)
    resource = episode_resource(probe, "L1 form")
    check(rt, principal, access.CREATE, resource, request, audit.PATIENT_RECORD)
    try:
        with rt.db.write() as s:
            ep, _ = reading.submit_l1(
                s, episodes.programme(s, body.programme), body, principal.subject, rt.clock()
            )
    except ScreeningError as exc:
        if exc.status == status.HTTP_403_FORBIDDEN:  # not qualified as L1 reader
            raise deny(rt, principal, request, "create:screening-episode", resource, str(exc)) from exc
        raise refused(exc) from exc
    return episode_view(rt, ep, principal, request)


@router.get("/episodes/{episode_id}")
def get_episode(episode_id: int, request: Request, rt: RuntimeDep, principal: PrincipalDep) -> dict[str, Any]:
    """The episode: state, views, tasks, who read it, next step, decision and delays (no assessments)."""
    ep = load_episode(rt, episode_id)
    check(rt, principal, access.READ, episode_resource(ep), request, audit.PATIENT_RECORD)
    return episode_view(rt, ep, principal, request)


def reading_view(r: Reading) -> dict[str, Any]:
    """A read in full."""
    return {
        "id": r.id,
        "episode_id": r.episode_id,
        "role": r.role,
        "reader": r.reader,
        "blind": r.blind,
        "right": {"assessment": r.right_assessment, "result": r.right_result or None},
        "left": {"assessment": r.left_assessment, "result": r.left_result or None},
        "density": r.density,
        "density_fr": protocol.french_density(r.density) if r.density else None,
        "findings": json.loads(r.findings),
        "quality": json.loads(r.quality),
        "form": json.loads(r.form),
        "opened_at": r.opened_at.isoformat() if r.opened_at else None,
        "submitted_at": r.submitted_at.isoformat(),
    }


@router.get("/episodes/{episode_id}/readings/{reading_id}")
def get_reading(
    episode_id: int, reading_id: int, request: Request, rt: RuntimeDep, principal: PrincipalDep
) -> dict[str, Any]:
    """One read's assessment, if the protocol lets the caller see it yet (blinding is enforced here)."""
    ep = load_episode(rt, episode_id)
    resource = episode_resource(ep, f"screening reading {reading_id} of episode {ep.id}")
    check(rt, principal, access.READ, resource, request, audit.PATIENT_RECORD)
    with rt.db.sessions() as s:
        row = s.get(Reading, reading_id)
        if row is None or row.episode_id != ep.id:
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"no reading {reading_id} in episode {ep.id}")
        prog = s.get(Programme, ep.programme_id)
        assert prog is not None
        why = blinding(s, prog, ep, principal.subject, row)
    if why:
        raise deny(rt, principal, request, "read:screening-reading", resource, why)
    return reading_view(row)


def _update(rt: Runtime, principal: Principal, request: Request, episode_id: int, what: str) -> Episode:
    ep = load_episode(rt, episode_id)
    check(
        rt,
        principal,
        access.UPDATE,
        episode_resource(ep, f"{what} of screening episode {ep.id}"),
        request,
        audit.PATIENT_RECORD,
    )
    return ep


@router.post("/episodes/{episode_id}/priors")
def set_priors(
    episode_id: int, body: PriorsBody, request: Request, rt: RuntimeDep, principal: PrincipalDep
) -> dict[str, Any]:
    """``requested`` fetches the woman's earlier MG studies from the region's PACS and holds the case until
    they are here (or the fetch failed: still held, with the reason); ``received`` / ``none`` release it."""
    ep = _update(rt, principal, request, episode_id, "priors")
    try:
        if body.status == "requested":
            priors.request_priors(rt.db, principal, ep.id, rt.clock())
        else:
            priors.release(rt.db, principal, ep.id, body.status)
    except ScreeningError as exc:
        raise refused(exc) from exc
    except access.AccessDenied as exc:
        raise HTTPException(status.HTTP_403_FORBIDDEN, exc.reason) from exc
    return episode_view(rt, load_episode(rt, ep.id), principal, request)


@router.post("/episodes/{episode_id}/decision", status_code=status.HTTP_201_CREATED)
def take_decision(
    episode_id: int, request: Request, rt: RuntimeDep, principal: PrincipalDep
) -> dict[str, Any]:
    """Take the woman's decision from her reads and queue the results letters (409 before the reads allow it)."""
    ep = _update(rt, principal, request, episode_id, "decision")
    try:
        with rt.db.write() as s:
            fresh = episodes.episode(s, ep.id)
            prog = s.get(Programme, fresh.programme_id)
            assert prog is not None
            decision.decide(s, fresh, prog, principal.subject, rt.clock())
    except ScreeningError as exc:
        raise refused(exc) from exc
    return episode_view(rt, fresh, principal, request)


@router.post("/episodes/{episode_id}/outcomes", status_code=status.HTTP_201_CREATED)
def record_outcome(
    episode_id: int, body: OutcomeBody, request: Request, rt: RuntimeDep, principal: PrincipalDep
) -> dict[str, Any]:
    """Record the work-up, biopsy and pathology, or an interval cancer reported later."""
    ep = _update(rt, principal, request, episode_id, "outcome")
    try:
        with rt.db.write() as s:
            row = decision.record_outcome(s, episodes.episode(s, ep.id), body, principal.subject, rt.clock())
            return {"id": row.id, "episode_id": ep.id, **body.model_dump(mode="json")}
    except ScreeningError as exc:
        raise refused(exc) from exc


@router.get("/reconciliation")
def get_reconciliation(
    request: Request, rt: RuntimeDep, principal: PrincipalDep, programme: str = ""
) -> dict[str, Any]:
    """MG studies with no episode, and episodes (forms) with no study (of ``programme`` when given): the
    whole list for the programme's coordinators and administrators, the rows of the caller's site for the
    others (a study's site is the archive's producing site)."""
    facts = programme_facts(rt, principal, programme)
    with rt.db.sessions() as s:
        try:
            programme_id = episodes.programme(s, programme).id if programme else None
        except ScreeningError as exc:
            raise refused(exc) from exc
    whole = access.Resource(
        kind=access.SCREENING_PROGRAMME,
        ident=f"screening reconciliation list{f' of {programme}' if programme else ''}",
    )
    if access.allow(principal, access.READ, whole, facts).allowed:
        guard(rt, principal, access.READ, whole, event_type=audit.QUERY, request=request, facts=facts)
        with rt.db.sessions() as s:
            return reconciliation(s, programme_id)
    resource = access.Resource(kind=access.SCREENING, ident="screening reconciliation list")
    guard(rt, principal, access.SEARCH, resource, event_type=audit.QUERY, request=request, facts=facts)
    scope = access.read_scope(principal, facts)

    def own_site(site: str, codes: frozenset[str]) -> bool:
        # A row names a site and no master: only the grants of the caller's own site cover it.
        return scope.grant_for(site, None, codes, False) is not None

    with rt.db.sessions() as s:
        return reconciliation(s, programme_id, own_site)


@router.post("/studies/{study_uid}/match")
def match_study(
    study_uid: str, body: MatchBody, request: Request, rt: RuntimeDep, principal: PrincipalDep
) -> dict[str, Any]:
    """Attach a study from the reconciliation list to its episode by hand: staff of a site holding the woman's
    record, as for any step of her episode, or a coordinator of the episode's programme (an intake task of the
    programme's operations, policy kind ``screening-intake``). A refusal is audited."""
    ep = load_episode(rt, body.episode_id)
    with rt.db.sessions() as s:
        prog_row = s.get(Programme, ep.programme_id)
        assert prog_row is not None
        coordinator = reading.coordinates(s, prog_row.code, principal.subject)
    if coordinator:
        resource = access.Resource(
            kind=access.SCREENING_INTAKE,
            site=ep.site,
            patient=f"{ep.issuer}/{ep.patient_id}",
            master=ep.master_id,
            ident=f"match of study {study_uid} to screening episode {ep.id}",
        )
        resource, facts = access_facts.load(rt.db, principal, resource, rt.clock())
        facts = replace(facts, coordinator=True)
        guard(
            rt,
            principal,
            access.UPDATE,
            resource,
            event_type=audit.PATIENT_RECORD,
            request=request,
            facts=facts,
        )
    else:
        _update(rt, principal, request, ep.id, f"match of study {study_uid}")
    from sqlalchemy import select

    try:
        with rt.db.write() as s:
            study = s.execute(
                select(ScreeningStudy).where(ScreeningStudy.study_uid == study_uid)
            ).scalar_one_or_none()
            if study is None:
                raise episodes.not_found(f"mammography study {study_uid} on the reconciliation list")
            fresh = episodes.episode(s, ep.id)
            episodes.attach_study(s, study, fresh)
            prog = s.get(Programme, fresh.programme_id)
            assert prog is not None
            episodes.advance(s, fresh, prog, rt.clock())
    except ScreeningError as exc:
        raise refused(exc) from exc
    return episode_view(rt, fresh, principal, request)
