"""The Ed25519 key that signs audit checkpoints, and the set of public keys a verification trusts.

The private key lives outside the index (a PEM file in the data directory, mode 0600, or a configured path), so
someone who can write to the database alone cannot sign a rebuilt chain. Keys are named by a short fingerprint
(``key_id``) stored beside each signature; rotated-out keys stay trusted through ``audit_trusted_keys``.
"""

from __future__ import annotations

import base64
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from archipel.platform.settings import Settings

KEY_FILE = "audit-signing.pem"


class SigningKeyError(Exception):
    """The signing key cannot be read or a trusted key is malformed; the message says which and why."""


def key_id(public: Ed25519PublicKey) -> str:
    """A public key's fingerprint: the first 16 hex digits of the SHA-256 of its raw bytes."""
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def public_text(public: Ed25519PublicKey) -> str:
    """The base64 text of a public key, as ``audit_trusted_keys`` takes it."""
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return base64.b64encode(raw).decode()


def _key_path(settings: Settings) -> Path:
    return Path(settings.audit_signing_key) if settings.audit_signing_key else settings.data_dir / KEY_FILE


def load_signing_key(settings: Settings, *, create: bool = True) -> Ed25519PrivateKey | None:
    """The checkpoint signing key; generated once into the data dir (mode 0600) when none is configured.

    Returns ``None`` when ``create`` is false and no key exists yet.
    """
    path = _key_path(settings)
    if not path.exists():
        if settings.audit_signing_key:
            raise SigningKeyError(f"audit signing key {path.name}: file not found")
        if not create:
            return None
        path.parent.mkdir(parents=True, exist_ok=True)
        pem = Ed25519PrivateKey.generate().private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass  # another process created it between our check and our open: use theirs
        else:
            with os.fdopen(fd, "wb") as f:
                f.write(pem)
                f.flush()
                os.fsync(f.fileno())
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except ValueError as exc:
        raise SigningKeyError(f"audit signing key {path.name}: not a PEM private key ({exc})") from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise SigningKeyError(f"audit signing key {path.name}: not an Ed25519 key")
    return key


@dataclass(frozen=True)
class TrustedKeys:
    """Public keys a verification accepts, by ``key_id``."""

    keys: dict[str, Ed25519PublicKey]

    def verify(self, kid: str, signature_hex: str, payload: bytes) -> str | None:
        """``None`` when ``signature_hex`` is a valid signature of ``payload`` by key ``kid``, else the reason."""
        public = self.keys.get(kid)
        if public is None:
            return f"signed by unknown key {kid}"
        try:
            public.verify(bytes.fromhex(signature_hex), payload)
        except (InvalidSignature, ValueError):
            return f"signature by key {kid} does not match its content"
        return None


def trusted_keys(settings: Settings) -> TrustedKeys:
    """The local signing key's public half (if the key exists) and every configured ``audit_trusted_keys``."""
    keys: dict[str, Ed25519PublicKey] = {}
    own = load_signing_key(settings, create=False)
    if own is not None:
        keys[key_id(own.public_key())] = own.public_key()
    for n, text in enumerate(settings.audit_trusted_keys, start=1):
        try:
            public = Ed25519PublicKey.from_public_bytes(base64.b64decode(text, validate=True))
        except ValueError as exc:
            raise SigningKeyError(f"audit_trusted_keys entry {n}: not a base64 Ed25519 public key") from exc
        keys[key_id(public)] = public
    return TrustedKeys(keys)
