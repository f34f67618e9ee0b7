from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from labflow_testkit.infrastructure import isolated_settings, settings_env
from labflow_testkit.processes import ServiceProcess, free_port, http_status, port_open, wait_until
from services.core.config import Settings
from services.core.db.engine import make_engine
from services.core.domain.model import LabMode
from services.gateway.labs import LabDirectory
from tests.conftest import Infrastructure


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


class HttpGateway(ServiceProcess):
    """`labflow gateway --http` (MLLP and the HTTP intake) as a real process."""

    def __init__(self, env: dict[str, str], log_dir: Path) -> None:
        super().__init__("gateway", env, log_dir, "--http")


@dataclass(frozen=True)
class HttpStack:
    settings: Settings
    http: httpx.Client
    """A client of the HTTP intake."""
    directory: LabDirectory
    tokens: dict[str, str]
    """The HTTP token of each lab of `http_stack_labs`."""


@pytest.fixture(scope="module")
def http_stack_labs() -> dict[str, str | None]:
    """The labs (id → FINESS or None) registered, each with an HTTP token, before `http_stack` starts:
    a test module that uses `http_stack` names its own."""
    return {}


@pytest.fixture(scope="module")
def http_stack(
    infrastructure: Infrastructure, http_stack_labs: dict[str, str | None],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[HttpStack]:
    """`labflow gateway --http` and the worker as real processes on free ports, against a database and
    topics of their own, for a whole test module; the gateway re-reads the lab registry every second,
    so a lab added or disabled by a test counts within it."""
    log_dir = tmp_path_factory.mktemp("http-stack")
    with isolated_settings(infrastructure.kafka_bootstrap, infrastructure.database_url) as base:
        settings = base.model_copy(update={
            "mllp_port": free_port(), "http_port": free_port(), "gateway_ops_port": free_port(),
            "worker_ops_port": free_port(), "lab_registry_refresh_s": 1.0,
        })
        engine = make_engine(settings.require_database())
        directory = LabDirectory(engine)
        tokens = {}
        for lab_id, finess in http_stack_labs.items():
            directory.add(lab_id, f"Test laboratory {lab_id}", finess, None)
            tokens[lab_id] = directory.issue_token(lab_id) or ""
        env = settings_env(settings)
        procs = [HttpGateway(env, log_dir), ServiceProcess("worker", env, log_dir)]
        try:

            def ready() -> bool:
                for p in procs:
                    assert p.proc.poll() is None, f"{p.name} exited:\n{p.log()}"
                return (
                    port_open(settings.mllp_port)
                    and port_open(settings.http_port)
                    and http_status(f"http://127.0.0.1:{settings.worker_ops_port}/readyz") == 200
                )

            wait_until(ready, timeout_s=60, what="gateway (MLLP + HTTP) and worker")
            with httpx.Client(base_url=f"http://127.0.0.1:{settings.http_port}", timeout=30) as client:
                yield HttpStack(settings, client, directory, tokens)
        finally:
            for p in procs:
                p.stop()
            engine.dispose()
