"""Chaos suite: real faults under steady lab traffic, then exactly-once checks (`make chaos`).

    .venv/bin/python -m load_tests.chaos                       # every scenario (≈ 15 min)
    .venv/bin/python -m load_tests.chaos --only kill-broker --only pg-restart

What it starts (and stops at the end, even on failure, by pid — never by name): a stack of its own
under `<state dir>/chaos/` — a 3-node KRaft cluster (services/stack/kafka.py; topics replicated 3
times, `min.insync.replicas=2`), a PostgreSQL, and a Toxiproxy server (`make toxiproxy` builds it into
`.labflow/bin/`); then per scenario a fresh database and topics, and the gateway, worker, tracing
handoff and the tracing-platform stand-in as separate processes (labflow_testkit's ServiceProcess;
every process through the project's launcher, services/stack/process.py), and the lab simulator of
load_tests/simulate.py in a process of its own (seeded traffic: resends, corrections, cancellations,
invalid INS keys and NUL-byte poison messages).

Wiring of the proxy — every byte between the services and Kafka/PostgreSQL crosses Toxiproxy:
- PostgreSQL: one proxy in front of the server; the services get the proxy's address.
- Kafka: clients connect to the addresses the brokers advertise, so proxying only the bootstrap
  address would not do. Each broker has a dedicated `PROXIED` listener advertised as its Toxiproxy
  address (services/stack/kafka.py); the services bootstrap through the proxies and every broker they
  then talk to is behind one. Replication and the controller quorum keep their direct listeners, so a
  network fault hits the services' links only and the cluster stays healthy: that is the fault we
  want (a partitioned client), not a second, cluster-internal one.
Process faults use signals on the real processes (kill -9, SIGSTOP/SIGCONT, PostgreSQL fast shutdown).
The harness checks itself against the direct addresses.

Supervision: the harness restarts a service process that exited (whatever the reason), as a supervisor
would (SPEC §9.1), and reports every restart. It works around nothing else: a service that stays
unready, loses or doubles a result shows up in the table.

Checks after each scenario (after the traffic, once the worker caught up, bounded waits):
every AA-acknowledged result stored exactly once (by its (specimen, LOINC) — with the lab, its
result_id); every message answered AE/AR for its content (invalid INS, poison) is on
`lab.results.rejected.v1` (an AE for a Kafka timeout is transient and counted apart, and so is a
content AE answered while Kafka could not take the rejection either: the lab sends again); aggregates
equal a full recomputation (labflow_testkit.results.full_recomputation); every opened case handed over exactly
once (the stand-in records each idempotency key once: none missing, none unknown, no case opened
twice in the outbox); every `/readyz` 200 again by itself, and — when the services lost Kafka or
PostgreSQL entirely (all brokers, PostgreSQL down or hung, network cut) — a 503 during the outage.
Measured: recovery time (end of the fault → every `/readyz` 200 and an AA again) and the ACK p99 of
the messages sent during the fault.
Writes `load_tests/results/chaos.json` and prints a table.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import multiprocessing
import os
import random
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import psutil
import psycopg
from confluent_kafka import Consumer, KafkaException, TopicPartition
from pydantic import SecretStr
from tenacity import retry, retry_if_exception_type, stop_after_delay, wait_fixed

from labflow_testkit.infrastructure import isolated_settings, settings_env
from labflow_testkit.processes import ServiceProcess, free_port, http_status, port_open, wait_until
from labflow_testkit.results import full_recomputation, stored_aggregates
from load_tests import profiles
from load_tests.simulate import SimulatorConfig, lab_ids, simulator_main
from services.core.config import REPO_ROOT, Settings, load_settings
from services.core.db.engine import libpq_url, make_engine
from services.gateway.labs import LabDirectory
from services.gateway.rejections import read_rejections
from services.stack import local
from services.stack.kafka import KafkaNode, LocalKafka
from services.stack.postgres import LocalPostgres
from services.stack.process import launch

RESULTS_DIR = Path(__file__).resolve().parent / "results"
TOXIPROXY_BIN = REPO_ROOT / ".labflow" / "bin" / "toxiproxy-server"
BROKERS = 3
SERVICES = ("gateway", "worker", "tracing")
PORT_BLOCK = 40  # ports used by the chaos stack, from its base (see ChaosStack)


def log(message: str) -> None:
    print(f"[chaos {datetime.now(UTC):%H:%M:%S}] {message}", flush=True)


# --- the stack: 3 brokers, PostgreSQL, Toxiproxy --------------------------------------------------


def free_port_block(size: int, seed: int | None = None) -> int:
    """A base port whose `size` following ports are all free (the cluster needs fixed ports)."""
    rng = random.Random(seed)
    for _ in range(200):
        base = rng.randrange(20_000, 30_000 - size)
        if all(not port_open(p) and _bindable(p) for p in range(base, base + size)):
            return base
    raise RuntimeError(f"no block of {size} free ports found")


def _bindable(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


class Toxiproxy:
    """A Toxiproxy server (its own process) and its HTTP API: proxies, toxics, cut connections."""

    def __init__(self, api_port: int, log_path: Path) -> None:
        self.api = f"http://127.0.0.1:{api_port}"
        self.api_port = api_port
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None
        self.proxies: list[str] = []

    def start(self) -> None:
        if not TOXIPROXY_BIN.exists():
            raise RuntimeError(f"{TOXIPROXY_BIN} is missing: run `make toxiproxy`")
        self.proc = launch(
            [str(TOXIPROXY_BIN), "-host", "127.0.0.1", "-port", str(self.api_port)],
            log=self.log_path,
            detached=True,
        )
        wait_until(lambda: port_open(self.api_port), timeout_s=20, what="the Toxiproxy API")

    def add(self, name: str, listen: int, upstream: int) -> None:
        httpx.post(
            f"{self.api}/proxies",
            json={
                "name": name,
                "listen": f"127.0.0.1:{listen}",
                "upstream": f"127.0.0.1:{upstream}",
                "enabled": True,
            },
            timeout=5,
        ).raise_for_status()
        self.proxies.append(name)

    def enable(self, names: Sequence[str], enabled: bool) -> None:
        """Disabled: every connection through the proxy is closed and new ones are refused."""
        for name in names:
            httpx.post(f"{self.api}/proxies/{name}", json={"enabled": enabled}, timeout=5).raise_for_status()

    def latency(self, names: Sequence[str], ms: int, jitter_ms: int) -> None:
        for name in names:
            for stream in ("upstream", "downstream"):
                httpx.post(
                    f"{self.api}/proxies/{name}/toxics",
                    json={
                        "name": f"latency-{stream}",
                        "type": "latency",
                        "stream": stream,
                        "attributes": {"latency": ms, "jitter": jitter_ms},
                    },
                    timeout=5,
                ).raise_for_status()

    def reset(self) -> None:
        """Every proxy enabled, no toxic left (between scenarios, whatever happened)."""
        with contextlib.suppress(httpx.HTTPError):
            httpx.post(f"{self.api}/reset", timeout=5)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@dataclass
class ChaosStack:
    """Ports from `base`: brokers base+2i (controllers +1), proxied listeners base+10+2i (the proxy
    side; the broker binds +1), PostgreSQL base+20, its proxy base+21, the Toxiproxy API base+22."""

    state_dir: Path
    base: int
    kafka_heap: str = "448m"
    settings: Settings = field(init=False)
    kafka: LocalKafka = field(init=False)
    postgres: LocalPostgres = field(init=False)
    toxiproxy: Toxiproxy = field(init=False)

    def __post_init__(self) -> None:
        main = load_settings()
        self.settings = Settings(
            state_dir=self.state_dir,
            kafka_port=self.base,
            kafka_controller_port=self.base + 1,
            kafka_proxy_port=self.base + 10,
            postgres_port=self.base + 20,
            kafka_heap=self.kafka_heap,
            kafka_brokers=BROKERS,
            topic_replication=BROKERS,
        )
        self.kafka = LocalKafka(self.settings, BROKERS)
        self.kafka.libs = LocalKafka(main).libs  # the jars the main stack already fetched
        self.postgres = LocalPostgres(self.settings)
        self.toxiproxy = Toxiproxy(self.base + 22, self.state_dir / "toxiproxy.log")

    @property
    def postgres_proxy_port(self) -> int:
        return self.base + 21

    def start(self) -> None:
        log(f"starting a {BROKERS}-broker KRaft cluster, PostgreSQL and Toxiproxy (ports {self.base}+)")
        self.toxiproxy.start()
        local.up(self.settings, wait_s=180, brokers=BROKERS, use_environment=False)
        for node in self.kafka.nodes:
            assert node.proxy_port is not None and node.proxied_port is not None
            self.toxiproxy.add(f"kafka-{node.node_id}", node.proxy_port, node.proxied_port)
        self.toxiproxy.add("postgres", self.postgres_proxy_port, self.settings.postgres_port)

    def _resume_all(self) -> None:
        """SIGCONT to our own brokers and PostgreSQL, by pid (never to a guessed or absent pid)."""
        for node in self.kafka.nodes:
            pid = node.process.pid()
            if pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGCONT)
        self._signal_postgres(signal.SIGCONT)

    def heal(self) -> None:
        """Every node and PostgreSQL running and answering, no proxy fault left."""
        self._resume_all()
        self.toxiproxy.reset()
        self.kafka.start()  # the nodes not running
        self.postgres.start()
        self.wait_cluster()

    def stop(self) -> None:
        self._resume_all()  # a process left stopped by a failed scenario must be able to die
        local.down(self.settings)
        self.toxiproxy.stop()

    # what the services get: everything through the proxies
    def proxied(self, settings: Settings) -> Settings:
        bootstrap = self.kafka.proxied_bootstrap
        assert bootstrap is not None
        url = settings.require_database().replace(
            f":{self.settings.postgres_port}/", f":{self.postgres_proxy_port}/"
        )
        return settings.model_copy(update={"kafka_bootstrap": bootstrap, "database_url": url})

    # --- faults ---
    def node(self, node_id: int) -> KafkaNode:
        return self.kafka.nodes[node_id - 1]

    def active_controller(self) -> int:
        """The quorum leader, from the nodes' `quorum-state` files (highest epoch wins): the Kafka 4
        jars we ship have no metadata-quorum tool, and clients are never told the controller."""
        best = (-1, -1)
        for node in self.kafka.nodes:
            path = node.data / "__cluster_metadata-0" / "quorum-state"
            with contextlib.suppress(OSError, ValueError):
                state = json.loads(path.read_text())
                if state.get("leaderId", -1) > 0:
                    best = max(best, (int(state["leaderEpoch"]), int(state["leaderId"])))
        if best[1] < 0:
            raise RuntimeError("no node knows the active controller")
        return best[1]

    def kill_node(self, node_id: int, sig: signal.Signals = signal.SIGKILL) -> None:
        pid = self.node(node_id).process.pid()
        if pid is None:
            raise RuntimeError(f"kafka node {node_id} is not running")
        os.kill(pid, sig)
        if sig is signal.SIGKILL:
            with contextlib.suppress(psutil.NoSuchProcess, psutil.TimeoutExpired):
                psutil.Process(pid).wait(10)

    def restart_node(self, node_id: int) -> None:
        self.kafka.start_node(self.node(node_id))

    def wait_cluster(self, timeout_s: float = 120) -> None:
        local.wait_kafka(self.kafka.bootstrap, time.monotonic() + timeout_s, self.kafka)

    def _signal_postgres(self, sig: signal.Signals) -> None:
        """The postmaster and every backend: a hung server, not just a postmaster that forks nothing."""
        pid = self.postgres.process.pid()
        if pid is None:
            return
        with contextlib.suppress(psutil.Error):
            parent = psutil.Process(pid)
            for process in [parent, *parent.children(recursive=True)]:
                with contextlib.suppress(psutil.Error):
                    process.send_signal(sig)

    def postgres_stop_fast(self) -> None:
        self.postgres.stop()

    def postgres_start(self) -> None:
        self.postgres.start()

    def postgres_freeze(self, frozen: bool) -> None:
        self._signal_postgres(signal.SIGSTOP if frozen else signal.SIGCONT)


# --- the services, supervised ---------------------------------------------------------------------


class Services:
    """gateway, worker, tracing (+ the stand-in platform) as processes; a thread restarts any that
    exited, as a supervisor would, and counts it."""

    def __init__(self, settings: Settings, folder: Path) -> None:
        self.settings = settings
        self.folder = folder
        self.env = settings_env(settings, LABFLOW_LOG_LEVEL="WARNING")
        self.procs: dict[str, ServiceProcess] = {}
        self.restarts: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._supervise, name="chaos-supervisor", daemon=True)
        self.standin: ServiceProcess | None = None

    def start(self) -> None:
        self.standin = ServiceProcess(
            "tracing standin", self.env, self.folder, "--port", str(self.settings.tracing_standin_port)
        )
        for name in SERVICES:
            self.procs[name] = ServiceProcess(name, self.env, self.folder)
        wait_until(lambda: port_open(self.settings.tracing_standin_port), 30, what="the tracing stand-in")
        wait_until(self.all_ready, timeout_s=120, interval_s=0.5, what="gateway, worker and tracing /readyz")
        self._thread.start()

    def ops_port(self, name: str) -> int:
        return int(getattr(self.settings, f"{name}_ops_port"))

    def readyz(self) -> dict[str, int]:
        """HTTP status of each /readyz (0: no answer — the process is down or restarting)."""
        return {n: http_status(f"http://127.0.0.1:{self.ops_port(n)}/readyz") for n in SERVICES}

    def all_ready(self) -> bool:
        return all(code == 200 for code in self.readyz().values())

    def kill(self, name: str) -> None:
        with self.lock:
            self.procs[name].proc.send_signal(signal.SIGKILL)

    def _supervise(self) -> None:
        while not self._stop.wait(0.3):
            with self.lock:
                for name, service in list(self.procs.items()):
                    code = service.proc.poll()
                    if code is None:
                        continue
                    service.stop()
                    self.restarts.append({"service": name, "exit_code": code, "at": time.time()})
                    self.procs[name] = ServiceProcess(name, self.env, self.folder)

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(5)
        for service in self.procs.values():
            service.stop()
        if self.standin is not None:
            self.standin.stop(timeout_s=10)

    def logs_tail(self) -> dict[str, str]:
        return {name: service.log()[-1500:] for name, service in self.procs.items()}


class ReadinessProbe:
    """Every 0.5 s: (time, all three /readyz 200, one of them answered 503) — the recovery time, and
    whether a live service said it was not ready (a dead process that cannot answer does not count)."""

    def __init__(self, services: Services) -> None:
        self.services = services
        self.samples: list[tuple[float, bool, bool]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="chaos-readyz", daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.5):
            codes = self.services.readyz().values()
            self.samples.append((time.time(), all(c == 200 for c in codes), any(c == 503 for c in codes)))

    def __enter__(self) -> ReadinessProbe:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)

    def ready_again_at(self, after: float) -> float | None:
        """First instant after `after` from which every probe said ready (to the end of sampling)."""
        since: float | None = None
        for t, ok, _ in self.samples:
            if t < after:
                continue
            if ok and since is None:
                since = t
            elif not ok:
                since = None
        return since

    def said_503_during(self, start: float, end: float) -> bool:
        return any(said_503 for t, _, said_503 in self.samples if start <= t <= end)


# --- scenarios ------------------------------------------------------------------------------------


@dataclass
class Fault:
    """What a scenario did: when the fault began and ended (epoch seconds), and what it saw."""

    start: float = 0.0
    end: float = 0.0
    notes: list[str] = field(default_factory=list)
    kills: int = 6  # kill-services: how many kill -9


@dataclass(frozen=True)
class Scenario:
    name: str
    description: str
    inject: Callable[[ChaosStack, Services, random.Random, Fault], None]
    outage: bool = False  # the services lose Kafka or PostgreSQL entirely: /readyz must say 503 (§9.1)


def _sleep(seconds: float) -> None:
    time.sleep(max(seconds, 0))


def kill_broker(stack: ChaosStack, _s: Services, _r: random.Random, fault: Fault, controller: bool) -> None:
    leader = stack.active_controller()
    victim = leader if controller else next(n.node_id for n in stack.kafka.nodes if n.node_id != leader)
    fault.notes.append(
        f"node {victim} {'(active controller)' if controller else ''} killed".replace("  ", " ")
    )
    fault.start = time.time()
    stack.kill_node(victim)
    _sleep(15)
    stack.restart_node(victim)
    fault.end = time.time()
    if controller:
        with contextlib.suppress(RuntimeError):
            fault.notes.append(f"new controller: node {stack.active_controller()}")


def hang_broker(stack: ChaosStack, _s: Services, _r: random.Random, fault: Fault) -> None:
    leader = stack.active_controller()
    victim = next(n.node_id for n in stack.kafka.nodes if n.node_id != leader)
    fault.notes.append(f"node {victim} SIGSTOP 30 s")
    fault.start = time.time()
    stack.kill_node(victim, signal.SIGSTOP)
    try:
        _sleep(30)
    finally:
        stack.kill_node(victim, signal.SIGCONT)
    fault.end = time.time()


def kill_all_brokers(stack: ChaosStack, _s: Services, _r: random.Random, fault: Fault) -> None:
    fault.start = time.time()
    for node in stack.kafka.nodes:
        stack.kill_node(node.node_id)
    _sleep(10)
    stack.kafka.start()
    fault.end = time.time()


def postgres_restart(stack: ChaosStack, _s: Services, _r: random.Random, fault: Fault) -> None:
    fault.start = time.time()
    stack.postgres_stop_fast()
    _sleep(10)
    stack.postgres_start()
    fault.end = time.time()


def postgres_hang(stack: ChaosStack, _s: Services, _r: random.Random, fault: Fault) -> None:
    fault.start = time.time()
    stack.postgres_freeze(True)
    try:
        _sleep(20)
    finally:
        stack.postgres_freeze(False)
    fault.end = time.time()


def kill_services(stack: ChaosStack, services: Services, rng: random.Random, fault: Fault) -> None:
    """`fault.kills` kill -9 at seeded random instants (2–8 s apart), each of a random service."""
    fault.start = time.time()
    for _ in range(fault.kills):
        _sleep(rng.uniform(2.0, 8.0))
        victim = rng.choice(SERVICES)
        services.kill(victim)
        fault.notes.append(f"kill -9 {victim}")
    fault.end = time.time()


def network_latency(stack: ChaosStack, _s: Services, _r: random.Random, fault: Fault) -> None:
    fault.start = time.time()
    stack.toxiproxy.latency(stack.toxiproxy.proxies, 400, 100)
    try:
        _sleep(20)
    finally:
        stack.toxiproxy.reset()
    fault.end = time.time()
    fault.notes.append("+400±100 ms each way, Kafka and PostgreSQL links, 20 s")


def network_cut(stack: ChaosStack, _s: Services, _r: random.Random, fault: Fault) -> None:
    fault.start = time.time()
    stack.toxiproxy.enable(stack.toxiproxy.proxies, False)
    try:
        _sleep(15)
    finally:
        stack.toxiproxy.enable(stack.toxiproxy.proxies, True)
    fault.end = time.time()
    fault.notes.append("Kafka and PostgreSQL links cut (connections closed, refused) 15 s")


SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in [
        Scenario(
            "kill-broker",
            "kill -9 one broker (not the controller), restart it after 15 s",
            lambda st, sv, r, f: kill_broker(st, sv, r, f, controller=False),
        ),
        Scenario(
            "kill-controller",
            "kill -9 the active KRaft controller, restart it after 15 s",
            lambda st, sv, r, f: kill_broker(st, sv, r, f, controller=True),
        ),
        Scenario("hang-broker", "SIGSTOP one broker for 30 s (a hung node), then SIGCONT", hang_broker),
        Scenario(
            "kill-all-brokers", "kill -9 all three brokers, restart them after 10 s", kill_all_brokers, True
        ),
        Scenario("pg-restart", "PostgreSQL fast shutdown, restart after 10 s", postgres_restart, True),
        Scenario("pg-hang", "SIGSTOP PostgreSQL (postmaster and backends) for 20 s", postgres_hang, True),
        Scenario(
            "kill-services", "kill -9 gateway/worker/tracing at random instants, several times", kill_services
        ),
        Scenario(
            "net-latency", "Toxiproxy: +400 ms latency to Kafka and PostgreSQL for 20 s", network_latency
        ),
        Scenario("net-cut", "Toxiproxy: Kafka and PostgreSQL connections cut for 15 s", network_cut, True),
    ]
}
PYTEST_SUBSET = ("kill-broker", "pg-restart", "kill-services")


# --- one scenario ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Options:
    rate: float = 550.0  # offered results/s
    warmup_s: float = 8.0  # traffic before the fault
    after_s: float = 15.0  # traffic after the fault ended
    labs: int = 60
    partitions: int = 6
    poison: float = 0.01
    seed: int = 2026
    drain_s: float = 120.0
    recover_s: float = 90.0
    kills: int = 6  # kill-services


def fault_length_s(name: str, options: Options) -> float:
    """How long the fault lasts (the traffic covers warm-up + fault + after)."""
    return options.kills * 5.0 if name == "kill-services" else FAULT_LENGTH_S[name]


def run_scenario(stack: ChaosStack, scenario: Scenario, options: Options) -> dict[str, Any]:
    """Fresh database and topics, services, traffic, the fault, then the checks. Never raises for a
    failed check: the row says what was seen (`error` when the run itself could not complete)."""
    log(f"{scenario.name}: {scenario.description}")
    started = time.monotonic()
    try:
        stack.heal()  # whatever an earlier scenario left behind
        return _run_scenario(stack, scenario, options, started)
    except Exception as exc:
        row = {
            "scenario": scenario.name,
            "description": scenario.description,
            "ok": False,
            "error": f"{type(exc).__name__}: {exc}",
            "wall_s": round(time.monotonic() - started, 1),
        }
        log(f"{scenario.name}: could not run: {row['error']}")
        return row


def _run_scenario(stack: ChaosStack, scenario: Scenario, options: Options, started: float) -> dict[str, Any]:
    row: dict[str, Any] = {"scenario": scenario.name, "description": scenario.description}
    folder = Path(tempfile.mkdtemp(prefix=f"chaos-{scenario.name}-", dir=stack.state_dir))
    direct = stack.kafka.bootstrap
    with isolated_settings(direct, stack.postgres.url, options.partitions, BROKERS) as fresh:
        settings = _service_settings(fresh, folder)
        engine = make_engine(settings.require_database())
        directory = LabDirectory(engine)
        for lab_id in lab_ids(options.labs):
            directory.add(lab_id, f"Chaos laboratory {lab_id[-4:]}", None, None)
        engine.dispose()
        services = Services(stack.proxied(settings), folder)
        simulator: multiprocessing.process.BaseProcess | None = None
        try:
            seconds = options.warmup_s + fault_length_s(scenario.name, options) + options.after_s
            profile = profiles.constant(options.rate, seconds)
            records, keys = folder / "acks.csv", folder / "keys.csv"
            config = SimulatorConfig(
                profile,
                options.labs,
                options.seed,
                settings.mllp_host,
                settings.mllp_port,
                records,
                keys,
                ack_timeout_s=30.0,
                poison=options.poison,
            )
            ctx = multiprocessing.get_context("spawn")
            ours, theirs = ctx.Pipe()
            simulator = ctx.Process(target=simulator_main, args=(theirs, config), name="chaos-labs")
            simulator.start()  # it plans its messages while the services start
            services.start()
            phases = {"services_ready": time.monotonic() - started}
            if not ours.poll(300):
                raise RuntimeError("the simulator did not finish generating its messages")
            plan = ours.recv()
            fault = Fault(kills=options.kills)
            with ReadinessProbe(services) as probe:
                start_at = time.time() + 1.0
                ours.send(start_at)
                _sleep(start_at + options.warmup_s - time.time())
                scenario.inject(stack, services, random.Random(options.seed), fault)
                while not ours.poll(1.0):
                    if not simulator.is_alive():
                        raise RuntimeError(f"the simulator exited with {simulator.exitcode}")
                outcome = ours.recv()
                phases["traffic_done"] = time.monotonic() - started
                simulator.join(30)
                _wait_recovered(services, probe, fault, options.recover_s)
                phases["ready_again"] = time.monotonic() - started
                drained = drain_pipeline(settings, options.drain_s)  # settings: the direct addresses
                phases["drained"] = time.monotonic() - started
            row |= scenario_checks(settings, stack, folder, outcome, fault, probe, drained)
            phases["checked"] = time.monotonic() - started
            row["phases_s"] = {k: round(v, 1) for k, v in phases.items()}
            row |= {
                "messages_planned": plan["messages"],
                "offered_results_per_s": options.rate,
                "fault_s": round(fault.end - fault.start, 1),
                "notes": fault.notes,
                "outage": scenario.outage,
                "restarts": [f"{r['service']} (exit {r['exit_code']})" for r in services.restarts],
            }
        except Exception as exc:  # the run could not complete: say why, and go on with the next
            row["error"] = f"{type(exc).__name__}: {exc}"
            row["logs"] = services.logs_tail()
            log(f"{scenario.name}: could not complete: {row['error']}")
        finally:
            if simulator is not None and simulator.is_alive():
                simulator.kill()
                simulator.join(10)
            services.stop()
            stack.toxiproxy.reset()
    row["wall_s"] = round(time.monotonic() - started, 1)
    row["ok"] = _ok(row)
    if row["ok"]:
        shutil.rmtree(folder, ignore_errors=True)
    else:
        row["folder"] = str(folder)  # service logs, ACK records, the stand-in's receptions
    log(f"{scenario.name}: {'OK' if row['ok'] else 'FAILED'} {failures(row) or ''}")
    return row


def _service_settings(fresh: Settings, folder: Path) -> Settings:
    def port(variable: str) -> int:
        """An explicitly exported port (developers share the machine), else any free one."""
        return int(os.environ.get(variable) or free_port())

    standin = port("LABFLOW_TRACING_STANDIN_PORT")
    return fresh.model_copy(
        update={
            "state_dir": folder,
            "mllp_port": port("LABFLOW_MLLP_PORT"),
            "gateway_ops_port": port("LABFLOW_GATEWAY_OPS_PORT"),
            "worker_ops_port": port("LABFLOW_WORKER_OPS_PORT"),
            "tracing_ops_port": port("LABFLOW_TRACING_OPS_PORT"),
            "tracing_standin_port": standin,
            "tracing_url": f"http://127.0.0.1:{standin}/cases",
            "tracing_signing_secret": SecretStr(secrets.token_hex(32)),
            "tracing_backoff_max_s": 5.0,
        }
    )


def _wait_recovered(services: Services, probe: ReadinessProbe, fault: Fault, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while probe.ready_again_at(fault.end) is None and time.monotonic() < deadline:
        time.sleep(0.5)


def _end_offsets(settings: Settings) -> dict[int, int]:
    """End offset of each non-empty partition of the results topic (read over the direct listener)."""
    consumer = Consumer({"bootstrap.servers": settings.require_kafka(), "group.id": "chaos-offsets-probe"})
    try:
        topic = settings.topics.results
        ends = {}
        for partition in range(settings.topic_partitions):
            _low, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), 10)
            if high > 0:
                ends[partition] = high
        return ends
    finally:
        consumer.close()


def drain_pipeline(settings: Settings, timeout_s: float) -> bool:
    """Until the worker stored offsets at the end of every partition of the results topic (it has
    written everything) and every opened case was handed over, seen 3 times 1 s apart; False when
    that did not happen within `timeout_s` (a stuck service: the checks then say what is missing)."""
    deadline = time.monotonic() + timeout_s
    settled = 0
    while time.monotonic() < deadline:
        done = False
        with contextlib.suppress(psycopg.Error, KafkaException):
            ends = _end_offsets(settings)
            with psycopg.connect(libpq_url(settings.require_database()), connect_timeout=3) as conn:
                offsets = conn.execute(
                    "SELECT partition, next_offset FROM consumer_offsets WHERE group_id = %s AND topic = %s",
                    (settings.worker_group, settings.topics.results),
                ).fetchall()
                stored: dict[int, int] = {int(p): int(o) for p, o in offsets}
                row = conn.execute(
                    "SELECT (SELECT count(*) FROM cases), (SELECT count(*) FROM tracing_deliveries "
                    "WHERE type = 'case.opened' AND status = 'delivered')"
                ).fetchone()
            assert row is not None
            done = all(stored.get(p, 0) >= end for p, end in ends.items()) and int(row[1]) >= int(row[0])
        settled = settled + 1 if done else 0
        if settled >= 3:
            return True
        time.sleep(1.0)
    return False


def _read_records(path: Path) -> tuple[list[tuple[str, str, str, int, float, float]], set[str]]:
    """(control id, kind, code, results, sent, acked) per message, times from the simulator's t0; and
    the control ids whose AE asked for the message again (ERR 207: not stored now, not a content error)."""
    rows, send_again = [], set()
    for line in path.read_text().splitlines():
        control_id, _lab, kind, code, results, _scheduled, sent, acked, again = line.split(",")
        rows.append((control_id, kind, code, int(results), float(sent), float(acked)))
        if again == "1":
            send_again.add(control_id)
    return rows, send_again


def _p99_ms(values: list[float]) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[max(math.ceil(0.99 * len(ordered)) - 1, 0)] * 1000, 1)


@retry(retry=retry_if_exception_type(psycopg.OperationalError), stop=stop_after_delay(30), wait=wait_fixed(1))
def _query(url: str, sql: str, params: Any = None) -> list[tuple[Any, ...]]:
    with psycopg.connect(libpq_url(url), connect_timeout=5) as conn:
        return [tuple(r) for r in conn.execute(sql, params).fetchall()]


def scenario_checks(
    settings: Settings,
    stack: ChaosStack,
    folder: Path,
    outcome: dict[str, Any],
    fault: Fault,
    probe: ReadinessProbe,
    drained: bool,
) -> dict[str, Any]:
    t0 = float(outcome["t0"])
    records, send_again = _read_records(folder / "acks.csv")
    url = settings.require_database()
    codes: dict[str, int] = {}
    for _, _, code, _, _, _ in records:
        codes[code] = codes.get(code, 0) + 1
    # exactly once: every AA-acknowledged (specimen, LOINC) in `results` once
    keys = sorted({tuple(line.split(",")) for line in (folder / "keys.csv").read_text().splitlines()})
    counts: dict[tuple[str, str], int] = {}
    for specimen, loinc, n in _query(
        url,
        "SELECT specimen_id, loinc, count(*) FROM results WHERE specimen_id = ANY(%s) GROUP BY 1, 2",
        ([k[0] for k in keys],),
    ):
        counts[(specimen, loinc)] = int(n)
    lost = sum(1 for k in keys if counts.get((k[0], k[1]), 0) == 0)
    duplicated = sum(1 for k in keys if counts.get((k[0], k[1]), 0) > 1)
    stored_once = len(keys) - lost - duplicated
    # rejections: every AE/AR for content on lab.results.rejected.v1 (read over the direct listener)
    rejected_ids = {
        r.message_control_id
        for r in read_rejections(
            settings.model_copy(update={"kafka_bootstrap": stack.kafka.bootstrap}), timeout_s=60
        )
        if r.stage == "gateway"
    }
    refused = [(c, k, code) for c, k, code, _, _, _ in records if code in ("AE", "AR")]
    content = [(c, k, code) for c, k, code in refused if k in ("invalid", "poison")]
    transient_ae = [c for c, k, code in refused if k not in ("invalid", "poison") and c not in rejected_ids]
    # Invalid content answered while Kafka could not take its rejection either got an AE that says so
    # (every ERR 207: send it again), not the content's ERR: nothing is lost, counted apart — read from
    # the ACK the lab got, not guessed from when. A content AE/AR the lab was told to fix must be on
    # the topic.
    missing = [c for c, _, _ in content if c not in rejected_ids]
    unrecorded_transient = [c for c in missing if c in send_again]
    not_on_topic = [c for c in missing if c not in send_again]
    poison_accepted = sum(
        1 for _, kind, code, _, _, _ in records if kind in ("invalid", "poison") and code == "AA"
    )
    no_answer = sum(n for code, n in codes.items() if code.startswith("ERR"))
    # aggregates
    aggregates_ok = stored_aggregates(url) == full_recomputation(url)
    # cases: opened once in the outbox, each handed over exactly once (by idempotency key = case id)
    opened = {
        r[0]
        for r in _query(
            url, "SELECT DISTINCT payload->>'case_id' FROM outbox WHERE payload->>'type' = 'case.opened'"
        )
    }
    opened_twice = len(
        _query(
            url,
            "SELECT payload->>'case_id' FROM outbox WHERE payload->>'type' = "
            "'case.opened' GROUP BY 1 HAVING count(*) > 1",
        )
    )
    cases_in_db = {r[0] for r in _query(url, "SELECT case_id FROM cases")}
    received = folder / "tracing-standin" / "received.jsonl"
    handed: dict[str, int] = {}
    if received.exists():
        for line in received.read_text().splitlines():
            if line.strip() and (record := json.loads(line))["event"] == "case.opened":
                handed[record["idempotency_key"]] = handed.get(record["idempotency_key"], 0) + 1
    cases_missing = len((opened | cases_in_db) - set(handed))
    cases_unknown = len(set(handed) - (opened | cases_in_db))
    # recovery and latency during the fault
    ready_at = probe.ready_again_at(fault.end)
    first_aa = min(
        (t0 + acked for _, _, code, _, sent, acked in records if code == "AA" and t0 + sent >= fault.end),
        default=None,
    )
    recovery = None if ready_at is None or first_aa is None else round(max(ready_at, first_aa) - fault.end, 1)
    first_aa_s = None if first_aa is None else round(first_aa - fault.end, 1)
    during = [acked - sent for _, _, _, _, sent, acked in records if fault.start <= t0 + sent <= fault.end]
    aa_results = sum(n for _, _, code, n, _, _ in records if code == "AA")
    return {
        "sent": len(records),
        "results_sent": sum(r[3] for r in records),
        "ack_codes": codes,
        "aa": codes.get("AA", 0),
        "aa_results": aa_results,
        "ae_ar": len(refused),
        "no_answer": no_answer,
        "acknowledged_keys": len(keys),
        "stored": stored_once,
        "lost": lost,
        "duplicated": duplicated,
        "rejections_missing": len(not_on_topic),
        "rejections_unrecorded_transient_ae": len(unrecorded_transient),
        "transient_ae": len(transient_ae),
        "poison_accepted": poison_accepted,
        "aggregates_equal_recomputation": aggregates_ok,
        "cases_opened": len(opened | cases_in_db),
        "cases_opened_twice": opened_twice,
        "cases_handed_over": len(handed),
        "cases_missing": cases_missing,
        "cases_unknown": cases_unknown,
        "drained": drained,
        "readyz_503_during_fault": probe.said_503_during(fault.start, fault.end),
        "ready_again": ready_at is not None,
        "first_aa_after_fault_s": first_aa_s,
        "recovery_s": recovery,
        "ack_p99_during_fault_ms": _p99_ms(during),
        "messages_during_fault": len(during),
    }


def failures(row: dict[str, Any]) -> list[str]:
    if "error" in row:
        return [row["error"]]
    checks = [
        (row["lost"] == 0, f"{row['lost']} acknowledged results lost"),
        (row["duplicated"] == 0, f"{row['duplicated']} results stored twice"),
        (row["rejections_missing"] == 0, f"{row['rejections_missing']} AE/AR not on the rejected topic"),
        (row["poison_accepted"] == 0, f"{row['poison_accepted']} invalid/poison messages answered AA"),
        (row["aggregates_equal_recomputation"], "aggregates differ from a full recomputation"),
        (row["cases_opened_twice"] == 0, f"{row['cases_opened_twice']} cases opened twice"),
        (row["cases_missing"] == 0, f"{row['cases_missing']} opened cases not handed over"),
        (row["cases_unknown"] == 0, f"{row['cases_unknown']} handed-over cases unknown to the database"),
        (row["ready_again"], "a /readyz did not come back to 200 by itself"),
        (
            not row.get("outage") or row["readyz_503_during_fault"],
            "no /readyz answered 503 while a dependency was unreachable",
        ),
        (row["first_aa_after_fault_s"] is not None, "no AA after the fault"),
        (row["drained"], "the worker/tracing did not settle within the drain period"),
    ]
    return [text for ok, text in checks if not ok]


def _ok(row: dict[str, Any]) -> bool:
    return not failures(row)


# --- the suite ------------------------------------------------------------------------------------

FAULT_LENGTH_S = {
    "kill-broker": 16,
    "kill-controller": 16,
    "hang-broker": 30,
    "kill-all-brokers": 14,
    "pg-restart": 12,
    "pg-hang": 20,
    "kill-services": 30,
    "net-latency": 20,
    "net-cut": 15,
}


@contextlib.contextmanager
def chaos_stack(state_dir: Path | None = None, base: int | None = None) -> Iterator[ChaosStack]:
    """The stack, started and always stopped (even on failure or Ctrl-C)."""
    root = state_dir or load_settings().state_dir / "chaos"
    port_base = base or int(os.environ.get("LABFLOW_CHAOS_PORT_BASE") or free_port_block(PORT_BLOCK))
    stack = ChaosStack(root, port_base)
    try:
        stack.start()
        yield stack
    finally:
        log("stopping the chaos stack")
        stack.stop()


def table(rows: list[dict[str, Any]]) -> str:
    head = (
        "scenario",
        "sent",
        "AA",
        "AE/AR",
        "no ans",
        "stored",
        "lost",
        "dup",
        "recovery s",
        "p99 ACK fault ms",
        "restarts",
        "ok",
    )
    lines = [" | ".join(head), " | ".join("---" for _ in head)]
    for r in rows:
        if "error" in r:
            lines.append(f"{r['scenario']} | error: {r['error'][:120]}")
            continue
        lines.append(
            " | ".join(
                str(x)
                for x in (
                    r["scenario"],
                    r["sent"],
                    r["aa"],
                    r["ae_ar"],
                    r["no_answer"],
                    r["stored"],
                    r["lost"],
                    r["duplicated"],
                    r["recovery_s"] if r["recovery_s"] is not None else "never",
                    r["ack_p99_during_fault_ms"],
                    len(r["restarts"]),
                    "yes" if r["ok"] else "NO",
                )
            )
        )
    return "\n".join(lines)


def run_suite(
    names: Sequence[str], options: Options, results_dir: Path | None = RESULTS_DIR
) -> list[dict[str, Any]]:
    """Every named scenario on one stack; `chaos.json` is rewritten after each (a partial run counts)."""
    rows: list[dict[str, Any]] = []
    started = time.monotonic()

    def write(complete: bool) -> None:
        if results_dir is None:
            return
        results_dir.mkdir(parents=True, exist_ok=True)
        report = {
            "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "command": "python -m load_tests.chaos " + " ".join(sys.argv[1:]),
            "complete": complete,
            "brokers": BROKERS,
            "options": options.__dict__,
            "wall_s": round(time.monotonic() - started, 1),
            "table": table(rows).splitlines(),
            "scenarios": rows,
        }
        (results_dir / "chaos.json").write_text(json.dumps(report, indent=1, default=str) + "\n")

    with chaos_stack() as stack:
        for name in names:
            rows.append(run_scenario(stack, SCENARIOS[name], options))
            write(complete=False)
    write(complete=True)
    print(table(rows))
    for r in rows:
        if not r["ok"]:
            print(f"{r['scenario']}: {'; '.join(failures(r))}")
    return rows


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--only", action="append", choices=sorted(SCENARIOS), help="run only these scenarios")
    parser.add_argument("--rate", type=float, default=Options.rate, help="offered results/s")
    parser.add_argument("--seed", type=int, default=Options.seed)
    parser.add_argument("--poison", type=float, default=Options.poison, help="share of NUL-byte messages")
    parser.add_argument("--results-dir", type=Path, default=RESULTS_DIR, help="where chaos.json goes")
    args = parser.parse_args(argv)

    def terminate(signum: int, _frame: object) -> None:  # `timeout`, CI cancel: stop what we started
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, terminate)
    options = Options(rate=args.rate, seed=args.seed, poison=args.poison)
    rows = run_suite(args.only or list(SCENARIOS), options, args.results_dir)
    sys.exit(0 if all(r["ok"] for r in rows) else 1)


if __name__ == "__main__":
    main()
