"""`labflow status` as the operator on call reads it: what is down, how far behind the consumers are,
what was rejected in the last hour, and that a dependency down is said on its line, not a hang."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import psycopg
import pytest
from confluent_kafka import Producer

from labflow_testkit.infrastructure import settings_env
from labflow_testkit.processes import ServiceProcess, free_port, http_status, wait_until
from labflow_testkit.results import make_result
from services.core.config import REPO_ROOT, Settings
from services.core.db.engine import libpq_url
from services.core.domain.rejection import Rejection, RejectionReason
from services.core.kafka import producer_config
from tests.support import produce_results

pytestmark = pytest.mark.integration


def _status(env: dict[str, str]) -> tuple[int, dict[tuple[str, str], str]]:
    """Exit code, and (section, name) → "STATE detail" of `labflow status --json`."""
    done = subprocess.run([sys.executable, "-m", "services.cli", "status", "--json"], env=env, cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=60)
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    return done.returncode, {(x["section"], x["name"]): f"{x['state']} {x['detail']}" for x in lines}


def test_status_shows_lag_rejections_failures_and_what_is_down(
    fresh_settings: Settings, tmp_path: Path
) -> None:
    settings = fresh_settings.model_copy(update={
        name: free_port() for name in ("gateway_ops_port", "worker_ops_port", "tracing_ops_port",
                                       "opendata_port", "dashboard_port")
    })
    env = settings_env(settings, LABFLOW_STATE_DIR=str(tmp_path))
    produce_results(settings, [make_result() for _ in range(7)])
    producer = Producer(producer_config(settings))
    for i in range(2):
        rejection = Rejection(rejection_id=f"r{i}", stage="gateway", received_at=datetime.now(UTC),
                              reasons=[RejectionReason(code="102", text="bad")], payload_base64="")
        producer.produce(settings.topics.rejected, rejection.model_dump_json().encode())
    assert producer.flush(30) == 0
    with psycopg.connect(libpq_url(settings.require_database())) as conn:
        conn.execute(
            "INSERT INTO tracing_deliveries (event_id, case_id, type, status, message, first_received_at, "
            "last_attempt_at) VALUES ('e1', 'c1', 'case.opened', 'failed', '{}', now(), now())"
        )

    code, lines = _status(env)
    assert code == 1
    down = [name for (section, name), line in lines.items()
            if section == "services" and line.startswith("down")]
    assert down == ["gateway", "worker", "tracing", "opendata", "dashboard"]
    assert lines["lag", "worker"] == "ok 7 results behind"
    assert lines["lag", "lab traffic"].startswith("ok 2 raw and rejected records behind")
    assert lines["lag", "tracing"] == "ok 0 case events behind"
    assert lines["last hour", "rejected"].startswith("warn 2 payload(s)")
    assert lines["last hour", "tracing failures"].startswith("warn 1 failed in the last hour")
    assert lines["open data", "publication"].startswith("warn never published")

    worker = ServiceProcess("worker", env, tmp_path)
    try:
        wait_until(lambda: http_status(f"http://127.0.0.1:{settings.worker_ops_port}/readyz") == 200,
                   timeout_s=60, what=f"the worker ready; log:\n{worker.log()}")
        wait_until(lambda: _status(env)[1]["lag", "worker"] == "ok 0 results behind", timeout_s=30,
                   what="the worker to catch up")
        assert _status(env)[1]["services", "worker"] == "ok ready"
        wait_until(lambda: _status(env)[1]["lag", "lab traffic"].startswith("ok 0 "), timeout_s=30,
                   what="the worker's lab-traffic consumers to catch up")
    finally:
        worker.stop()

    code, lines = _status({**env, "LABFLOW_KAFKA_BOOTSTRAP": f"127.0.0.1:{free_port()}"})
    assert code == 1
    assert "Kafka is unreachable" in lines["lag", "consumer lag"]
    assert "Kafka is unreachable" in lines["last hour", "rejections last hour"]
    assert lines["last hour", "tracing failures"].startswith("warn 1 failed")  # PostgreSQL still answers


def test_status_renders_one_screen(shared_settings: Settings, tmp_path: Path) -> None:
    env = settings_env(shared_settings, LABFLOW_STATE_DIR=str(tmp_path),
                       LABFLOW_GATEWAY_OPS_PORT=str(free_port()))
    done = subprocess.run([sys.executable, "-m", "services.cli", "status"], env=env, cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert done.stdout.splitlines()[0] == "services:"
    assert any(line.startswith("  DOWN  gateway ") for line in done.stdout.splitlines())
    assert "lag:" in done.stdout and "open data:" in done.stdout
