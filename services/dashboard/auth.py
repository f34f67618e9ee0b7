"""Who may read the dashboard: static bearer tokens (a laptop) and/or OIDC JWTs (production).

A request authenticates with `Authorization: Bearer <token>` or with the session cookie that
`POST /login` sets in a browser (HttpOnly, SameSite=Strict: page scripts cannot read it and other
sites cannot send it). Either kind of token is accepted in both places: a JWT is recognised by its
shape (three dot-separated parts) and verified (signature, expiry, issuer and audience when set).

`add_session_routes` is the browser login and logout of both the dashboard (`/login`, staff) and the
lab portal (`/portal/login`, a lab): the same cookie policy, each with its own cookie, path and check
of the token.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import jwt
from fastapi import Body, FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse

from services.core.config import Settings

COOKIE_NAME = "labflow_dashboard"
JWT_ALGORITHMS = ["RS256", "RS384", "RS512", "PS256", "ES256", "ES384", "EdDSA"]


class AuthNotConfigured(RuntimeError):
    pass


@dataclass(frozen=True, slots=True)
class Principal:
    subject: str
    method: str
    """`token` or `jwt`."""


class Authenticator:
    def __init__(self, settings: Settings) -> None:
        raw = settings.dashboard_tokens.get_secret_value() if settings.dashboard_tokens else ""
        self._tokens = [t.strip().encode() for t in raw.split(",") if t.strip()]
        jwks_url = settings.dashboard_jwt_jwks_url
        self._jwks = jwt.PyJWKClient(jwks_url) if jwks_url else None
        self._public_key = _pem(settings.dashboard_jwt_public_key)
        self._issuer = settings.dashboard_jwt_issuer
        self._audience = settings.dashboard_jwt_audience
        if not self._tokens and self._jwks is None and self._public_key is None:
            raise AuthNotConfigured(
                "the dashboard needs LABFLOW_DASHBOARD_TOKENS or LABFLOW_DASHBOARD_JWT_JWKS_URL / "
                "LABFLOW_DASHBOARD_JWT_PUBLIC_KEY (`labflow stack up` writes a demo token)"
            )

    def verify(self, token: str) -> Principal | None:
        if token.count(".") == 2 and self.accepts_jwt:
            return self._verify_jwt(token)
        candidate = token.encode()
        # compare with every token so the time taken does not tell which one nearly matched
        matched = [i for i, known in enumerate(self._tokens) if hmac.compare_digest(candidate, known)]
        return Principal(f"token-{matched[0] + 1}", "token") if matched else None

    @property
    def accepts_jwt(self) -> bool:
        return self._jwks is not None or self._public_key is not None

    def _verify_jwt(self, token: str) -> Principal | None:
        claims = self.jwt_claims(token)
        return None if claims is None else Principal(str(claims["sub"]), "jwt")

    def jwt_claims(self, token: str) -> dict[str, Any] | None:
        """The claims of a valid JWT (signature, expiry, issuer and audience when set), else None."""
        try:
            key: Any = (self._jwks.get_signing_key_from_jwt(token).key if self._jwks is not None
                        else self._public_key)
            claims = jwt.decode(
                token, key, algorithms=JWT_ALGORITHMS, audience=self._audience, issuer=self._issuer,
                options={"require": ["exp", "sub"], "verify_aud": self._audience is not None},
            )
        except jwt.PyJWTError:
            return None
        return dict(claims)

    def request_token(self, request: Request, cookie: str = COOKIE_NAME) -> str | None:
        header = request.headers.get("authorization", "")
        scheme, _, value = header.partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
        return request.cookies.get(cookie)

    def require(self, request: Request) -> Principal:
        """FastAPI dependency: the caller, or 401."""
        token = self.request_token(request)
        principal = self.verify(token) if token else None
        if principal is None:
            raise HTTPException(401, "authentication required", headers={"WWW-Authenticate": "Bearer"})
        return principal


def add_session_routes(
    app: FastAPI, base: str, cookie: str, secure_cookie: bool, sign_in: Callable[[str], dict[str, str]],
) -> None:
    """`POST <base>/login {"token": …}` and `POST <base>/logout` for a page under `base` ('' or '/portal').

    `sign_in` checks the token and says who it is (the JSON answer), or raises HTTPException (its status
    and detail are the answer, and no cookie is set). A good token goes into the cookie `cookie`: HttpOnly
    (page scripts cannot read it), SameSite=Strict (another site cannot make the browser send it, so no
    cross-site request can use the session), scoped to `base` (the dashboard's cookie reaches the
    dashboard, the portal's only `/portal`), Secure when configured or over https.
    """
    path = base or "/"

    @app.post(f"{base}/login")
    def login(request: Request, token: Annotated[str, Body(embed=True)]) -> JSONResponse:
        token = token.strip()
        try:
            signed_in = sign_in(token)
        except HTTPException as exc:
            return JSONResponse({"detail": exc.detail}, status_code=exc.status_code)
        response = JSONResponse(signed_in)
        response.set_cookie(cookie, token, httponly=True, samesite="strict", path=path,
                            secure=secure_cookie or request.url.scheme == "https")
        return response

    @app.post(f"{base}/logout")
    def logout() -> JSONResponse:
        response = JSONResponse({"status": "logged out"})
        response.delete_cookie(cookie, path=path)
        return response


def _pem(value: str | None) -> str | None:
    """A PEM key given inline, or the path of a PEM file."""
    if not value:
        return None
    if value.lstrip().startswith("-----BEGIN"):
        return value
    return Path(value).read_text()
