"""Professionals authenticated by an external OpenID Connect provider, such as Pro Sante Connect.

A token signed by the provider (RS256/PS256/ES256, keys from its JWKS URL) is accepted when its issuer, audience
and lifetime check out. The configured subject claim (the RPPS number for Pro Sante Connect) names the person,
and the configured role claim is mapped to an Archipel role; a person with no mapped role is refused.
Such a token can be used directly as a bearer token, or exchanged once for an Archipel session
(POST /api/auth/oidc), which then follows the local idle/absolute/revocation rules; browsers use the
authorization-code flow (``oidc_flow``).
"""

from __future__ import annotations

import hmac
import logging
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import jwt

from archipel.platform.authn import ROLES, AuthError, Principal
from archipel.platform.settings import Settings

log = logging.getLogger("archipel.auth")

ALGORITHMS = ("RS256", "PS256", "ES256")
LEEWAY_SECONDS = 30


@dataclass(frozen=True)
class OidcConfig:
    """What to trust and how to read its claims."""

    issuer: str
    jwks_url: str
    audience: str
    subject_claim: str = "sub"
    subject_prefix: str = "oidc:"
    role_claim: str = "roles"
    role_map: dict[str, str] = field(default_factory=dict)
    site_claim: str = ""

    @classmethod
    def from_settings(cls, settings: Settings) -> OidcConfig | None:
        """The configuration in ``settings``, or ``None`` when no provider is configured."""
        if not (settings.oidc_issuer and settings.oidc_jwks_url):
            return None
        return cls(
            issuer=settings.oidc_issuer,
            jwks_url=settings.oidc_jwks_url,
            audience=settings.oidc_audience,
            subject_claim=settings.oidc_subject_claim,
            subject_prefix=settings.oidc_subject_prefix,
            role_claim=settings.oidc_role_claim,
            role_map=dict(settings.oidc_role_map),
            site_claim=settings.oidc_site_claim,
        )


_clients: dict[str, jwt.PyJWKClient] = {}
_clients_lock = threading.Lock()


def _jwks(url: str) -> jwt.PyJWKClient:
    # One client per URL and process: it caches the key set, and refetches it when an unknown kid shows up.
    with _clients_lock:
        client = _clients.get(url)
        if client is None:
            client = _clients[url] = jwt.PyJWKClient(url, cache_keys=True, lifespan=300, timeout=5)
        return client


def is_provider_token(token: str) -> bool:
    """Whether ``token`` is signed with an asymmetric algorithm (so not one of our HS256 tokens)."""
    try:
        return jwt.get_unverified_header(token).get("alg") in ALGORITHMS
    except jwt.PyJWTError:
        return False


def _map_role(config: OidcConfig, claims: dict[str, Any]) -> str:
    values = claims.get(config.role_claim, [])
    for value in values if isinstance(values, list) else [values]:
        role = config.role_map.get(str(value))
        if role in ROLES:
            return role
    raise AuthError("no Archipel role is mapped to this identity's professions", status=403)


def verify(config: OidcConfig, token: str, now: datetime, nonce: str | None = None) -> Principal:
    """The professional a provider-signed ``token`` names; :class:`AuthError` with the reason otherwise.

    ``nonce``, when given (authorization-code flow), must equal the token's ``nonce`` claim.
    """
    try:
        key = _jwks(config.jwks_url).get_signing_key_from_jwt(token)
    except jwt.PyJWKClientConnectionError as exc:
        log.warning("event=oidc_jwks_unreachable")
        raise AuthError("identity provider keys unavailable", status=503) from exc
    except jwt.PyJWTError as exc:
        raise AuthError("invalid token: unknown signing key") from exc
    try:
        claims: dict[str, Any] = jwt.decode(
            token,
            key.key,
            algorithms=list(ALGORITHMS),
            audience=config.audience or None,
            issuer=config.issuer,
            options={
                "verify_exp": False,
                "verify_nbf": False,
                "verify_iat": False,
                "verify_aud": bool(config.audience),
                "require": ["exp", "iss", config.subject_claim],
            },
        )
    except jwt.InvalidAudienceError as exc:
        raise AuthError("invalid token: wrong audience") from exc
    except jwt.InvalidIssuerError as exc:
        raise AuthError("invalid token: wrong issuer") from exc
    except jwt.PyJWTError as exc:
        raise AuthError("invalid token") from exc
    if nonce is not None and not hmac.compare_digest(str(claims.get("nonce", "")), nonce):
        raise AuthError("invalid token: nonce mismatch")
    t = now.timestamp()
    if float(claims["exp"]) + LEEWAY_SECONDS <= t:
        raise AuthError("token expired")
    if "nbf" in claims and float(claims["nbf"]) - LEEWAY_SECONDS > t:
        raise AuthError("invalid token: not valid yet")
    subject = str(claims[config.subject_claim]).strip()
    if not subject:
        raise AuthError(f"invalid token: empty {config.subject_claim}")
    auth_at = claims.get("auth_time", claims.get("iat", t))
    site = str(claims.get(config.site_claim, "")) if config.site_claim else ""
    return Principal(
        subject=(config.subject_prefix + subject)[:160],
        role=_map_role(config, claims),
        site=site[:64],
        kind="user",
        auth_time=datetime.fromtimestamp(float(auth_at), UTC),
        method="oidc",
    )
