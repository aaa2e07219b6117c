"""Configuring a registered DICOM node as a remote PACS to query and retrieve from (C-MOVE, C-GET or DICOMweb)."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select

from archipel.platform.db import Database
from archipel.radiology import tumorboard_models as m
from archipel.radiology.models import DicomNode


class RemoteNodeError(ValueError):
    """A remote node setting that cannot be accepted; the message says which and why."""


@dataclass(frozen=True)
class RemoteNodeView:
    """A remote node as the CLI and the API list it."""

    node_pk: int
    ae_title: str
    host: str
    port: int
    site: str
    retrieve: str
    dicomweb_url: str
    timeout_seconds: float
    attempts: int


def configure_remote(
    db: Database,
    ae_title: str,
    host: str,
    *,
    retrieve: str,
    dicomweb_url: str = "",
    timeout_seconds: float = 10.0,
    attempts: int = 3,
) -> RemoteNodeView:
    """Make the registered node ``ae_title`` at ``host`` a remote PACS (or change how it is reached).

    ``retrieve`` is ``move`` (the node sends to our listener: it must know our AE title), ``get`` or
    ``dicomweb`` (QIDO-RS and WADO-RS under ``dicomweb_url``). Raises :class:`RemoteNodeError`.
    """
    if retrieve not in m.RETRIEVE_METHODS:
        raise RemoteNodeError(f"retrieve must be one of {', '.join(m.RETRIEVE_METHODS)}, got {retrieve!r}")
    if retrieve == m.DICOMWEB and not dicomweb_url.startswith(("http://", "https://")):
        raise RemoteNodeError("a DICOMweb node needs --dicomweb-url http(s)://.../dicom-web")
    if not 0 < timeout_seconds <= 600:
        raise RemoteNodeError(f"timeout must be within 0-600 s, got {timeout_seconds}")
    if not 1 <= attempts <= 10:
        raise RemoteNodeError(f"attempts must be 1-10, got {attempts}")
    with db.write() as s:
        node = s.execute(
            select(DicomNode).where(DicomNode.ae_title == ae_title.strip(), DicomNode.host == host)
        ).scalar_one_or_none()
        if node is None:
            raise RemoteNodeError(
                f"no registered node {ae_title} at {host}: add it first with 'archipel nodes add'"
            )
        remote = s.execute(select(m.RemoteNode).where(m.RemoteNode.node_pk == node.id)).scalar_one_or_none()
        if remote is None:
            remote = m.RemoteNode(node_pk=node.id)
            s.add(remote)
        remote.retrieve, remote.dicomweb_url = retrieve, dicomweb_url.rstrip("/")
        remote.timeout_seconds, remote.attempts = timeout_seconds, attempts
        s.flush()
        return _view(remote, node)


def remove_remote(db: Database, ae_title: str, host: str) -> bool:
    """Stop querying the node (it stays registered as a DICOM node); whether it was a remote node."""
    with db.write() as s:
        row = s.execute(
            select(m.RemoteNode)
            .join(DicomNode, DicomNode.id == m.RemoteNode.node_pk)
            .where(DicomNode.ae_title == ae_title.strip(), DicomNode.host == host)
        ).scalar_one_or_none()
        if row is None:
            return False
        s.delete(row)
        return True


def list_remotes(db: Database) -> list[RemoteNodeView]:
    """Every remote node, by AE title."""
    with db.sessions() as s:
        rows = s.execute(
            select(m.RemoteNode, DicomNode)
            .join(DicomNode, DicomNode.id == m.RemoteNode.node_pk)
            .order_by(DicomNode.ae_title, DicomNode.id)
        ).all()
    return [_view(r, n) for r, n in rows]


def _view(remote: m.RemoteNode, node: DicomNode) -> RemoteNodeView:
    return RemoteNodeView(
        node_pk=node.id,
        ae_title=node.ae_title.strip(),
        host=node.host,
        port=node.port,
        site=node.site,
        retrieve=remote.retrieve,
        dicomweb_url=remote.dicomweb_url,
        timeout_seconds=remote.timeout_seconds,
        attempts=remote.attempts,
    )
