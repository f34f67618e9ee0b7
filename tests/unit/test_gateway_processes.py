"""What an operator meets starting a gateway for thousands of labs: the open-file limit raised or a
one-line refusal, and a node's readiness that counts every one of its gateway processes."""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import time
from pathlib import Path

from services.gateway.processes import HEARTBEAT_TRUSTED_S, children_ready


def _with_open_files(soft: int, hard: int, argv: list[str]) -> subprocess.CompletedProcess[str]:
    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))

    env = {**os.environ, "LABFLOW_MLLP_MAX_CONNECTIONS": "5000"}
    return subprocess.run([sys.executable, *argv], preexec_fn=limit, env=env, capture_output=True, text=True,
                          timeout=60)


def test_the_soft_open_file_limit_is_raised_to_what_the_connections_need() -> None:
    code = ("import resource; from services.core.runtime import ensure_open_files; "
            "print(ensure_open_files(5000, 'LABFLOW_MLLP_MAX_CONNECTIONS'), "
            "resource.getrlimit(resource.RLIMIT_NOFILE)[0])")
    done = _with_open_files(1024, 8192, ["-c", code])
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["5512", "5512"]


def test_a_gateway_whose_hard_limit_is_too_low_refuses_to_start_with_one_line() -> None:
    done = _with_open_files(1024, 2048, ["-m", "services.cli", "gateway"])
    assert done.returncode == 2
    line = done.stderr.strip()
    assert "\n" not in line
    assert "LABFLOW_MLLP_MAX_CONNECTIONS=5,000 needs 5,512 open files" in line
    assert "RLIMIT_NOFILE allows 2,048" in line and "ulimit -Hn" in line


def _beat(directory: Path, index: int, content: str, age_s: float = 0.0) -> None:
    path = directory / f"ready-{index}"
    path.write_text(content)
    then = time.time() - age_s
    os.utime(path, (then, then))


def test_a_node_is_ready_only_when_every_process_says_so_recently(tmp_path: Path) -> None:
    _beat(tmp_path, 1, "101 1")
    assert not children_ready(tmp_path, {1: 101, 2: 102})  # process 2 has not reported yet
    _beat(tmp_path, 2, "102 0")
    assert not children_ready(tmp_path, {1: 101, 2: 102})  # process 2 is not ready (Kafka away, draining)
    _beat(tmp_path, 2, "102 1", age_s=HEARTBEAT_TRUSTED_S + 1)
    assert not children_ready(tmp_path, {1: 101, 2: 102})  # process 2 stopped reporting (stuck)
    _beat(tmp_path, 2, "102 1")
    assert children_ready(tmp_path, {1: 101, 2: 102})
    assert not children_ready(tmp_path, {1: 101, 2: None})  # process 2 exited, not restarted yet
    assert not children_ready(tmp_path, {1: 101, 2: 103})  # restarted: its predecessor's word is not its own
