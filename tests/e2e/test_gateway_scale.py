"""The gateway at a national scale, as real processes over real MLLP: 5,000 labs connected at once,
and one node's gateway as N processes on one port (`--processes`). No timing is asserted here:
load_tests/labs5000.py and bench_gateway.py measure that."""

from __future__ import annotations

import asyncio
import os
import random
import signal
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import psutil
import pytest
from prometheus_client.parser import text_string_to_metric_families

from labflow_testkit.infrastructure import settings_env
from labflow_testkit.processes import ServiceProcess, free_port, http_status, port_open, wait_until
from services.core.config import Settings
from services.core.runtime import ensure_open_files
from services.simulator.client import MllpClient
from services.simulator.oru import build_oru_r01, random_order, random_patient

pytestmark = pytest.mark.e2e
LABS = 5000
CONTROL = "CTRLPLACEHOLDER"
# a loaded machine must not turn a slow answer into a failure: timing is not what these tests assert
PATIENT = {
    "LABFLOW_MLLP_FIRST_MESSAGE_TIMEOUT_S": "300", "LABFLOW_MLLP_IDLE_TIMEOUT_S": "1800",
    "LABFLOW_DELIVERY_TIMEOUT_S": "300", "LABFLOW_LOG_LEVEL": "WARNING",
}


@dataclass
class Gateway:
    settings: Settings
    process: ServiceProcess

    def metric(self, name: str) -> float | None:
        """A metric of the gateway's ops port, summed over its labels (None while unreachable)."""
        try:
            text = httpx.get(f"http://127.0.0.1:{self.settings.gateway_ops_port}/metrics", timeout=10).text
        except httpx.HTTPError:
            return None
        for family in text_string_to_metric_families(text):
            if family.name == name:
                return sum(s.value for s in family.samples if s.name in (name, f"{name}_total"))
        return None


def _start_gateway(settings: Settings, log_dir: Path, processes: int = 1) -> Iterator[Gateway]:
    settings = settings.model_copy(update={
        "mllp_port": free_port(), "gateway_ops_port": free_port(), "gateway_processes": processes,
        "lab_registry_enforced": False,  # thousands of labs: the transport is under test, not the registry
        "mllp_max_connections_per_address": LABS,  # every test connection comes from 127.0.0.1
    })
    process = ServiceProcess("gateway", settings_env(settings, **PATIENT), log_dir)
    try:
        def ready() -> bool:
            assert process.proc.poll() is None, f"the gateway exited:\n{process.log()}"
            return http_status(f"http://127.0.0.1:{settings.gateway_ops_port}/readyz") == 200

        wait_until(ready, timeout_s=120, what="the gateway")
        yield Gateway(settings, process)
    finally:
        process.stop()


@pytest.fixture
def gateway(shared_settings: Settings, tmp_path: Path) -> Iterator[Gateway]:
    yield from _start_gateway(shared_settings, tmp_path)


@pytest.fixture
def gateway_processes(shared_settings: Settings, tmp_path: Path) -> Iterator[Gateway]:
    yield from _start_gateway(shared_settings, tmp_path, processes=2)


def lab_message(lab: int) -> bytes:
    rng = random.Random(lab)
    order = random_order(rng, datetime.now(UTC) - timedelta(hours=1), observations=1)
    return build_oru_r01(f"LAB5K-{lab:04d}", CONTROL, [(random_patient(rng), [order])])


async def send_checked(client: MllpClient, template: bytes, control_id: str) -> None:
    ack = await client.send(template.replace(CONTROL.encode(), control_id.encode()), timeout_s=600)
    assert (ack.code, ack.control_id) == ("AA", control_id), ack.raw


def test_5000_labs_hold_their_connections_and_every_message_gets_its_own_ack(gateway: Gateway) -> None:
    ensure_open_files(LABS, "the test's connections")
    port = gateway.settings.mllp_port
    templates = [lab_message(lab) for lab in range(LABS)]

    async def labs() -> None:
        connecting = asyncio.Semaphore(500)  # labs connect in waves, as after a gateway restart

        async def connect(lab: int) -> MllpClient:
            async with connecting:
                client = await MllpClient("127.0.0.1", port).connect()
                await send_checked(client, templates[lab], f"{lab:05d}-first")
                return client

        clients = await asyncio.gather(*(connect(lab) for lab in range(LABS)))
        try:
            # all 5,000 at once: the gateway holds them (its own count), then each sends again
            await asyncio.to_thread(
                wait_until, lambda: gateway.metric("labflow_gateway_mllp_connections") == LABS,
                timeout_s=120, what="the gateway to hold every connection",
            )
            await asyncio.gather(*(send_checked(client, templates[lab], f"{lab:05d}-again")
                                   for lab, client in enumerate(clients)))
            assert not [lab for lab, client in enumerate(clients) if client.closed_by_peer]
        finally:
            await asyncio.gather(*(client.close() for client in clients))

    asyncio.run(labs())
    assert gateway.metric("labflow_gateway_mllp_connections_closed") in (None, 0)
    assert gateway.metric("labflow_gateway_messages") == 2 * LABS


def test_a_gateway_of_two_processes_shares_its_port_restarts_a_crashed_one_and_drains_both(
    gateway_processes: Gateway,
) -> None:
    gateway = gateway_processes
    parent = psutil.Process(gateway.process.proc.pid)
    children = parent.children()
    assert len(children) == 2
    port, labs = gateway.settings.mllp_port, 200
    templates = [lab_message(lab) for lab in range(labs)]

    async def send_from_every_lab(round_: str) -> None:
        clients = [await MllpClient("127.0.0.1", port).connect() for _ in range(labs)]
        try:
            await asyncio.gather(*(send_checked(c, templates[lab], f"{lab:05d}-{round_}")
                                   for lab, c in enumerate(clients)))
            # the kernel spread the labs over both processes (SO_REUSEPORT)
            held = [sum(1 for c in child.net_connections("tcp") if c.laddr.port == port and c.raddr)
                    for child in parent.children()]
            assert len(held) == 2 and all(held) and sum(held) == labs, held
        finally:
            await asyncio.gather(*(c.close() for c in clients))

    asyncio.run(send_from_every_lab("one"))
    assert gateway.metric("labflow_gateway_messages") == labs  # the ops port counts both processes'

    ops = f"http://127.0.0.1:{gateway.settings.gateway_ops_port}"
    # a stuck process (its heartbeat stops): the node is not ready, until it goes on
    children[0].suspend()
    try:
        wait_until(lambda: http_status(f"{ops}/readyz") == 503, timeout_s=60, what="/readyz 503")
    finally:
        children[0].resume()
    wait_until(lambda: http_status(f"{ops}/readyz") == 200, timeout_s=60, what="/readyz 200 again")

    # a crashed process is started again, and the node is ready once the new one is
    children[1].kill()
    wait_until(lambda: len(parent.children()) == 2 and children[1] not in parent.children()
               and http_status(f"{ops}/readyz") == 200, timeout_s=120, what="the crashed process restarted")
    assert http_status(f"{ops}/healthz") == 200
    asyncio.run(send_from_every_lab("two"))
    assert gateway.metric("labflow_gateway_messages") == 2 * labs  # the dead process's count is kept

    # SIGTERM to the parent drains every process, and all exit
    running = parent.children()
    os.kill(parent.pid, signal.SIGTERM)
    assert gateway.process.proc.wait(120) == 0
    _, alive = psutil.wait_procs(running, timeout=30)
    assert not alive
    assert not port_open(port)
