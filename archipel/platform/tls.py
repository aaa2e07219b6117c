"""TLS set-up shared by the HTTP API and the DICOM listener: certificate files checked up front, server contexts.

A wrong path or a key that does not match its certificate is reported at start-up with the setting to fix,
instead of surfacing later as a handshake failure on the first connection.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path


class TlsSettingError(ValueError):
    """A TLS setting names a missing or unreadable file, or half of a pair is missing; the message says which."""


@dataclass(frozen=True)
class TlsFiles:
    """The PEM files of one TLS endpoint: certificate chain, private key, and optionally a CA for clients."""

    cert: Path
    key: Path
    ca: Path | None = None


def tls_files(cert: str, key: str, ca: str = "", *, prefix: str) -> TlsFiles | None:
    """The endpoint's files from its settings (``PREFIX_tls_cert``, ``_key``, ``_ca``), or ``None`` for plain
    traffic when both ``cert`` and ``key`` are empty. Raises :class:`TlsSettingError` for a half-set pair or a
    missing file."""
    if not cert and not key:
        if ca:
            raise TlsSettingError(
                f"{prefix}_tls_ca is set but {prefix}_tls_cert and {prefix}_tls_key are not"
            )
        return None
    if not cert or not key:
        missing = f"{prefix}_tls_cert" if not cert else f"{prefix}_tls_key"
        raise TlsSettingError(f"{missing} is empty: {prefix}_tls_cert and {prefix}_tls_key go together")
    files = TlsFiles(Path(cert), Path(key), Path(ca) if ca else None)
    for name, path in (("cert", files.cert), ("key", files.key), ("ca", files.ca)):
        if path is not None and not path.is_file():
            raise TlsSettingError(f"{prefix}_tls_{name}: no file {path.name!r} at the configured path")
    return files


def server_context(files: TlsFiles) -> ssl.SSLContext:
    """A server context with ``files``' certificate (TLS 1.2 at least); with a CA, clients must present a
    certificate it signed."""
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_cert_chain(files.cert, files.key)
        if files.ca is not None:
            ctx.load_verify_locations(cafile=files.ca)
    except ssl.SSLError as exc:
        raise TlsSettingError(f"TLS files {files.cert.name} / {files.key.name}: {exc.reason or exc}") from exc
    ctx.verify_mode = ssl.CERT_REQUIRED if files.ca is not None else ssl.CERT_NONE
    return ctx
