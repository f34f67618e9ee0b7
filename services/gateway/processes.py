"""`labflow gateway --processes N`: N gateway processes on one MLLP port, so that one node uses all
its cores (one Python process uses one, whatever its threads).

Policy:
- Model: the parent started by `labflow gateway` serves no lab itself. It starts N children
  (`labflow gateway --process-index i`), each a complete gateway (its own Kafka producer, intake and
  MLLP listener) bound to the same port with SO_REUSEPORT: the kernel spreads new connections over
  the children (by a hash of the address pair), and a lab's persistent connection stays with one
  child. Chosen over a pre-fork model on one shared socket, where asyncio loops contending for one
  accept queue balance badly and a producer's threads would have to be created after the fork.
- Connection caps (`LABFLOW_MLLP_MAX_CONNECTIONS`, per address) apply per child; each child checks
  its own open-file limit. The HTTP intake (`--http`) is served by child 1 only: it is not the hot
  path, and it keeps its single listener.
- Supervision is `labflow run`'s (services/supervisor.py, SPEC §9.1): a child that exits is restarted
  after a backoff; SIGTERM/SIGINT/SIGHUP to the parent send SIGTERM to every child, each drains as a
  lone gateway does, and the parent waits for them (drain timeout + 5 s) before it exits; should the
  parent be killed, the kernel sends each child SIGTERM.
- The ops port is the parent's alone. `/metrics` is the children's sum (prometheus-client multiprocess
  mode: each child writes its metrics to PROMETHEUS_MULTIPROC_DIR, the operator's directory when set,
  else a temporary one; the gauges of exited children are dropped, their counters stay). `/healthz`
  is the parent's liveness (it keeps the children running). `/readyz` is 200 only while every one of
  the N children runs and reports itself ready — its own `/readyz` condition (Kafka reachable, lab
  registry loaded, not draining), written to a heartbeat file each second and trusted for 5 s: a node
  with a child restarting or stuck takes no new labs; the connections of the other children go on.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Protocol

from prometheus_client import CollectorRegistry, Metric
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead

from services.core.config import Settings
from services.core.logs import get_logger
from services.core.ops_http import OpsServer
from services.supervisor import Supervisor

log = get_logger(__name__)

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
HEARTBEAT_S = 1.0
HEARTBEAT_TRUSTED_S = 5.0


class Stoppable(Protocol):
    def stop(self) -> None: ...


def _heartbeat_path(directory: Path, index: int) -> Path:
    return directory / f"ready-{index}"


class ReadinessHeartbeat:
    """A child's readiness for its parent: its pid and `ready()` written to a file every HEARTBEAT_S
    (the pid tells a restarted child's word from that of the one it replaces)."""

    def __init__(self, path: Path, ready: Callable[[], bool]) -> None:
        self._path, self._ready = path, ready
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._beat, name="readiness-heartbeat", daemon=True)

    def start(self) -> ReadinessHeartbeat:
        self._thread.start()
        return self

    def _write(self, ready: bool) -> None:
        partial = self._path.with_suffix(".tmp")
        partial.write_text(f"{os.getpid()} {int(ready)}")
        partial.replace(self._path)

    def _beat(self) -> None:
        while not self._stopped.is_set():
            self._write(self._ready())
            self._stopped.wait(HEARTBEAT_S)

    def stop(self) -> None:
        self._stopped.set()
        self._thread.join()
        self._write(False)


def gateway_ops(settings: Settings, ready: Callable[[], bool]) -> Stoppable:
    """A lone gateway serves its ops port; a child reports its readiness to the parent that serves it."""
    if not settings.gateway_process_index:
        return OpsServer(settings.ops_host, settings.gateway_ops_port, ready=ready).start()
    directory = Path(os.environ[MULTIPROC_ENV])
    return ReadinessHeartbeat(_heartbeat_path(directory, settings.gateway_process_index), ready).start()


def children_ready(directory: Path, children: Mapping[int, int | None], now: float | None = None) -> bool:
    """Every child (index → pid, None while not running) runs, and its last heartbeat is recent and
    says ready."""
    now = time.time() if now is None else now
    for index, pid in children.items():
        path = _heartbeat_path(directory, index)
        try:
            fresh = now - path.stat().st_mtime <= HEARTBEAT_TRUSTED_S
            if pid is None or not fresh or path.read_text() != f"{pid} 1":
                return False
        except FileNotFoundError:
            return False
    return True


class ChildrenMetrics:
    """The children's metrics summed (MultiProcessCollector), the live gauges of exited ones dropped."""

    def __init__(self, directory: Path, live_pids: Callable[[], set[int]]) -> None:
        self._directory, self._live_pids = directory, live_pids
        self._collector = MultiProcessCollector(None, str(directory))  # type: ignore[no-untyped-call]

    def collect(self) -> Iterable[Metric]:
        live = self._live_pids()
        for path in self._directory.glob("gauge_live*_*.db"):
            pid = int(path.stem.rsplit("_", 1)[1])
            if pid not in live:
                mark_process_dead(pid, str(self._directory))  # type: ignore[no-untyped-call]
        metrics: Iterable[Metric] = self._collector.collect()  # type: ignore[no-untyped-call]
        return metrics


def _metrics_directory() -> tuple[Path, bool]:
    """The operator's PROMETHEUS_MULTIPROC_DIR emptied (files of an earlier run would count), else a
    temporary one; whether it is ours to remove."""
    if given := os.environ.get(MULTIPROC_ENV):
        directory = Path(given)
        directory.mkdir(parents=True, exist_ok=True)
        for path in directory.iterdir():
            if path.suffix == ".db" or path.name.startswith("ready-"):
                path.unlink()
        return directory, False
    return Path(tempfile.mkdtemp(prefix="labflow-gateway-metrics-")), True


def run_processes(settings: Settings, http: bool) -> int:
    """The parent: start and keep N children, serve the ops port for them; returns after a stop signal
    once every child has stopped (0)."""
    count = settings.gateway_processes
    directory, temporary = _metrics_directory()

    def command(name: str) -> list[str]:
        index = int(name.split()[1])
        return [sys.executable, "-m", "services.cli", "gateway", "--processes", str(count),
                "--process-index", str(index),
                *(["--http"] if http and index == 1 else [])]

    supervisor = Supervisor(
        [f"gateway {i}" for i in range(1, count + 1)], command=command,
        stop_timeout_s=settings.gateway_drain_timeout_s + 5,
    )
    supervisor.env[MULTIPROC_ENV] = str(directory)

    def running() -> dict[int, int | None]:
        """index → pid of each child, None while it is not running."""
        return {
            int(child.name.split()[1]): child.proc.pid
            if child.proc is not None and child.proc.poll() is None else None
            for child in supervisor.children.values()
        }

    def live_pids() -> set[int]:
        return {pid for pid in running().values() if pid is not None}

    def ready() -> bool:
        children = running()
        complete = len(children) == count
        return not supervisor.stop_requested and complete and children_ready(directory, children)

    registry = CollectorRegistry()
    registry.register(ChildrenMetrics(directory, live_pids))
    log.info("gateway processes starting", processes=count, port=settings.mllp_port)
    ops: OpsServer | None = None
    try:
        supervisor.start()
        ops = OpsServer(settings.ops_host, settings.gateway_ops_port, ready=ready, registry=registry).start()
        return supervisor.wait()  # a stop signal before it began: a clean stop all the same
    finally:
        if ops is not None:
            ops.stop()
        if temporary:
            shutil.rmtree(directory, ignore_errors=True)
        log.info("gateway processes stopped")
