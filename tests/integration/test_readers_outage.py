"""The database readers (dashboard, open data) while PostgreSQL refuses connections: /readyz 503,
no exit, 200 again by themselves once it is back."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr

from labflow_testkit.processes import wait_until
from services.core.config import Settings
from services.dashboard.app import build_app as build_dashboard
from services.opendata.app import DailyPublisher
from services.opendata.app import build_app as build_opendata
from tests.support import database_refusing_connections

pytestmark = pytest.mark.integration


def test_dashboard_readiness_follows_the_database(fresh_settings: Settings) -> None:
    settings = fresh_settings.model_copy(update={"dashboard_tokens": SecretStr("token")})
    client = TestClient(build_dashboard(settings))
    assert client.get("/readyz").status_code == 200
    with database_refusing_connections(settings):
        response = client.get("/readyz")
        assert response.status_code == 503, response.text
        assert client.get("/healthz").status_code == 200
    wait_until(lambda: client.get("/readyz").status_code == 200, timeout_s=10, what="ready again")


def test_opendata_readiness_follows_the_database_and_publication_resumes(
    fresh_settings: Settings, tmp_path: Path
) -> None:
    settings = fresh_settings.model_copy(update={"opendata_dir": tmp_path / "opendata"})
    publisher = DailyPublisher(settings)
    client = TestClient(build_opendata(settings, publisher))
    thread = threading.Thread(target=publisher.run, daemon=True)
    try:
        with database_refusing_connections(settings):
            thread.start()
            wait_until(lambda: publisher.problem == "database unreachable", timeout_s=15,
                       what="the failed publication")
            assert client.get("/readyz").status_code == 503
            assert thread.is_alive()
        wait_until(lambda: client.get("/readyz").status_code == 200, timeout_s=60,
                   what="published once the database is back")
        assert publisher.problem is None
    finally:
        publisher.stop()
        thread.join(10)
