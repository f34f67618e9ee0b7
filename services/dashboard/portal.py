"""The lab portal: `/portal`, where a lab sees its own traffic and nothing else (SPEC §8.1 onboarding).

Authentication: the lab's own HTTP intake token (`<lab id>.<secret>`), verified against
`labs.token_hash` exactly as the gateway does (`services.core.lab_tokens`), or an OIDC JWT carrying
the lab in its `LABFLOW_DASHBOARD_JWT_LAB_CLAIM` claim (default `labflow_lab`), verified like the
dashboard's. A dashboard (staff) token opens no portal: the portal needs a lab. As on the dashboard,
the token comes as `Authorization: Bearer …` or in the HttpOnly, SameSite=Strict cookie that
`POST /portal/login` sets.

Isolation: the lab comes from the token only — no request parameter names a lab — and every query
filters on it server-side (`services.dashboard.portal_queries`). The registry row is read at every
request, so a new token (`labflow labs token`) or a disabled lab takes effect at once; scrypt runs once
per token and process (a verified token is remembered by its SHA-256 and the hash it matched).

Answers: 401 with a JSON `detail` for a missing, unknown, revoked or expired token, 403 for a disabled
lab, 422 for a malformed period.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, FastAPI, HTTPException, Query, Request
from fastapi.responses import FileResponse, Response
from sqlalchemy import Engine

from services.core.config import Settings
from services.core.lab_tokens import token_fingerprint, token_lab_id, verify_token
from services.dashboard.api import json_response, query_error
from services.dashboard.auth import Authenticator, add_session_routes
from services.dashboard.portal_queries import (
    DEFAULT_PORTAL_DAYS,
    MAX_PORTAL_DAYS,
    conformance,
    frequent_reasons,
    recent_rejections,
    traffic,
)
from services.dashboard.queries import QueryError, connection

PORTAL_COOKIE = "labflow_portal"
_LAB = "SELECT token_hash, enabled FROM labs WHERE lab_id = %s"


@dataclass(frozen=True, slots=True)
class LabPrincipal:
    lab: str
    method: str
    """`lab-token` or `jwt`."""


class LabAuthenticator:
    def __init__(self, engine: Engine, staff: Authenticator, lab_claim: str) -> None:
        self.engine = engine
        self.staff = staff
        self.lab_claim = lab_claim
        self._verified: dict[str, str] = {}  # token fingerprint -> the stored hash it matched
        self._lock = threading.Lock()

    def verify(self, token: str) -> LabPrincipal:
        """The lab of this token, or HTTPException 401 (unknown) / 403 (lab disabled)."""
        if token.count(".") == 2 and self.staff.accepts_jwt:
            claims = self.staff.jwt_claims(token)
            if claims is not None:
                lab = claims.get(self.lab_claim)
                if not isinstance(lab, str) or not lab:
                    raise _unauthorized(f"this identity carries no '{self.lab_claim}' claim naming a lab")
                self._registered(lab)
                return LabPrincipal(lab, "jwt")
        lab = token_lab_id(token)
        stored = self._registered(lab) if lab else None
        if lab is None or stored is None:
            raise _unauthorized("unknown or revoked lab token")
        key = token_fingerprint(token)
        with self._lock:
            known = self._verified.get(key) == stored
        if not known:
            if not verify_token(token, stored):
                raise _unauthorized("unknown or revoked lab token")
            with self._lock:
                self._verified[key] = stored
        return LabPrincipal(lab, "lab-token")

    def _registered(self, lab: str) -> str | None:
        """The lab's token hash (None: none issued); 401 when unregistered, 403 when disabled."""
        with connection(self.engine) as conn:
            row = conn.execute(_LAB, (lab,)).fetchone()
        if row is None:
            raise _unauthorized("unknown or revoked lab token")
        token_hash, enabled = row
        if not enabled:
            raise HTTPException(403, f"lab {lab} is disabled in the lab registry; ask the LabFlow operators")
        return str(token_hash) if token_hash else None

    def require(self, request: Request) -> LabPrincipal:
        """FastAPI dependency: the calling lab, or 401/403."""
        token = self.staff.request_token(request, PORTAL_COOKIE)
        if not token:
            raise _unauthorized("a lab token is required (Authorization: Bearer <lab token>, or log in)")
        return self.verify(token)


def _unauthorized(reason: str) -> HTTPException:
    return HTTPException(401, reason, headers={"WWW-Authenticate": "Bearer"})


def add_portal(
    app: FastAPI, settings: Settings, engine: Engine, staff: Authenticator, static: Path,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> None:
    auth = LabAuthenticator(engine, staff, settings.dashboard_jwt_lab_claim)

    @app.get("/portal", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(static / "portal.html", headers={"Cache-Control": "no-cache"})

    add_session_routes(app, "/portal", PORTAL_COOKIE, settings.dashboard_secure_cookie,
                       lambda token: {"lab": auth.verify(token).lab})

    router = APIRouter(prefix="/portal/api/v1")

    @router.get("/session")
    def session(request: Request) -> dict[str, Any]:
        lab = auth.require(request)
        with connection(engine) as conn:
            onboarding = conformance(conn, lab.lab)
        return {"lab": lab.lab, "method": lab.method, "today": clock().astimezone(UTC).date(),
                "default_days": DEFAULT_PORTAL_DAYS, "max_days": MAX_PORTAL_DAYS,
                "conformance": onboarding}

    @router.get("/traffic", response_model=None)
    def get_traffic(
        request: Request,
        start: Annotated[date | None, Query(alias="from")] = None,
        end: Annotated[date | None, Query(alias="to")] = None,
    ) -> Response:
        """Per reception day: messages AA/AE/AR, results, positives, delays; the delay distribution,
        the last message received and the most frequent rejection reasons of the period."""
        lab = auth.require(request)
        last = end or clock().astimezone(UTC).date()
        first = start or last - timedelta(days=DEFAULT_PORTAL_DAYS - 1)
        try:
            with connection(engine) as conn:
                found = traffic(conn, lab.lab, first, last)
                reasons = frequent_reasons(conn, lab.lab, first, last)
        except QueryError as exc:
            return query_error(exc)
        return json_response({
            "lab": found.lab, "from": found.first, "to": found.last,
            "last_received_at": found.last_received_at,
            "days": [asdict(d) for d in found.days],
            "delays": {"median_hours": found.median_delay_hours, "p90_hours": found.p90_delay_hours,
                       "buckets": [asdict(b) for b in found.delays]},
            "frequent_reasons": [asdict(r) for r in reasons],
        })

    @router.get("/rejections", response_model=None)
    def get_rejections(request: Request, limit: int = 50) -> Response:
        """The latest rejections of this lab: reasons (location, code, text, hint) and replay status."""
        lab = auth.require(request)
        with connection(engine) as conn:
            rows = recent_rejections(conn, lab.lab, limit)
        return json_response({"lab": lab.lab, "rejections": rows})

    app.include_router(router)
