"""Open-data bootstrap: metrics, the daily schedule and the HTTP server."""

from __future__ import annotations

import math
import threading
import time
from datetime import UTC, datetime, timedelta
from datetime import time as clock_time
from pathlib import Path
from zoneinfo import ZoneInfo

import psycopg
import uvicorn
from fastapi import FastAPI
from prometheus_client import Counter, Gauge, Histogram

from services.core.config import Settings
from services.core.consume import backoff_s
from services.core.domain.model import PARIS
from services.core.logs import configure_logging, get_logger
from services.opendata.export import export
from services.opendata.files import Publication, read_index
from services.opendata.http import create_app

PUBLICATION_AGE = Gauge(
    "labflow_opendata_publication_age_seconds",
    "Time since the latest publication was generated (+Inf when there is none)",
)
ROWS_WRITTEN = Counter("labflow_opendata_rows_written_total",
                       "Data rows written to open-data files", ["file"])
PUBLISH_SECONDS = Histogram(
    "labflow_opendata_publish_seconds", "Duration of one publication (query, computation, files)",
    buckets=(0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300),
)
PUBLISH_FAILURES = Counter("labflow_opendata_publish_failures_total", "Publications that failed")
RETRY_AFTER_S = 300.0

log = get_logger(__name__)


def publication_age_seconds(directory: Path, now: datetime) -> float:
    index = read_index(directory)
    if index is None:
        return math.inf
    return (now - datetime.fromisoformat(index["generated_at"])).total_seconds()


def publish_now(settings: Settings) -> Publication:
    """One publication, measured and logged."""
    started = time.monotonic()
    try:
        publication = export(settings, datetime.now(UTC))
    except Exception:
        PUBLISH_FAILURES.inc()
        log.exception("opendata.publish_failed")
        raise
    duration = time.monotonic() - started
    PUBLISH_SECONDS.observe(duration)
    for f in publication.files:
        ROWS_WRITTEN.labels(f.latest.removesuffix(".csv")).inc(f.rows)
    log.info(
        "opendata.published", publication=publication.stamp, rows=publication.rows,
        data_cut_off=str(publication.data_cut_off), removed=len(publication.removed),
        duration_s=round(duration, 3),
    )
    return publication


def next_run(now: datetime, at: clock_time, zone: ZoneInfo = PARIS) -> datetime:
    """The first `at` (wall-clock time in `zone`) strictly after `now`."""
    local = now.astimezone(zone)
    candidate = datetime.combine(local.date(), at, tzinfo=zone)
    if candidate <= local:
        candidate = datetime.combine(local.date() + timedelta(days=1), at, tzinfo=zone)
    return candidate


class DailyPublisher:
    """Publishes once at start, then every day at `opendata_publish_at` (Europe/Paris); retries failures:
    an unreachable database with the shared backoff (it usually comes back soon), anything else after
    `RETRY_AFTER_S` (a whole export is heavy). Until it succeeds again, `/readyz` says why."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.problem: str | None = None
        self._stop = threading.Event()

    def stop(self) -> None:
        self._stop.set()

    def _wait_until(self, due: datetime) -> bool:
        """False when stopped first. Short waits: a suspended machine or a clock change is noticed."""
        while (remaining := (due - datetime.now(UTC)).total_seconds()) > 0:
            if self._stop.wait(min(remaining, 60.0)):
                return False
        return not self._stop.is_set()

    def run(self) -> None:
        due = datetime.now(UTC)
        failures = 0
        while self._wait_until(due):
            try:
                publish_now(self.settings)
            except Exception as exc:  # logged and counted by publish_now; try again soon
                failures += 1
                unreachable = isinstance(exc, psycopg.OperationalError)
                self.problem = "database unreachable" if unreachable else "last publication failed"
                delay = min(backoff_s(failures), RETRY_AFTER_S) if unreachable else RETRY_AFTER_S
                due = datetime.now(UTC) + timedelta(seconds=delay)
                continue
            failures = 0
            self.problem = None
            due = next_run(datetime.now(UTC), self.settings.opendata_publish_at)


def build_app(settings: Settings, publisher: DailyPublisher | None = None) -> FastAPI:
    directory = settings.opendata_path
    directory.mkdir(parents=True, exist_ok=True)
    PUBLICATION_AGE.set_function(lambda: publication_age_seconds(directory, datetime.now(UTC)))
    return create_app(directory, problem=(lambda: publisher.problem) if publisher is not None else None)


def serve(settings: Settings, publisher: DailyPublisher | None = None) -> None:
    """The HTTP server in this thread until SIGINT/SIGTERM (uvicorn handles them)."""
    uvicorn.run(
        build_app(settings, publisher), host=settings.opendata_host, port=settings.opendata_port,
        log_config=None, access_log=False,
    )


def run_service(settings: Settings) -> None:
    configure_logging("opendata", settings.log_level)
    publisher = DailyPublisher(settings)
    thread = threading.Thread(target=publisher.run, name="opendata-schedule", daemon=True)
    thread.start()
    try:
        serve(settings, publisher)
    finally:
        publisher.stop()
        thread.join(60)
