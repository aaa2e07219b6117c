"""A throw-away public-key infrastructure for TLS tests: a CA, a server and clients it signs, and a stranger."""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


@dataclass(frozen=True)
class Identity:
    """A certificate and its private key, as PEM files."""

    cert: Path
    key: Path


@dataclass(frozen=True)
class Pki:
    """The CA's certificate; ``server`` (for localhost and 127.0.0.1) and ``client`` signed by it; ``stranger``,
    self-signed, that the CA never saw."""

    ca: Path
    server: Identity
    client: Identity
    stranger: Identity


def _name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])


def _key() -> rsa.RSAPrivateKey:
    # RSA 2048, which dcmtk's default BCP 195 profile accepts.
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _write(folder: Path, stem: str, cert: x509.Certificate, key: rsa.RSAPrivateKey) -> Identity:
    identity = Identity(folder / f"{stem}.crt", folder / f"{stem}.key")
    identity.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    identity.key.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
    )
    identity.key.chmod(0o600)
    return identity


def _certificate(
    subject: str, key: rsa.RSAPrivateKey, issuer: str, issuer_key: rsa.RSAPrivateKey, *, ca: bool
) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(_name(issuer))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if ca:
        builder = builder.add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
    else:
        builder = builder.add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        ).add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
            critical=False,
        )
    return builder.sign(issuer_key, hashes.SHA256())


def make_pki(folder: Path) -> Pki:
    """Write a CA, a server and a client certificate it signs, and a self-signed stranger into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    ca_key = _key()
    ca_cert = _certificate("Test CA", ca_key, "Test CA", ca_key, ca=True)
    ca_path = folder / "ca.crt"
    ca_path.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    server_key, client_key, stranger_key = _key(), _key(), _key()
    return Pki(
        ca=ca_path,
        server=_write(
            folder, "server", _certificate("localhost", server_key, "Test CA", ca_key, ca=False), server_key
        ),
        client=_write(
            folder, "client", _certificate("modality", client_key, "Test CA", ca_key, ca=False), client_key
        ),
        stranger=_write(
            folder,
            "stranger",
            _certificate("stranger", stranger_key, "stranger", stranger_key, ca=False),
            stranger_key,
        ),
    )
