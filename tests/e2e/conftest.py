from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from labflow_testkit.infrastructure import settings_env
from labflow_testkit.processes import ServiceProcess, free_port, http_status, port_open, wait_until
from services.core.config import Settings
from services.core.db.engine import make_engine
from services.core.domain.model import LabMode
from services.gateway.labs import LabDirectory


@pytest.fixture
def services(fresh_settings: Settings, tmp_path: Path) -> Iterator[Settings]:
    """Gateway and worker as real processes on free ports, against a database and topics of their own."""
    settings = fresh_settings.model_copy(update={
        "mllp_port": free_port(), "gateway_ops_port": free_port(), "worker_ops_port": free_port(),
    })
    # the labs the e2e tests send as: LAB-E2E and those of services.simulator.demo.plan_traffic
    engine = make_engine(settings.database_url_for("labs"))  # as `labflow labs add` would
    directory = LabDirectory(engine)
    for lab_id in ("LAB-E2E", *(f"DEMO-LAB-{i:02d}" for i in range(1, 100))):
        directory.add(lab_id, f"Test laboratory {lab_id}", None, None)
    # labs in onboarding (SPEC §8.1): registered in test mode, as `labflow labs add` does by default
    for lab_id in ("LAB-ONBOARD", "LAB-SLOPPY"):
        directory.add(lab_id, f"Laboratory in onboarding {lab_id}", "974000019", None, mode=LabMode.TEST)
    engine.dispose()
    env = settings_env(settings)
    procs = [ServiceProcess("gateway", env, tmp_path), ServiceProcess("worker", env, tmp_path)]
    try:
        def ready() -> bool:
            for p in procs:
                assert p.proc.poll() is None, f"{p.name} exited:\n{p.log()}"
            return port_open(settings.mllp_port) and http_status(
                f"http://127.0.0.1:{settings.worker_ops_port}/readyz") == 200

        wait_until(ready, timeout_s=60, what="gateway and worker")
        yield settings
    finally:
        for p in procs:
            p.stop()
