"""Running a browser spec (`tests/browser/*.spec.mjs`, Debian's chromium through playwright-core) against
a `labflow dashboard` process: what the dashboard's and the lab portal's Chromium tests share.

A missing browser, node or playwright-core fails the test (`make test` installs them), never skips it.
The spec reads a scenario (JSON) that the test writes; its screenshots go to `tests/browser/artifacts/`,
and the one at the scenario's `screenshot` path (taken on failure, or at the end) is copied there too.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from labflow_testkit.infrastructure import settings_env
from labflow_testkit.processes import ServiceProcess, free_port, http_status, wait_until
from services.core.config import REPO_ROOT, Settings

SPECS = REPO_ROOT / "tests" / "browser"
ARTIFACTS = SPECS / "artifacts"
CHROMIUM = "/usr/bin/chromium"


def require_node_and_chromium() -> str:
    """The node binary that runs the specs."""
    if not Path(CHROMIUM).exists():
        pytest.fail("chromium is missing: `make test` installs it (apt-get install chromium)", pytrace=False)
    node = shutil.which("node")
    if node is None or not (REPO_ROOT / "services/dashboard/web/node_modules/playwright-core").exists():
        pytest.fail("node or playwright-core is missing: run `make install`", pytrace=False)
    return node


@dataclass(frozen=True)
class Dashboard:
    url: str
    process: ServiceProcess


@contextmanager
def running_dashboard(settings: Settings, log_dir: Path, staff_token: str) -> Iterator[Dashboard]:
    """`labflow dashboard` on a free port, ready, stopped afterwards (even when the test fails)."""
    port = free_port()
    env = settings_env(settings, LABFLOW_DASHBOARD_PORT=str(port), LABFLOW_DASHBOARD_TOKENS=staff_token)
    service = ServiceProcess("dashboard", env, log_dir)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_until(lambda: http_status(f"{url}/readyz") == 200, timeout_s=60,
                   what=f"dashboard ready {service.log()}")
        yield Dashboard(url, service)
    finally:
        service.stop()


def run_spec(node: str, spec: str, scenario: dict[str, Any], work_dir: Path, dashboard: Dashboard) -> None:
    """Runs `tests/browser/<spec>` on the scenario; fails with the spec's output and the dashboard's log."""
    ARTIFACTS.mkdir(exist_ok=True)
    (work_dir / "scenario.json").write_text(json.dumps(scenario))
    run = subprocess.run([node, str(SPECS / spec), str(work_dir / "scenario.json")], capture_output=True,
                         text=True, timeout=180, cwd=REPO_ROOT)
    screenshot = Path(scenario["screenshot"])
    if screenshot.exists():
        shutil.copy(screenshot, ARTIFACTS / screenshot.name)
    log = dashboard.process.log()
    assert run.returncode == 0, f"{run.stdout}\n{run.stderr}\n--- dashboard log ---\n{log}"
