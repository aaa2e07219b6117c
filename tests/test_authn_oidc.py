"""OpenID Connect: tokens of an external provider (a Pro Sante Connect look-alike) served from a local JWKS."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, parse_qsl, urlsplit

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from fastapi.testclient import TestClient

from archipel.platform.runtime import Runtime
from tests.auth_helpers import bearer, client, denied_events

ISSUER = "https://auth.esante.test/auth/realms/esante-wallet"
AUDIENCE = "archipel-test"
CLIENT_ID = "archipel-client"
CLIENT_SECRET = "client-secret-for-tests"
RADIOLOGY = "10^1.2.250.1.213.1.1.5.5^G15_10/SM26"


class Provider:
    """An identity provider's signing key, and a loopback HTTP server publishing its JWKS."""

    def __init__(self) -> None:
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.kid = "psc-test-1"
        public = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(self.key.public_key()))
        jwks = json.dumps({"keys": [{**public, "kid": self.kid, "use": "sig", "alg": "RS256"}]}).encode()
        self.requests = 0
        #: authorization codes handed out: code -> (PKCE challenge, nonce)
        self.codes: dict[str, tuple[str, str]] = {}
        self.redeemed: list[dict[str, str]] = []
        provider = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                form = dict(parse_qsl(self.rfile.read(int(self.headers["Content-Length"])).decode()))
                provider.redeemed.append(form)
                challenge, nonce = provider.codes.pop(form.get("code", ""), ("", ""))
                verifier = form.get("code_verifier", "").encode()
                pkce = base64.urlsafe_b64encode(hashlib.sha256(verifier).digest()).rstrip(b"=").decode()
                if not challenge or pkce != challenge or form.get("client_secret") != CLIENT_SECRET:
                    body, code = b'{"error": "invalid_grant"}', 400
                else:
                    body, code = (
                        json.dumps({"id_token": provider.token(aud=CLIENT_ID, nonce=nonce)}).encode(),
                        200,
                    )
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:
                provider.requests += 1
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(jwks)))
                self.end_headers()
                self.wfile.write(jwks)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    @property
    def jwks_url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/protocol/openid-connect/certs"

    def token(self, key: Any = None, kid: str | None = None, **overrides: Any) -> str:
        now = int(time.time())
        claims = {
            "iss": ISSUER,
            "aud": AUDIENCE,
            "sub": "f:550dc1c8-d97b-4b1e-ac8c-8eb4471cf9dd:ANS",
            "SubjectNameID": "810100000001",
            "SubjectRole": [RADIOLOGY],
            "iat": now,
            "auth_time": now,
            "exp": now + 300,
            **overrides,
        }
        return jwt.encode(claims, key or self.key, algorithm="RS256", headers={"kid": kid or self.kid})

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def provider(runtime: Runtime) -> Iterator[Provider]:
    p = Provider()
    s = runtime.settings
    s.oidc_issuer, s.oidc_jwks_url, s.oidc_audience = ISSUER, p.jwks_url, AUDIENCE
    s.oidc_subject_claim, s.oidc_subject_prefix = "SubjectNameID", "rpps:"
    s.oidc_role_claim = "SubjectRole"
    s.oidc_role_map = {RADIOLOGY: "radiologist"}
    s.oidc_client_id, s.oidc_client_secret = CLIENT_ID, CLIENT_SECRET
    s.oidc_authorization_url = p.base + "/protocol/openid-connect/auth"
    s.oidc_token_url = p.base + "/protocol/openid-connect/token"
    s.oidc_redirect_url = "https://testserver/api/auth/oidc/callback"
    try:
        yield p
    finally:
        p.close()


def _hs256_with(secret: bytes, header: dict[str, Any], claims: dict[str, Any]) -> str:
    def part(value: dict[str, Any]) -> bytes:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=")

    signing_input = part(header) + b"." + part(claims)
    mac = hmac.new(secret, signing_input, hashlib.sha256).digest()
    return (signing_input + b"." + base64.urlsafe_b64encode(mac).rstrip(b"=")).decode()


def test_a_provider_token_is_accepted_as_bearer_with_its_rpps_and_mapped_role(
    provider: Provider, http: TestClient
) -> None:
    me = http.get("/api/auth/me", headers=bearer(provider.token()))
    assert me.status_code == 200, me.text
    assert {k: v for k, v in me.json().items() if k != "auth_time"} == {
        "subject": "rpps:810100000001",
        "role": "radiologist",
        "site": "",
        "kind": "user",
        "method": "oidc",
    }
    assert http.get("/api/jobs", headers=bearer(provider.token())).status_code == 200
    assert provider.requests == 1  # the key set is cached


def test_a_provider_token_can_be_exchanged_for_a_revocable_session(
    provider: Provider, http: TestClient
) -> None:
    r = http.post("/api/auth/oidc", data={"id_token": provider.token()})
    assert r.status_code == 200, r.text
    token = r.json()["access_token"]
    assert http.get("/api/auth/me", headers=bearer(token)).json()["subject"] == "rpps:810100000001"
    http.post("/api/auth/logout", headers=bearer(token))
    assert http.get("/api/auth/me", headers=bearer(token)).json()["detail"] == "session revoked"


def test_bad_provider_tokens_are_refused_with_their_reason_and_audited(
    runtime: Runtime, provider: Provider, http: TestClient
) -> None:
    stranger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    cases = {
        provider.token(aud="another-app"): (401, "invalid token: wrong audience"),
        provider.token(iss="https://evil.test"): (401, "invalid token: wrong issuer"),
        provider.token(exp=int(time.time()) - 120): (401, "token expired"),
        provider.token(key=stranger): (401, "invalid token"),
        provider.token(key=stranger, kid="unknown-kid"): (401, "invalid token: unknown signing key"),
        provider.token(SubjectRole=["40^1.2.250.1.213.1.1.5.5^G15_40"]): (
            403,
            "no Archipel role is mapped to this identity's professions",
        ),
    }
    before = len(denied_events(runtime, "token-check"))
    for token, (status, reason) in cases.items():
        r = http.get("/api/auth/me", headers=bearer(token))
        assert (r.status_code, r.json()["detail"]) == (status, reason)
    assert len(denied_events(runtime, "token-check")) == before + len(cases)
    r = http.post("/api/auth/oidc", data={"id_token": provider.token(aud="another-app")})
    assert r.status_code == 401
    assert denied_events(runtime, "login-oidc")[-1].detail == "invalid token: wrong audience"


def test_the_provider_public_key_used_as_an_hmac_secret_is_refused(
    provider: Provider, http: TestClient
) -> None:
    public_pem = provider.key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    confused = _hs256_with(
        public_pem,
        {"alg": "HS256", "typ": "JWT", "kid": provider.kid},
        {
            "iss": ISSUER,
            "aud": AUDIENCE,
            "SubjectNameID": "1",
            "SubjectRole": [RADIOLOGY],
            "exp": int(time.time()) + 60,
        },
    )
    r = http.get("/api/auth/me", headers=bearer(confused))
    assert (r.status_code, r.json()["detail"]) == (401, "invalid token")


def _start(http: TestClient, provider: Provider, next_page: str = "/viewer") -> dict[str, str]:
    r = http.get("/api/auth/oidc/start", params={"next": next_page}, follow_redirects=False)
    assert r.status_code == 302
    location = urlsplit(r.headers["location"])
    assert (
        f"{location.scheme}://{location.netloc}{location.path}"
        == provider.base + "/protocol/openid-connect/auth"
    )
    query = {k: v[0] for k, v in parse_qs(location.query).items()}
    assert query["response_type"] == "code" and query["client_id"] == CLIENT_ID
    assert query["code_challenge_method"] == "S256"
    assert "httponly" in r.headers["set-cookie"].lower() and "samesite=lax" in r.headers["set-cookie"].lower()
    return query


def test_the_authorization_code_flow_opens_a_web_session(provider: Provider, http: TestClient) -> None:
    query = _start(http, provider)
    provider.codes["code-1"] = (query["code_challenge"], query["nonce"])
    r = http.get(
        "/api/auth/oidc/callback", params={"code": "code-1", "state": query["state"]}, follow_redirects=False
    )
    assert r.status_code == 303, r.text
    assert r.headers["location"] == "/viewer"
    assert provider.redeemed[-1]["redirect_uri"] == "https://testserver/api/auth/oidc/callback"
    me = http.get("/api/auth/me")
    assert me.status_code == 200 and me.json()["subject"] == "rpps:810100000001"
    assert me.json()["method"] == "oidc"


def test_the_authorization_code_flow_refuses_a_wrong_state_a_bad_code_and_an_open_redirect(
    runtime: Runtime, provider: Provider, http: TestClient
) -> None:
    query = _start(http, provider, next_page="//evil.example/")
    provider.codes["code-2"] = (query["code_challenge"], query["nonce"])
    r = http.get(
        "/api/auth/oidc/callback", params={"code": "code-2", "state": "forged"}, follow_redirects=False
    )
    assert (r.status_code, r.json()["detail"]) == (400, "OIDC state mismatch")
    r = http.get(
        "/api/auth/oidc/callback", params={"code": "unknown", "state": query["state"]}, follow_redirects=False
    )
    assert (r.status_code, r.json()["detail"]) == (401, "identity provider did not accept the code")
    r = http.get(
        "/api/auth/oidc/callback", params={"code": "code-2", "state": query["state"]}, follow_redirects=False
    )
    assert r.status_code == 303 and r.headers["location"] == "/"
    with client() as stranger:
        r = stranger.get("/api/auth/oidc/callback", params={"code": "x", "state": query["state"]})
        assert r.status_code == 400 and "not started here" in r.json()["detail"]
    reasons = [e.detail for e in denied_events(runtime, "login-oidc")]
    assert reasons[-3:] == [
        "OIDC state mismatch",
        "identity provider did not accept the code",
        "OIDC login not started here or expired; start again",
    ]


def test_an_id_token_with_another_nonce_is_refused(provider: Provider, http: TestClient) -> None:
    query = _start(http, provider)
    provider.codes["code-3"] = (query["code_challenge"], "another-nonce")
    r = http.get(
        "/api/auth/oidc/callback", params={"code": "code-3", "state": query["state"]}, follow_redirects=False
    )
    assert (r.status_code, r.json()["detail"]) == (401, "invalid token: nonce mismatch")
