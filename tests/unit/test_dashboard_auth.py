"""Dashboard access: static tokens, JWTs (a key pair made here, PEM and JWKS), the browser login."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from fastapi.testclient import TestClient
from pydantic import SecretStr

from services.core.config import Settings
from services.dashboard.app import build_app
from services.dashboard.auth import COOKIE_NAME, Authenticator, AuthNotConfigured

ISSUER, AUDIENCE = "https://id.example.fr/realms/sante", "labflow-dashboard"


@pytest.fixture(scope="module")
def key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def public_pem(key: rsa.RSAPrivateKey) -> str:
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()


def token_for(key: rsa.RSAPrivateKey, **claims: Any) -> str:
    now = int(time.time())
    body = {"sub": "epi-42", "iss": ISSUER, "aud": AUDIENCE, "iat": now, "exp": now + 300, **claims}
    return jwt.encode({k: v for k, v in body.items() if v is not None}, key, algorithm="RS256",
                      headers={"kid": "k1"})


def settings(**values: Any) -> Settings:
    return Settings(database_url="postgresql://nobody@127.0.0.1:1/none", **values)


def test_without_any_credential_source_the_dashboard_refuses_to_start() -> None:
    with pytest.raises(AuthNotConfigured):
        Authenticator(settings())


def test_static_tokens() -> None:
    auth = Authenticator(settings(dashboard_tokens=SecretStr("alpha, beta")))
    assert auth.verify("alpha") is not None and auth.verify("beta") is not None
    assert auth.verify("gamma") is None and auth.verify("") is None and auth.verify("alph") is None
    assert auth.verify("a.b.c") is None  # JWT-shaped but no JWT key configured


def test_jwt_with_a_pem_key(key: rsa.RSAPrivateKey) -> None:
    auth = Authenticator(settings(dashboard_jwt_public_key=public_pem(key), dashboard_jwt_issuer=ISSUER,
                                  dashboard_jwt_audience=AUDIENCE))
    principal = auth.verify(token_for(key))
    assert principal is not None and (principal.subject, principal.method) == ("epi-42", "jwt")
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    assert auth.verify(token_for(other)) is None
    assert auth.verify(token_for(key, exp=int(time.time()) - 10)) is None
    assert auth.verify(token_for(key, aud="someone-else")) is None
    assert auth.verify(token_for(key, iss="https://evil.example")) is None
    assert auth.verify(token_for(key, exp=None)) is None
    unsigned = jwt.encode({"sub": "x", "exp": int(time.time()) + 60, "iss": ISSUER, "aud": AUDIENCE},
                          "a-shared-secret-of-more-than-32-bytes", algorithm="HS256")
    assert auth.verify(unsigned) is None


@pytest.fixture
def jwks_url(key: rsa.RSAPrivateKey) -> Iterator[str]:
    jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()))
    body = json.dumps({"keys": [{**jwk, "kid": "k1", "use": "sig", "alg": "RS256"}]}).encode()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/jwks.json"
    server.shutdown()


def test_jwt_with_a_jwks_url(key: rsa.RSAPrivateKey, jwks_url: str) -> None:
    auth = Authenticator(settings(dashboard_jwt_jwks_url=jwks_url, dashboard_jwt_issuer=ISSUER,
                                  dashboard_jwt_audience=AUDIENCE))
    assert auth.verify(token_for(key)) is not None
    assert auth.verify(token_for(key, aud="other")) is None


def test_browser_login_sets_an_http_only_cookie_and_ops_stay_open(key: rsa.RSAPrivateKey) -> None:
    app = build_app(settings(dashboard_tokens=SecretStr("demo-token"),
                             dashboard_jwt_public_key=public_pem(key), dashboard_jwt_issuer=ISSUER,
                             dashboard_jwt_audience=AUDIENCE))
    client = TestClient(app)
    assert client.get("/healthz").status_code == 200
    assert client.get("/metrics").status_code == 200
    page = client.get("/")
    assert page.status_code == 200 and "login-form" in page.text
    assert client.get("/static/app.js").status_code == 200
    assert client.get("/api/v1/session").status_code == 401
    assert client.get("/api/v1/session").headers["www-authenticate"] == "Bearer"

    assert client.post("/login", json={"token": "nope"}).status_code == 401
    response = client.post("/login", json={"token": "demo-token"})
    assert response.status_code == 200
    cookie = response.headers["set-cookie"]
    assert f"{COOKIE_NAME}=demo-token" in cookie and "HttpOnly" in cookie and "SameSite=strict" in cookie
    assert "Path=/;" in cookie
    assert client.get("/api/v1/session").json() == {"subject": "token-1", "method": "token"}
    client.post("/logout")
    client.cookies.clear()
    assert client.get("/api/v1/session").status_code == 401

    bearer = {"Authorization": f"Bearer {token_for(key)}"}
    assert client.get("/api/v1/session", headers=bearer).json() == {"subject": "epi-42", "method": "jwt"}


def test_the_session_cookie_is_secure_when_configured_or_over_https() -> None:
    def cookie(base_url: str, **values: Any) -> str:
        app = build_app(settings(dashboard_tokens=SecretStr("demo-token"), **values))
        response = TestClient(app, base_url=base_url).post("/login", json={"token": "demo-token"})
        return str(response.headers["set-cookie"])

    assert "Secure" not in cookie("http://testserver")
    assert "Secure" in cookie("http://testserver", dashboard_secure_cookie=True)
    assert "Secure" in cookie("https://testserver")
