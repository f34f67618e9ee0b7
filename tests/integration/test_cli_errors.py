"""The `labflow` command as an operator meets it on a bad day: the stack down, a mistyped URL, a port
taken. Each ends at once with one line naming the setting or the command to fix, never a traceback;
a service started while Kafka is down keeps its log JSON and short."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from labflow_testkit.infrastructure import settings_env
from labflow_testkit.processes import ServiceProcess, free_port, wait_until
from services.core.config import REPO_ROOT, Settings

pytestmark = pytest.mark.integration


def _labflow(env: dict[str, str], *args: str, timeout_s: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "services.cli", *args], env=env, cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=timeout_s)


def _env(tmp_path: Path, **values: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LABFLOW_")}
    env.update(PYTHONPATH=str(REPO_ROOT), LABFLOW_STATE_DIR=str(tmp_path), **values)
    return env


def _one_line(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("labflow: ")]
    assert len(lines) == 1, result.stderr
    return lines[0]


def test_database_down_or_url_mistyped(tmp_path: Path) -> None:
    nowhere = f"postgresql://u:pw@127.0.0.1:{free_port()}/x"
    down = _one_line(_labflow(_env(tmp_path, LABFLOW_DATABASE_URL=nowhere), "labs", "list"))
    assert "PostgreSQL is unreachable" in down and "labflow stack up" in down and ":pw@" not in down
    mistyped = _one_line(_labflow(_env(tmp_path, LABFLOW_DATABASE_URL="mysql://u@h/x"), "labs", "list"))
    assert "LABFLOW_DATABASE_URL must be a postgresql:// URL" in mistyped
    bad_value = _one_line(_labflow(_env(tmp_path, LABFLOW_MLLP_PORT="twenty"), "labs", "list"))
    assert "LABFLOW_MLLP_PORT" in bad_value


def test_kafka_down_ends_a_command_at_once(tmp_path: Path) -> None:
    env = _env(tmp_path, LABFLOW_KAFKA_BOOTSTRAP=f"127.0.0.1:{free_port()}")
    started = time.monotonic()
    line = _one_line(_labflow(env, "rejected", "list"))
    assert time.monotonic() - started < 20  # it used to wait 30 s in librdkafka, then print a traceback
    assert "Kafka is unreachable" in line and "LABFLOW_KAFKA_BOOTSTRAP" in line
    assert "LABFLOW_KAFKA_BOOTSTRAP" in _one_line(_labflow(env, "topics", "create"))


def test_a_taken_port_is_named(shared_settings: Settings, tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        settings = shared_settings.model_copy(update={"mllp_port": port, "gateway_ops_port": free_port()})
        result = _labflow(settings_env(settings, LABFLOW_STATE_DIR=str(tmp_path)), "gateway")
    assert _one_line(result) == (f"labflow: port {port} is already in use by another process: stop it or set "
                                 "LABFLOW_MLLP_PORT to a free port")


def test_a_gateway_started_with_kafka_down_logs_json_and_little(shared_settings: Settings,
                                                                tmp_path: Path) -> None:
    settings = shared_settings.model_copy(update={
        "kafka_bootstrap": f"127.0.0.1:{free_port()}", "mllp_port": free_port(),
        "gateway_ops_port": free_port(),
    })
    env = settings_env(settings, LABFLOW_STATE_DIR=str(tmp_path), LABFLOW_LAB_REGISTRY_ENFORCED="false")
    gateway = ServiceProcess("gateway", env, tmp_path)

    def kafka_logged() -> bool:
        return any('"facility"' in line for line in gateway.log_path.read_text().splitlines())

    try:
        # from its first librdkafka line (however long a loaded machine takes to start it), the gateway
        # is watched for 8 s of broker retries (every ~100 ms): it used to print hundreds of lines
        wait_until(kafka_logged, timeout_s=120, what="the gateway's first librdkafka line")
        time.sleep(8)
    finally:
        gateway.stop(timeout_s=30)
    output = gateway.log_path.read_text()
    lines = output.splitlines()
    records = [json.loads(line) for line in lines]  # every line is JSON
    kafka_lines = [r for r in records if "facility" in r]
    assert kafka_lines and len(kafka_lines) <= 6, output
