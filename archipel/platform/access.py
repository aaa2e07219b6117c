"""The one access policy: ``allow(principal, action, resource, facts)``, used by HTTP, DIMSE and jobs alike.

:func:`allow` is a pure function: it weighs the role, the organisation (site), the care relationships, consent,
confidentiality and break-the-glass from what it is given, so it is cheap and can be tested cell by cell
(``tests/test_access_matrix.py``). :func:`check` loads the :class:`Facts` once (``access_facts``), decides and
audits. Searches do not ask per row: :func:`read_scope` turns the same rules into a :class:`ReadScope`, plain
data that the archive translates into its SQL so that counts and paging never reveal hidden data. Reads of
patient data are the union of the scope's :class:`Grant` s, and :func:`allow` decides a read by the same grants,
so a search and a retrieve can never disagree. The policy table is ``docs/access-policy.md``.
"""

from __future__ import annotations

from dataclasses import replace

from archipel.platform import audit
from archipel.platform.access_terms import (
    ADMIN_KINDS,
    ADMINISTER,
    AUDIT_KINDS,
    BREAK_GLASS,
    BREAK_GLASS_ROLES,
    CARE,
    CLINICAL_ROLES,
    CONFIDENTIALITY,
    CONSENT,
    CREATE,
    DOCUMENT,
    EXPORT,
    FROZEN_REQUESTERS,
    FROZEN_SECTION,
    FROZEN_UPDATERS,
    IDENTITY_KINDS,
    INBOX,
    INTAKE_ROLES,
    LEGAL_REPRESENTATIVE,
    NO_FACTS,
    PATIENT,
    PATIENT_ACCESS,
    PATIENT_ACCESS_ROLES,
    PRODUCER_ROLES,
    PURPOSE_BREAK_GLASS,
    PURPOSE_CARE,
    PURPOSE_IDENTITY,
    PURPOSE_OPERATIONS,
    READ,
    READING_REQUEST,
    READING_TASK,
    RECORDING_ROLES,
    SCREENING,
    SCREENING_INTAKE,
    SCREENING_PROGRAMME,
    SCREENING_ROLES,
    SEARCH,
    SECOND_OPINION,
    SECOND_OPINION_ROLES,
    TELERAD_READERS,
    TUMOR_BOARD,
    UPDATE,
    AccessDenied,
    Decision,
    Facts,
    Grant,
    ReadScope,
    Resource,
)
from archipel.platform.authn import Principal
from archipel.platform.confidentiality import (
    INVISIBLE_PATIENT,
    INVISIBLE_REPRESENTANTS_LEGAUX,
    MASQUE_PS,
    SENSITIVITY_LABELS,
)
from archipel.platform.db import Database

__all__ = [
    "ADMINISTER",
    "ADMIN_KINDS",
    "AUDIT_KINDS",
    "BREAK_GLASS",
    "BREAK_GLASS_ROLES",
    "CARE",
    "CLINICAL_ROLES",
    "CONFIDENTIALITY",
    "CONSENT",
    "CREATE",
    "DOCUMENT",
    "EXPORT",
    "FROZEN_REQUESTERS",
    "FROZEN_SECTION",
    "FROZEN_UPDATERS",
    "IDENTITY_KINDS",
    "INBOX",
    "INTAKE_ROLES",
    "LEGAL_REPRESENTATIVE",
    "NO_FACTS",
    "PATIENT",
    "PATIENT_ACCESS",
    "PATIENT_ACCESS_ROLES",
    "PRODUCER_ROLES",
    "PURPOSE_BREAK_GLASS",
    "PURPOSE_CARE",
    "PURPOSE_IDENTITY",
    "PURPOSE_OPERATIONS",
    "READ",
    "READING_REQUEST",
    "READING_TASK",
    "RECORDING_ROLES",
    "SCREENING",
    "SCREENING_INTAKE",
    "SCREENING_PROGRAMME",
    "SCREENING_ROLES",
    "SEARCH",
    "SECOND_OPINION",
    "SECOND_OPINION_ROLES",
    "TELERAD_READERS",
    "TUMOR_BOARD",
    "UPDATE",
    "AccessDenied",
    "Decision",
    "Facts",
    "Grant",
    "ReadScope",
    "Resource",
]


def _site_of(principal: Principal) -> str:
    # A user's "*" or empty site is no organisation: only nodes may be regional consumers.
    return "" if principal.site in ("", "*") else principal.site


def read_scope(principal: Principal, facts: Facts = NO_FACTS) -> ReadScope:
    """What ``principal`` may read, given its care relationships, emergency accesses and patients' consent."""
    if principal.kind == "node":
        if principal.site == "*":
            hidden = SENSITIVITY_LABELS | {MASQUE_PS}
            return ReadScope((Grant("regional consumer, shared data", hidden=hidden, shared_only=True),))
        return ReadScope((Grant("node of the producing site", sites=frozenset({principal.site})),))
    if principal.kind == "patient" or principal.role in (PATIENT, LEGAL_REPRESENTATIVE):
        hidden = frozenset({INVISIBLE_PATIENT})
        if principal.role == LEGAL_REPRESENTATIVE:
            hidden |= {INVISIBLE_REPRESENTANTS_LEGAUX}
        if not facts.own_masters:
            return ReadScope()
        return ReadScope((Grant("own record", masters=facts.own_masters, hidden=hidden),))
    grants: list[Grant] = []
    bg = facts.break_glass if principal.role in BREAK_GLASS_ROLES else frozenset()
    if principal.role in CLINICAL_ROLES:
        site = _site_of(principal)
        related = frozenset(facts.care)
        if site:
            grants.append(Grant("producing site", sites=frozenset({site}), hidden=SENSITIVITY_LABELS))
            if related:
                grants.append(
                    Grant("producing site and care relationship", sites=frozenset({site}), masters=related)
                )
        # A refusal of sharing leaves only the professionals the patient named.
        shared = frozenset(m for m, link in facts.care.items() if link.named or m not in facts.refused)
        if shared:
            grants.append(Grant("care relationship", masters=shared, hidden=frozenset({MASQUE_PS})))
        if site and bg:
            grants.append(
                Grant(
                    "producing site, break-the-glass",
                    sites=frozenset({site}),
                    masters=bg,
                    purpose=PURPOSE_BREAK_GLASS,
                )
            )
    if bg:
        grants.append(
            Grant("break-the-glass", masters=bg, hidden=frozenset({MASQUE_PS}), purpose=PURPOSE_BREAK_GLASS)
        )
    return ReadScope(tuple(grants))


def may_search(principal: Principal, facts: Facts = NO_FACTS) -> Decision:
    """Whether ``principal`` may search patient data at all (the results are then filtered by its scope)."""
    if principal.kind == "node":
        return Decision(True, "registered node; results limited to what it may see")
    if principal.kind == "patient" or principal.role in (PATIENT, LEGAL_REPRESENTATIVE):
        return Decision(True, "own record")
    if principal.role in CLINICAL_ROLES:
        return Decision(True, f"role {principal.role}; results limited to its site and patients")
    if principal.role in BREAK_GLASS_ROLES:
        if facts.break_glass:
            return Decision(True, "break-the-glass in force", PURPOSE_BREAK_GLASS)
        return Decision(False, f"role {principal.role} may not read patient data without break-the-glass")
    return Decision(False, f"role {principal.role or principal.kind} may not read patient data")


def _read_denial(principal: Principal, resource: Resource, facts: Facts) -> str:
    """Why no grant covers the resource, in the caller's words."""
    codes, master = resource.confidentiality, resource.master
    if principal.kind == "node":
        if principal.site != "*":
            return f"node {principal.subject} may not see data of site {resource.site}"
        if master in facts.refused:
            return "the patient refused sharing; only the producing site may see this data"
        return f"data marked {', '.join(sorted(codes))} stays at its producing site"
    if principal.kind == "patient" or principal.role in (PATIENT, LEGAL_REPRESENTATIVE):
        if master is None or master not in facts.own_masters:
            return "a patient may read only their own record"
        return "this document is not yet released to the patient"
    if principal.role not in CLINICAL_ROLES:
        if principal.role in BREAK_GLASS_ROLES:
            return f"role {principal.role} may not read patient data without break-the-glass"
        return f"role {principal.role} may not read patient data"
    own_site = bool(_site_of(principal)) and resource.site == _site_of(principal)
    related = master is not None and (master in facts.care or master in facts.break_glass)
    if MASQUE_PS in codes and not own_site:
        return "the patient hid this document from professionals (MASQUE_PS); only its producing site sees it"
    if master is not None and master in facts.care and master in facts.refused:
        return (
            "the patient refused sharing and did not name you; "
            "only the producing site and named professionals see it"
        )
    if codes & SENSITIVITY_LABELS and own_site and not related:
        labels = ", ".join(sorted(codes & SENSITIVITY_LABELS))
        return f"sensitive data ({labels}) needs a care relationship with the patient"
    return "no care relationship with this patient and not at the producing site"


def _read(principal: Principal, resource: Resource, facts: Facts) -> Decision:
    if resource.is_search:
        return may_search(principal, facts)
    refused = resource.master is not None and resource.master in facts.refused
    grant = read_scope(principal, facts).grant_for(
        resource.site, resource.master, resource.confidentiality, refused
    )
    if grant is not None:
        return Decision(True, grant.why, grant.purpose)
    return Decision(False, _read_denial(principal, resource, facts))


def _is_patient(principal: Principal) -> bool:
    return principal.kind == "patient" or principal.role in (PATIENT, LEGAL_REPRESENTATIVE)


def _own(principal: Principal, resource: Resource, facts: Facts) -> bool:
    return _is_patient(principal) and resource.master is not None and resource.master in facts.own_masters


def _at_patient_site(principal: Principal, facts: Facts) -> bool:
    site = _site_of(principal)
    return bool(site) and site in facts.patient_sites


def _access_records(principal: Principal, action: str, resource: Resource, facts: Facts) -> Decision:
    """Consent, care relationships, confidentiality codes and break-the-glass records of one patient."""
    kind = resource.kind
    if kind == BREAK_GLASS:
        if principal.kind == "user" and principal.role in BREAK_GLASS_ROLES:
            return Decision(True, f"role {principal.role} may break the glass", PURPOSE_BREAK_GLASS)
        return Decision(False, f"role {principal.role or principal.kind} may not break the glass")
    if _own(principal, resource, facts):
        if kind == CONFIDENTIALITY and action != READ and resource.confidentiality - {MASQUE_PS}:
            return Decision(
                False, "a patient may only hide (or show) a document to professionals (MASQUE_PS)"
            )
        return Decision(True, "own record")
    if _is_patient(principal):
        return Decision(False, "a patient may manage only their own record")
    if kind == CONFIDENTIALITY:
        site = _site_of(principal)
        if principal.role in RECORDING_ROLES and site and resource.site == site:
            return Decision(True, "professional of the producing site")
        return Decision(
            False, "only professionals of the producing site may change a study's confidentiality"
        )
    if principal.role == "admin":
        return Decision(True, "administrator (recorded on behalf of the patient or the care team)")
    if principal.role in RECORDING_ROLES and _at_patient_site(principal, facts):
        return Decision(True, "professional of a site that holds the patient's record")
    if principal.role in RECORDING_ROLES and action == READ and resource.master in facts.care:
        return Decision(True, "care relationship")
    return Decision(
        False, f"role {principal.role} at site {principal.site or '-'} may not manage this patient's {kind}"
    )


def _frozen_section(principal: Principal, action: str, resource: Resource, facts: Facts) -> Decision:
    """Requesting a frozen section (or sending its slides), and the workflow's steps, which the module orders."""
    if principal.kind != "user":
        return Decision(False, "a frozen-section request is made by a person")
    if action == CREATE:
        own_site = bool(_site_of(principal)) and resource.site == _site_of(principal)
        if principal.role in FROZEN_REQUESTERS and (own_site or _at_patient_site(principal, facts)):
            return Decision(True, f"role {principal.role} of a site holding the patient's record")
        return Decision(
            False, "only a surgeon or technician of a site holding the patient's record may do this"
        )
    if principal.role not in FROZEN_UPDATERS:
        return Decision(False, f"role {principal.role} takes no part in a frozen section's answer")
    return _read(principal, resource, facts)


def _document_update(principal: Principal, resource: Resource, facts: Facts) -> Decision:
    """Revising, signing, amending or withdrawing a document: the registry orders the statuses."""
    if principal.kind == "node":
        if principal.site == resource.site:
            return Decision(True, "node of the document's site")
        return Decision(False, f"node {principal.subject} may not change documents of site {resource.site}")
    if principal.kind != "user" or principal.role not in PRODUCER_ROLES:
        return Decision(False, f"role {principal.role or principal.kind} may not change a document")
    return _read(principal, resource, facts)


def _screening(principal: Principal, action: str, resource: Resource, facts: Facts) -> Decision:
    """Registering a screening episode (at a site holding the woman's record), claiming a reading task (any
    screening reader: claiming gives the reading assignment), and the steps of a read case (with the record)."""
    if principal.kind != "user":
        return Decision(False, "screening reading is done by a person")
    if principal.role not in SCREENING_ROLES:
        return Decision(False, f"role {principal.role} takes no part in screening reading")
    if resource.kind == READING_TASK:
        return Decision(True, f"role {principal.role}: the programme checks qualification and the protocol")
    if action == CREATE:
        own_site = bool(_site_of(principal)) and resource.site == _site_of(principal)
        if own_site or _at_patient_site(principal, facts):
            return Decision(True, f"role {principal.role} of a site holding the woman's record")
        return Decision(
            False, "only a reader of a site holding the woman's record may register her screening"
        )
    return _read(principal, resource, facts)


def _screening_programme(principal: Principal, facts: Facts) -> Decision:
    """A programme's lists and figures across its sites (the whole reconciliation list, every reader's
    figures): its administrators and coordinators, for the programme's operations. Anyone else sees only the
    reconciliation rows of their own site, and no metrics."""
    if principal.kind != "user":
        return Decision(False, "a screening programme's lists and figures are read by a person")
    if principal.role == "admin":
        return Decision(True, "administrator: the screening programme's operations", PURPOSE_OPERATIONS)
    if facts.coordinator:
        return Decision(True, "coordinator of the screening programme", PURPOSE_OPERATIONS)
    return Decision(
        False, "a screening programme's lists and figures are for its coordinators and administrators"
    )


def _screening_intake(principal: Principal, resource: Resource, facts: Facts) -> Decision:
    """Releasing a flag raised at screening intake, or sending the exam for a retake: a technician or
    radiologist who may read the episode (its producing site), or a coordinator of its programme."""
    if principal.kind != "user":
        return Decision(False, "a flag at screening intake is resolved by a person")
    if facts.coordinator:
        return Decision(True, "coordinator of the screening programme", PURPOSE_OPERATIONS)
    if principal.role not in INTAKE_ROLES:
        return Decision(
            False, "a flag at screening intake is resolved by a technician, a radiologist or a coordinator"
        )
    return _read(principal, resource, facts)


def _reading_request(principal: Principal, action: str, resource: Resource, facts: Facts) -> Decision:
    """Asking for a reading (or a second opinion), and working on one: the module orders the steps."""
    own_site = bool(_site_of(principal)) and resource.site == _site_of(principal)
    if principal.kind == "node" and action in (CREATE, UPDATE) and principal.site in ("*", resource.site):
        return Decision(True, "RIS node of the patient's site (orders and their cancellation)")
    if action == CREATE:
        clinical = principal.kind == "user" and principal.role in CLINICAL_ROLES | {"admin"}
        if clinical and (own_site or _at_patient_site(principal, facts)):
            return Decision(True, f"role {principal.role} of a site holding the patient's record")
        reader = principal.kind == "user" and principal.role in SECOND_OPINION_ROLES
        if resource.kind == SECOND_OPINION and reader and resource.master in facts.care:
            return Decision(True, f"role {principal.role} with a care relationship asks a second opinion")
        return Decision(
            False, "only a professional of a site holding the patient's record may ask for a reading"
        )
    readers = TELERAD_READERS if resource.kind == READING_REQUEST else SECOND_OPINION_ROLES
    if principal.kind == "user" and principal.role in readers:
        return Decision(True, f"role {principal.role}: reading pool")
    if principal.kind == "user" and principal.role in CLINICAL_ROLES:
        return _read(principal, resource, facts)
    return Decision(False, f"role {principal.role or principal.kind} takes no part in teleradiology")


def _patient_access(principal: Principal, resource: Resource, facts: Facts) -> Decision:
    """A patient's portal access codes: issued, listed and revoked by reception staff of a site holding the
    patient's record (or whose site issued the patient ID named), and administrators."""
    purpose = PURPOSE_OPERATIONS
    if principal.kind != "user":
        return Decision(False, "patients' access codes are handed out by staff", purpose)
    if principal.role == "admin":
        return Decision(True, "administrator: patient portal access", purpose)
    site = _site_of(principal)
    if (
        principal.role in PATIENT_ACCESS_ROLES
        and site
        and (site in facts.patient_sites or resource.site == site)
    ):
        return Decision(True, f"role {principal.role} of a site holding the patient's record", purpose)
    return Decision(
        False,
        "patients' access codes are for reception staff of a site holding the patient's record and administrators",
        purpose,
    )


def _tumor_board(principal: Principal, resource: Resource) -> Decision:
    """Tumor board sessions are the organising site's clinical professionals' (and administrators')."""
    if principal.kind == "user" and principal.role == "admin":
        return Decision(True, "administrator")
    if principal.kind != "user" or principal.role not in CLINICAL_ROLES:
        return Decision(False, f"role {principal.role or principal.kind} takes no part in tumor boards")
    if resource.site and resource.site != _site_of(principal):
        return Decision(False, f"the tumor board is organised by site {resource.site}")
    return Decision(True, f"role {principal.role} of the organising site")


def _export(principal: Principal, resource: Resource, facts: Facts) -> Decision:
    """Writing a study out as a package (DICOM media, a BagIt bag): an administrator's operation (a transfer to
    another archive, the patient's or a court's request), or, for anyone else, exactly what they may read."""
    if principal.kind == "user" and principal.role == "admin":
        return Decision(True, "administrator: archive export", PURPOSE_OPERATIONS)
    if principal.kind != "user" and not _is_patient(principal):
        return Decision(False, "an archive export is made by a person")
    return _read(principal, resource, facts)


def allow(principal: Principal, action: str, resource: Resource, facts: Facts = NO_FACTS) -> Decision:
    """Decide whether ``principal`` may do ``action`` on ``resource``, given ``facts``. Pure: no I/O."""
    kind = resource.kind
    if kind == "job":
        return Decision(True, "job status")
    if kind == TUMOR_BOARD:
        return _tumor_board(principal, resource)
    if kind == PATIENT_ACCESS:
        return _patient_access(principal, resource, facts)
    if kind in (READING_REQUEST, SECOND_OPINION):
        return _reading_request(principal, action, resource, facts)
    if kind in ADMIN_KINDS:
        if principal.kind == "user" and principal.role == "admin":
            return Decision(True, "administrator")
        return Decision(False, "administration needs the admin role")
    if kind in IDENTITY_KINDS:
        if principal.kind == "user" and principal.role in ("identity-officer", "admin"):
            return Decision(True, f"role {principal.role}: identity management", PURPOSE_IDENTITY)
        return Decision(False, "identity records are for identity officers and administrators")
    if kind in AUDIT_KINDS:
        if principal.kind == "user" and principal.role in ("auditor", "admin"):
            return Decision(True, f"role {principal.role}", "audit")
        if _own(principal, resource, facts) and action in (READ, SEARCH):
            return Decision(True, "a patient sees who accessed their record")
        return Decision(False, "the audit trail is for auditors and administrators")
    if kind in (CONSENT, CARE, CONFIDENTIALITY, BREAK_GLASS):
        return _access_records(principal, action, resource, facts)
    if kind == INBOX:
        if principal.kind == "user" and action in (READ, SEARCH, UPDATE):
            return Decision(True, "own notifications")
        return Decision(False, "notifications are for professionals, each their own")
    if kind == SCREENING_INTAKE:
        return _screening_intake(principal, resource, facts)
    if kind == FROZEN_SECTION and action in (CREATE, UPDATE):
        return _frozen_section(principal, action, resource, facts)
    if kind == SCREENING_PROGRAMME:
        return _screening_programme(principal, facts)
    if kind in (SCREENING, READING_TASK) and action in (CREATE, UPDATE):
        return _screening(principal, action, resource, facts)
    if kind == DOCUMENT and action == UPDATE:
        return _document_update(principal, resource, facts)
    # Patient data: studies, series, instances, slides, documents, reading tasks...
    if action == EXPORT:
        return _export(principal, resource, facts)
    if action in (READ, SEARCH):
        return _read(principal, resource, facts)
    if action == CREATE:
        if principal.kind == "node":
            return Decision(True, "registered node")
        if principal.kind == "user" and (principal.role in PRODUCER_ROLES or principal.role == "admin"):
            return Decision(True, f"role {principal.role}")
        return Decision(False, f"role {principal.role} may not add patient data")
    return Decision(False, f"action {action} is not allowed on {kind}")


def visible_sites(principal: Principal) -> frozenset[str] | None:
    """Sites whose data a node may see (``None``: every site). Kept for callers that only know sites; the
    full rule is :func:`read_scope`."""
    if principal.kind == "node" and principal.site != "*":
        return frozenset({principal.site})
    return None


def check(
    db: Database,
    principal: Principal,
    action: str,
    resource: Resource,
    *,
    event_type: str,
    source: str = "",
    facts: Facts | None = None,
    note: str = "",
) -> Decision:
    """Load the facts (unless given), decide, audit the decision, and raise :class:`AccessDenied` on a refusal.
    ``note`` is added to the audited reason (e.g. an export's format).

    A resource naming a patient (``issuer/PatientID``) but no master gets its master from the MPI first.
    """
    from archipel.platform import access_facts

    if facts is None:
        resource, facts = access_facts.load(db, principal, resource)
    decision = allow(principal, action, resource, facts)
    audit.record(
        db,
        principal,
        event_type,
        f"{action}:{resource.kind}",
        outcome="success" if decision.allowed else "denied",
        patient=resource.patient,
        master=resource.master,
        obj=resource.ident,
        source=source,
        purpose=decision.purpose,
        detail=f"{decision.reason}; {note}" if note else decision.reason,
    )
    if not decision.allowed:
        raise AccessDenied(decision.reason)
    return decision


def with_master(resource: Resource, master: int | None) -> Resource:
    """``resource`` naming ``master``."""
    return replace(resource, master=master)
