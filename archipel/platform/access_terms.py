"""The access policy's terms: roles, actions, resource kinds and purposes, and the values the policy works on
(:class:`Resource`, :class:`Facts`, :class:`Decision`, :class:`Grant`, :class:`ReadScope`).

``access`` re-exports every name here, so callers keep writing ``access.READ`` and ``access.Resource``; the rules
themselves are in ``access``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from archipel.platform.care import CareLink

#: Roles that take care of patients and may read their images (given a site or a relationship).
CLINICAL_ROLES = frozenset(
    {"radiologist", "pathologist", "surgeon", "screening-reader", "treating-doctor", "technician"}
)
#: Roles that may add images to the archive.
PRODUCER_ROLES = frozenset({"radiologist", "pathologist", "technician"})
#: Roles that may record care relationships, consent taken on paper and confidentiality codes.
RECORDING_ROLES = frozenset({"radiologist", "pathologist", "surgeon", "treating-doctor", "screening-reader"})
#: Roles that may break the glass (kept in step with ``breakglass.ROLES``).
BREAK_GLASS_ROLES = frozenset({"radiologist", "pathologist", "surgeon", "treating-doctor", "admin"})
PATIENT = "patient"
#: A patient principal acting as the patient's legal representative (parent, guardian).
LEGAL_REPRESENTATIVE = "legal-representative"

READ = "read"
SEARCH = "search"
CREATE = "create"
UPDATE = "update"
ADMINISTER = "administer"
#: Writing patient data out of the platform as a package (DICOM media, a BagIt bag): see ``access.allow``.
EXPORT = "export"

#: Resource kinds that are not patient data: platform administration, identity records, the audit trail, and
#: the access-control records themselves.
ADMIN_KINDS = frozenset({"node", "user", "platform"})
IDENTITY_KINDS = frozenset({"identity"})
AUDIT_KINDS = frozenset({"audit"})
#: Access-control records about a patient: consent, care relationships, confidentiality codes of a study.
CONSENT, CARE, CONFIDENTIALITY, BREAK_GLASS = "consent", "care", "confidentiality", "break-glass"
#: A frozen-section request: made (and its slides sent) by a surgeon or technician of a site holding the
#: patient's record; read like any patient data; updated (claim, verdict, seen) by readers among these roles.
FROZEN_SECTION = "frozen-section"
FROZEN_REQUESTERS = frozenset({"surgeon", "technician"})
FROZEN_UPDATERS = frozenset({"pathologist", "surgeon"})
#: A report, letter or form of the document registry: created like other patient data; changed (revised,
#: signed, amended, entered in error) by a producing professional who may read it, or by a node of its site.
DOCUMENT = "document"
#: A screening episode (registered, its L1 form, reads, decision, outcome), and a reading task of one: the
#: module checks the reader's qualification and the protocol's rules; the policy checks role and record.
SCREENING, READING_TASK = "screening-episode", "reading-task"
SCREENING_ROLES = frozenset({"screening-reader", "radiologist"})
#: A flag raised at screening intake (a view or a laterality missing), released or sent for a retake by the
#: imaging centre's technicians and radiologists at a site holding the woman's record.
SCREENING_INTAKE = "screening-intake"
INTAKE_ROLES = frozenset({"technician", "radiologist"})
#: A screening programme's own lists and figures across its sites (the whole reconciliation list, the metrics
#: with every reader's figures): for the programme's coordinators (a qualification of the programme, the
#: fact ``Facts.coordinator``) and administrators.
SCREENING_PROGRAMME = "screening-programme"
#: A professional's in-app notifications: each reads and acknowledges their own (the module keeps to the
#: recipient in its SQL, as a search keeps to the read scope).
INBOX = "inbox"

#: A patient's portal access codes (issue, list, revoke): reception and records staff of a site holding the
#: patient's record (or whose site issued the patient ID given), and administrators, for operations.
PATIENT_ACCESS = "patient-access"
PATIENT_ACCESS_ROLES = frozenset({"reception"})

#: Audit purposes (the same strings as ``audit``'s).
PURPOSE_CARE = "care"
PURPOSE_BREAK_GLASS = "break-glass"
PURPOSE_IDENTITY = "identity-management"
PURPOSE_OPERATIONS = "operations"

#: A teleradiology reading request and a second-opinion request: made by a professional (or a RIS node) of a
#: site holding the patient's record; radiologists of the reading pool see and work the worklist (claiming
#: gives them a reading assignment on the patient); the module checks requester and claim holder.
READING_REQUEST, SECOND_OPINION = "reading-request", "second-opinion"
TELERAD_READERS = frozenset({"radiologist"})
SECOND_OPINION_ROLES = frozenset({"radiologist", "pathologist"})


@dataclass(frozen=True)
class Resource:
    """What an action is about: its kind, the producing site, the patient (``issuer/PatientID``), the master
    patient it is linked to in the MPI, and the confidentiality codes of the data.

    A patient-data resource with neither site, patient nor master stands for a whole search: what it may
    return is decided row by row by the :class:`ReadScope`.
    """

    kind: str
    site: str = ""
    patient: str = ""
    ident: str = ""
    master: int | None = None
    confidentiality: frozenset[str] = frozenset()

    @property
    def is_search(self) -> bool:
        """Whether this names no particular patient's data (a search as a whole)."""
        return not (self.site or self.patient or self.master is not None)


@dataclass(frozen=True)
class Facts:
    """What the policy knows beyond principal and resource, loaded once per request by ``access_facts``.

    ``care``: the principal's relationships in force, by master (merges followed); ``break_glass``: masters
    of the principal's emergency accesses in force; ``refused``: masters, among the resource's and the
    relationships', whose patients refuse sharing; ``own_masters``: a patient principal's master(s);
    ``patient_sites``: the sites (issuers) holding an identity of the resource's patient; ``coordinator``:
    the principal coordinates the screening programme the resource is about (set by the screening module).
    """

    care: Mapping[int, CareLink] = field(default_factory=lambda: MappingProxyType({}))
    break_glass: frozenset[int] = frozenset()
    refused: frozenset[int] = frozenset()
    own_masters: frozenset[int] = frozenset()
    patient_sites: frozenset[str] = frozenset()
    coordinator: bool = False


NO_FACTS = Facts()


@dataclass(frozen=True)
class Decision:
    """The policy's answer, with a reason that can be shown to the caller and the audit purpose it serves."""

    allowed: bool
    reason: str
    purpose: str = PURPOSE_CARE


class AccessDenied(PermissionError):
    """The policy refused; ``reason`` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class Grant:
    """One way of seeing patient data: studies of these ``sites`` (``None``: any) of these ``masters``
    (``None``: any, linked or not), except those carrying a ``hidden`` code, and, when ``shared_only``,
    except those of patients who refuse sharing."""

    why: str
    sites: frozenset[str] | None = None
    masters: frozenset[int] | None = None
    hidden: frozenset[str] = frozenset()
    shared_only: bool = False
    purpose: str = PURPOSE_CARE

    def covers(self, site: str, master: int | None, codes: frozenset[str], refused: bool) -> bool:
        """Whether a study of ``site`` and ``master`` with ``codes`` is seen through this grant."""
        if self.sites is not None and site not in self.sites:
            return False
        if self.masters is not None and (master is None or master not in self.masters):
            return False
        if codes & self.hidden:
            return False
        return not (self.shared_only and refused)


@dataclass(frozen=True)
class ReadScope:
    """Everything a principal may read, as plain data for the archive to turn into SQL: a study is visible
    when one of the grants covers it. No grant: nothing is visible."""

    grants: tuple[Grant, ...] = ()

    def grant_for(self, site: str, master: int | None, codes: frozenset[str], refused: bool) -> Grant | None:
        """The first grant covering a study, or ``None``."""
        return next((g for g in self.grants if g.covers(site, master, codes, refused)), None)

    @property
    def sees_nothing(self) -> bool:
        """Whether no study at all is visible."""
        return not self.grants


#: A tumor board (RCP) session: clinical professionals of the organising site create it, register patients
#: (the prefetch of each then asks for a read of that patient's record) and follow it.
TUMOR_BOARD = "tumor-board"
