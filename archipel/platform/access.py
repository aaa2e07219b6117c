"""The one access policy: ``allow(principal, action, resource)``, used by HTTP, DIMSE and jobs alike.

This first version weighs the role and, for DICOM nodes, the site. The identity & access issue adds care
relationships, consent, confidentiality and break-the-glass here, behind the same functions.
"""

from __future__ import annotations

from dataclasses import dataclass

from archipel.platform import audit
from archipel.platform.authn import Principal
from archipel.platform.db import Database

#: Roles that take care of patients and may read their images.
CLINICAL_ROLES = frozenset(
    {"radiologist", "pathologist", "surgeon", "screening-reader", "treating-doctor", "technician"}
)
#: Roles that may add images to the archive.
PRODUCER_ROLES = frozenset({"radiologist", "pathologist", "technician"})

READ = "read"
SEARCH = "search"
CREATE = "create"
ADMINISTER = "administer"


@dataclass(frozen=True)
class Resource:
    """What an action is about: its kind, the producing site, the patient (``issuer/PatientID``), the master
    patient it is linked to in the MPI, and the confidentiality codes of the data."""

    kind: str
    site: str = ""
    patient: str = ""
    ident: str = ""
    master: int | None = None
    confidentiality: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Decision:
    """The policy's answer, with a reason that can be shown to the caller."""

    allowed: bool
    reason: str


class AccessDenied(PermissionError):
    """The policy refused; ``reason`` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def allow(principal: Principal, action: str, resource: Resource) -> Decision:
    """Decide whether ``principal`` may do ``action`` on ``resource``."""
    if principal.kind == "node":
        if action in (READ, SEARCH) and _site_visible(principal, resource.site):
            return Decision(True, "node of the producing site or regional consumer")
        if action == CREATE:
            return Decision(True, "registered node")
        return Decision(False, f"node {principal.subject} may not see data of site {resource.site}")
    if resource.kind in ("node", "user", "platform"):
        if principal.role == "admin":
            return Decision(True, "administrator")
        return Decision(False, "administration needs the admin role")
    if resource.kind == "job":
        return Decision(True, "job status")
    if action in (READ, SEARCH):
        if principal.role in CLINICAL_ROLES:
            return Decision(True, f"role {principal.role}")
        return Decision(False, f"role {principal.role} may not read patient data")
    if action == CREATE:
        if principal.role in PRODUCER_ROLES or principal.role == "admin":
            return Decision(True, f"role {principal.role}")
        return Decision(False, f"role {principal.role} may not add patient data")
    return Decision(False, f"action {action} is not allowed")


def _site_visible(principal: Principal, site: str) -> bool:
    return principal.site == "*" or not site or site == principal.site


def visible_sites(principal: Principal) -> frozenset[str] | None:
    """Sites whose data a query by ``principal`` may return; ``None`` means every site.

    Queries apply this inside their SQL, so counts and paging never reveal hidden data.
    """
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
) -> Decision:
    """Decide, audit the decision, and raise :class:`AccessDenied` on a refusal."""
    decision = allow(principal, action, resource)
    audit.record(
        db,
        principal,
        event_type,
        f"{action}:{resource.kind}",
        outcome="success" if decision.allowed else "denied",
        patient=resource.patient,
        obj=resource.ident,
        source=source,
        detail=decision.reason,
    )
    if not decision.allowed:
        raise AccessDenied(decision.reason)
    return decision
