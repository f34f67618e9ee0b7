"""Dashboard bootstrap: the FastAPI app (page, login, API, the lab portal, ops endpoints) and the rollup
refresher."""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import uvicorn
from fastapi import FastAPI, HTTPException, Request, Response
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles
from prometheus_client import (
    REGISTRY,
    CollectorRegistry,
    Gauge,
    Histogram,
)
from sqlalchemy import Engine

from services.core.config import Settings
from services.core.db.engine import make_engine
from services.core.logs import configure_logging, get_logger
from services.core.ops_http import add_ops_routes
from services.core.reference import load_geography
from services.dashboard.api import create_router
from services.dashboard.auth import COOKIE_NAME, Authenticator, add_session_routes
from services.dashboard.names import load_names
from services.dashboard.portal import add_portal
from services.dashboard.queries import connection, lab_report, refresh_rollups

STATIC = Path(__file__).parent / "static"

REQUEST_SECONDS = Histogram(
    "labflow_dashboard_request_seconds", "Dashboard API request duration", ["endpoint", "status"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.5, 1, 2.5, 5),
)
ROLLUP_AGE = Gauge("labflow_dashboard_rollup_age_seconds",
                   "Time since the national and regional rollups were last refreshed (+Inf: never)")
ROLLUP_REFRESH = Histogram(
    "labflow_dashboard_rollup_refresh_seconds", "Duration of one refresh of the rollups",
    buckets=(0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
)
SILENT_LABS = Gauge("labflow_dashboard_silent_labs",
                    "Labs that reported before and have received nothing for more than 24 h (lab_daily)")

log = get_logger(__name__)


class RollupRefresher:
    """Refreshes the rollups every `period_s` and counts silent labs for the alert."""

    def __init__(self, engine: Engine, period_s: float, clock: Callable[[], datetime]) -> None:
        self.engine = engine
        self.period_s = period_s
        self.clock = clock
        self.refreshed_at: float | None = None
        self._stop = threading.Event()
        ROLLUP_AGE.set_function(self.age_seconds)

    def age_seconds(self) -> float:
        return math.inf if self.refreshed_at is None else time.monotonic() - self.refreshed_at

    def refresh(self) -> None:
        started = time.monotonic()
        if refresh_rollups(self.engine):
            ROLLUP_REFRESH.observe(time.monotonic() - started)
        # another replica refreshing counts as fresh: its refresh serves us too
        self.refreshed_at = time.monotonic()
        now = self.clock()
        with connection(self.engine) as conn:
            SILENT_LABS.set(len(lab_report(conn, now.date(), now.date(), now).silent))

    def run(self) -> None:
        while not self._stop.is_set():
            try:
                self.refresh()
            except Exception:
                log.exception("dashboard.refresh_failed")
            self._stop.wait(self.period_s)

    def stop(self) -> None:
        self._stop.set()


def build_app(
    settings: Settings,
    engine: Engine | None = None,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    registry: CollectorRegistry = REGISTRY,
    ready: Callable[[], bool] = lambda: True,
) -> FastAPI:
    auth = Authenticator(settings)
    engine = engine or make_engine(settings.database_url_for("dashboard"), pool_size=8)
    geography, region_names = load_geography(settings.reference_dir)
    app = FastAPI(title="LabFlow dashboard", docs_url=None, redoc_url=None)

    @app.middleware("http")
    async def measure(request: Request, call_next: Callable[[Request], object]) -> Response:
        started = time.perf_counter()
        response: Response = await call_next(request)  # type: ignore[misc]
        route = request.scope.get("route")
        if request.url.path.startswith("/api/") and route is not None:
            REQUEST_SECONDS.labels(getattr(route, "path", "?"), str(response.status_code)).observe(
                time.perf_counter() - started)
        return response

    def not_ready() -> str | None:
        try:
            with connection(engine) as conn:
                conn.execute("SELECT 1")
        except Exception as exc:
            return type(exc).__name__
        return None if ready() else "rollups not refreshed yet"

    add_ops_routes(app, not_ready, registry)

    def staff_sign_in(token: str) -> dict[str, str]:
        principal = auth.verify(token)
        if principal is None:
            raise HTTPException(401, "unknown or expired token")
        return {"subject": principal.subject}

    add_session_routes(app, "", COOKIE_NAME, settings.dashboard_secure_cookie, staff_sign_in)

    @app.get("/", include_in_schema=False)
    def index() -> FileResponse:
        return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})

    app.include_router(create_router(geography, engine, auth, clock, load_names(region_names)))
    add_portal(app, settings, engine, auth, STATIC, clock)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return app


def run_service(settings: Settings) -> None:
    configure_logging("dashboard", settings.log_level)
    engine = make_engine(settings.database_url_for("dashboard"), pool_size=8)
    refresher = RollupRefresher(engine, settings.dashboard_rollup_refresh_s, lambda: datetime.now(UTC))
    thread = threading.Thread(target=refresher.run, name="dashboard-rollups", daemon=True)
    app = build_app(settings, engine, ready=lambda: refresher.refreshed_at is not None)
    thread.start()
    log.info("dashboard.start", url=f"http://{settings.dashboard_host}:{settings.dashboard_port}/")
    try:
        uvicorn.run(app, host=settings.dashboard_host, port=settings.dashboard_port,
                    log_config=None, access_log=False)
    finally:
        refresher.stop()
        thread.join(30)
