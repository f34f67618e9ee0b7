"""A multi-node LabFlow cluster on one machine, as pods of `podman kube play` (`make cluster-up`,
`make cluster-test`, `make cluster-down`; deploy/README.md § Containers).

One source of truth with Kubernetes: the services' pods are the Helm chart's own Deployments
(`helm template deploy/helm/labflow -f deploy/cluster/values-podman.yaml`), one pod per replica, with
their command, ports, environment, secret keys, security context and resources. What only Kubernetes
operators provide is swapped for local pods: the chart's Strimzi Kafka (mTLS) becomes 3 KRaft pods of the
local Kafka image (plaintext on the pod network), CloudNativePG a PostgreSQL pod, the Service/Ingress an
HAProxy pod, kube-prometheus-stack a Prometheus pod with deploy/prometheus/alerts.yml. Every secret is
generated at cluster-up into `.labflow/cluster/` (git-ignored, mode 0600), never in the repository.

`test`: simulator traffic (load_tests/simulate.py) through HAProxy while one broker, one gateway and one
worker container are killed (kill -9) and started again; then the chaos suite's own checks
(load_tests/chaos.py: exactly once, rejections, aggregates = recomputation, cases handed over once), and
Prometheus: every target up, no alert firing. Prints a summary, exits 1 on any failed check.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from functools import partial
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import yaml
from nacl.public import PrivateKey

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from labflow_testkit.processes import http_status, wait_until  # noqa: E402
from load_tests import profiles  # noqa: E402
from load_tests.chaos import Fault, ReadinessProbe, drain_pipeline, failures, scenario_checks  # noqa: E402
from load_tests.simulate import SimulatorConfig, lab_ids, simulator_main  # noqa: E402
from services.core.config import Settings  # noqa: E402
from services.core.db.engine import make_engine  # noqa: E402
from services.core.kafka import broker_answers  # noqa: E402
from services.gateway.labs import LabDirectory  # noqa: E402
from services.stack.kafka import new_cluster_id  # noqa: E402

STATE = REPO / ".labflow" / "cluster"
HELM = REPO / ".labflow" / "bin" / "helm"
NETWORK = "labflow-cluster"
LABFLOW_IMAGE = "localhost/labflow:0.1.0"
KAFKA_IMAGE = "localhost/labflow-kafka:4.1.1"
POSTGRES_IMAGE = "localhost/labflow-postgres:15"
HAPROXY_IMAGE = "localhost/labflow-haproxy:2.6"
PROMETHEUS_IMAGE = "localhost/labflow-prometheus:2.42"
BROKERS = 3
PARTITIONS = 6
LABS = 30
# host ports (127.0.0.1 only), in this machine's block for the cluster
PORT = {
    "mllp": 22575, "http": 22080, "prometheus": 22090, "postgres": 22432, "kafka": 22192,
    "gateway": 22101, "worker": 22102, "tracing": 22103, "opendata": 22081, "dashboard": 22000,
}
CLIENTS = {"gateway": "labflow_gateway", "worker": "labflow_worker", "tracing": "labflow_tracing",
           "opendata": "labflow_opendata", "dashboard": "labflow_dashboard", "labs": "labflow_labs",
           "purge": "labflow_purge"}
# bound of every start-up wait: a JVM takes minutes to start when the shared machine's load is 40
PATIENCE_S = 600
PART_OF = {"app.kubernetes.io/part-of": NETWORK}


def log(message: str) -> None:
    print(f"[cluster {time.strftime('%H:%M:%S')}] {message}", flush=True)


def podman(*args: str, check: bool = True, capture: bool = False) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["podman", *args], check=check, text=True, capture_output=capture)


# --- secrets and rendering ----------------------------------------------------------------------------


def cluster_secrets() -> dict[str, str]:
    """Generated once per cluster into .labflow/cluster/secrets.json (0600); removed by `down`."""
    path = STATE / "secrets.json"
    if path.exists():
        return dict(json.loads(path.read_text()))
    key = PrivateKey.generate()
    values = {
        "pseudonym-key": secrets.token_hex(32),
        "tracing-public-key": bytes(key.public_key).hex(),
        "tracing-private-key": bytes(key).hex(),
        "tracing-signing-secret": secrets.token_hex(32),
        "dashboard-tokens": f"cluster-{secrets.token_urlsafe(12)}",
        "postgres-password": secrets.token_hex(24),
        "kafka-cluster-id": new_cluster_id(),
        **{f"db-{client}": secrets.token_hex(24) for client in CLIENTS},
    }
    STATE.mkdir(parents=True, exist_ok=True)
    path.touch(mode=0o600)
    path.write_text(json.dumps(values))
    return values


def owner_url(s: dict[str, str], host: str = "labflow-postgres", port: int = 5432) -> str:
    return f"postgresql://labflow:{s['postgres-password']}@{host}:{port}/labflow"


def client_url(s: dict[str, str], client: str) -> str:
    return f"postgresql://{CLIENTS[client]}_login:{s['db-' + client]}@labflow-postgres:5432/labflow"


def kafka_bootstrap() -> str:
    return ",".join(f"labflow-kafka-{i}:9092" for i in range(1, BROKERS + 1))


def external_bootstrap() -> str:
    return ",".join(f"127.0.0.1:{PORT['kafka'] + i - 1}" for i in range(1, BROKERS + 1))


def pod(name: str, containers: list[dict[str, Any]], **labels: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": {**PART_OF, **labels}},
            "spec": {"restartPolicy": "Always", "containers": containers}}


def infrastructure(s: dict[str, str]) -> list[dict[str, Any]]:
    """3 KRaft nodes (RF 3, min ISR 2; a second listener published for the host's checks) and PostgreSQL."""
    voters = ",".join(f"{i}@labflow-kafka-{i}:9093" for i in range(1, BROKERS + 1))
    pods = []
    for i in range(1, BROKERS + 1):
        env = {"KAFKA_NODE_ID": str(i), "KAFKA_CLUSTER_ID": s["kafka-cluster-id"],
               "KAFKA_QUORUM_VOTERS": voters,
               "KAFKA_ADVERTISED_HOST": f"labflow-kafka-{i}", "KAFKA_REPLICATION": "3", "KAFKA_MIN_ISR": "2",
               "KAFKA_HEAP": "384m", "KAFKA_EXTERNAL_PORT": "19092",
               "KAFKA_EXTERNAL_ADVERTISED": f"127.0.0.1:{PORT['kafka'] + i - 1}"}
        pods.append(pod(f"labflow-kafka-{i}", [{
            "name": "kafka", "image": KAFKA_IMAGE,
            "env": [{"name": k, "value": v} for k, v in env.items()],
            "ports": [{"containerPort": 19092, "hostPort": PORT["kafka"] + i - 1, "hostIP": "127.0.0.1"}],
        }]))
    pods.append(pod("labflow-postgres", [{
        "name": "postgres", "image": POSTGRES_IMAGE, "args": ["-c", "max_connections=300"],
        "env": [{"name": "POSTGRES_USER", "value": "labflow"}, {"name": "POSTGRES_DB", "value": "labflow"},
                {"name": "POSTGRES_PASSWORD", "value": s["postgres-password"]}],
        "ports": [{"containerPort": 5432, "hostPort": PORT["postgres"], "hostIP": "127.0.0.1"}],
    }]))
    return pods


HEALTHCHECK = ["/opt/venv/bin/python", "/opt/labflow/healthcheck.py"]


def chart_deployments() -> list[dict[str, Any]]:
    rendered = subprocess.run(
        [str(HELM), "template", "labflow", str(REPO / "deploy/helm/labflow"), "--kube-version", "1.31.0",
         "-f", str(REPO / "deploy/cluster/values-podman.yaml"), "--show-only", "templates/deployments.yaml"],
        check=True, text=True, capture_output=True).stdout
    return [d for d in yaml.safe_load_all(rendered) if d and d.get("kind") == "Deployment"]


def service_pods(s: dict[str, str]) -> list[dict[str, Any]]:
    """One pod per replica of each chart Deployment. Kept from the chart: image, command, args, ports,
    every plain env value, which secret key each service gets, security context, resources. Replaced:
    the Kafka (mTLS) and database (CloudNativePG) settings, probes as the image's healthcheck command
    (podman runs httpGet probes with curl, which the image has not) and the open-data volume (under the
    emptyDir /tmp, shared by the containers of a pod: the cluster is throw-away)."""
    pods = []
    for deployment in chart_deployments():
        component = deployment["metadata"]["labels"]["app.kubernetes.io/component"]
        spec = deployment["spec"]["template"]["spec"]
        (container,) = spec["containers"]
        env: list[dict[str, str]] = []
        for item in container.get("env", []):
            name = item["name"]
            if name.startswith("LABFLOW_KAFKA_") or name in ("LABFLOW_DATABASE_URL", "LABFLOW_DB_PASSWORD"):
                continue
            if "valueFrom" in item:
                env.append({"name": name, "value": s[item["valueFrom"]["secretKeyRef"]["key"]]})
            elif name == "LABFLOW_OPENDATA_DIR":
                env.append({"name": name, "value": "/tmp/labflow/opendata"})
            else:
                env.append({"name": name, "value": str(item["value"])})
        env += [{"name": "LABFLOW_DATABASE_URL", "value": client_url(s, component)},
                {"name": "LABFLOW_KAFKA_BOOTSTRAP", "value": kafka_bootstrap()},
                {"name": "LABFLOW_TOPIC_PARTITIONS", "value": str(PARTITIONS)}]
        security = {**{k: v for k, v in spec["securityContext"].items() if k in ("runAsUser", "runAsGroup")},
                    **{k: v for k, v in container["securityContext"].items() if k != "seccompProfile"}}
        replicas = int(deployment["spec"].get("replicas", 1))
        for replica in range(replicas):
            # only what the host reaches is declared: podman publishes a containerPort without a hostPort
            # on the same host port, which two replicas cannot share (HAProxy is the MLLP/HTTP address)
            ports = [{"containerPort": p["containerPort"], "hostPort": PORT[component] + 10 * replica,
                      "hostIP": "127.0.0.1"}
                     for p in container["ports"]
                     if p["name"] == "ops" or (p["name"] == "http" and component != "gateway")]
            containers = [{
                "name": component, "image": container["image"], "command": container["command"],
                "args": container["args"], "env": env, "ports": ports, "securityContext": security,
                "resources": container["resources"],
                "livenessProbe": {"exec": {"command": HEALTHCHECK}, "periodSeconds": 10,
                                  "failureThreshold": 6},
            }]
            if component == "tracing":
                containers.append({
                    "name": "standin", "image": container["image"], "command": ["labflow"],
                    "args": ["tracing", "standin", "--port", "9180"], "securityContext": security,
                    "env": [{"name": "LABFLOW_TRACING_SIGNING_SECRET", "value": s["tracing-signing-secret"]},
                            {"name": "LABFLOW_TRACING_PRIVATE_KEY", "value": s["tracing-private-key"]},
                            {"name": "LABFLOW_TRACING_PUBLIC_KEY", "value": s["tracing-public-key"]}],
                })
            for c in containers:
                c["volumeMounts"] = [{"name": f"labflow-{component}-{replica}-tmp", "mountPath": "/tmp"}]
            service = pod(f"labflow-{component}-{replica}", containers,
                          **{"app.kubernetes.io/component": component})
            # podman 4.3 makes an emptyDir a named volume called after the volume: one name per pod
            service["spec"]["volumes"] = [{"name": f"labflow-{component}-{replica}-tmp", "emptyDir": {}}]
            pods.append(service)
    return pods


def edge_pods(gateways: int) -> list[dict[str, Any]]:
    """HAProxy (one MLLP and one HTTP address) and Prometheus, their configuration in .labflow/cluster."""
    cfg = (REPO / "deploy/cluster/haproxy.cfg").read_text()
    for kind, port in (("mllp", 2575), ("http", 8080)):
        servers = "\n".join(f"  server gateway-{i} labflow-gateway-{i}:{port}" for i in range(gateways))
        cfg = cfg.replace(f"  server-template gateway-{kind}- GATEWAYS", servers)
    (STATE / "haproxy.cfg").write_text(cfg)
    targets = {"gateway": (9101, gateways), "worker": (9102, 2), "tracing": (9103, 1), "opendata": (8081, 1),
               "dashboard": (8000, 1)}
    scrape = [{"job_name": f"labflow-{name}",
               "static_configs": [{"targets": [f"labflow-{name}-{i}:{port}" for i in range(n)]}]}
              for name, (port, n) in targets.items()]
    (STATE / "prometheus.yml").write_text(yaml.safe_dump({
        "global": {"scrape_interval": "5s", "evaluation_interval": "5s"},
        "rule_files": ["/etc/prometheus/alerts.yml"], "scrape_configs": scrape}))

    def file(name: str, path: Path) -> dict[str, Any]:
        return {"name": name, "hostPath": {"path": str(path), "type": "File"}}

    lb = pod("labflow-lb", [{
        "name": "haproxy", "image": HAPROXY_IMAGE,
        "ports": [{"containerPort": 2575, "hostPort": PORT["mllp"], "hostIP": "127.0.0.1"},
                  {"containerPort": 8080, "hostPort": PORT["http"], "hostIP": "127.0.0.1"}],
        "volumeMounts": [{"name": "config", "mountPath": "/etc/haproxy/haproxy.cfg", "readOnly": True}]}])
    lb["spec"]["volumes"] = [file("config", STATE / "haproxy.cfg")]
    monitoring = pod("labflow-prometheus", [{
        "name": "prometheus", "image": PROMETHEUS_IMAGE,
        "ports": [{"containerPort": 9090, "hostPort": PORT["prometheus"], "hostIP": "127.0.0.1"}],
        "volumeMounts": [{"name": "config", "mountPath": "/etc/prometheus/prometheus.yml", "readOnly": True},
                         {"name": "alerts", "mountPath": "/etc/prometheus/alerts.yml", "readOnly": True}]}])
    monitoring["spec"]["volumes"] = [file("config", STATE / "prometheus.yml"),
                                     file("alerts", REPO / "deploy/prometheus/alerts.yml")]
    return [lb, monitoring]


def write(name: str, docs: list[dict[str, Any]]) -> Path:
    path = STATE / name
    path.touch(mode=0o600)
    path.write_text(yaml.safe_dump_all(docs, sort_keys=False))
    return path


# --- up / down ----------------------------------------------------------------------------------------


def host_settings(s: dict[str, str]) -> Settings:
    """How the host (the checks, the traffic) reaches the cluster: published ports, the owner role."""
    return Settings(kafka_bootstrap=external_bootstrap(),
                    database_url=owner_url(s, "127.0.0.1", PORT["postgres"]),
                    topic_partitions=PARTITIONS, topic_replication=BROKERS, worker_group="labflow-worker",
                    mllp_host="127.0.0.1", mllp_port=PORT["mllp"])


def ops_ports() -> dict[str, int]:
    return {"gateway-0": PORT["gateway"], "gateway-1": PORT["gateway"] + 10, "worker-0": PORT["worker"],
            "worker-1": PORT["worker"] + 10, "tracing-0": PORT["tracing"], "opendata-0": PORT["opendata"],
            "dashboard-0": PORT["dashboard"]}


def readyz() -> dict[str, int]:
    return {name: http_status(f"http://127.0.0.1:{port}/readyz") for name, port in ops_ports().items()}


def up() -> float:
    started = time.monotonic()
    s = cluster_secrets()
    if podman("network", "exists", NETWORK, check=False).returncode != 0:
        podman("network", "create", NETWORK)
    log("Kafka (3 KRaft nodes) and PostgreSQL")
    infra = infrastructure(s)
    if any(podman("pod", "exists", p["metadata"]["name"], check=False).returncode for p in infra):
        podman("kube", "play", "--replace", "--network", NETWORK, str(write("infrastructure.yaml", infra)))
    settings = host_settings(s)
    for address in external_bootstrap().split(","):
        wait_until(partial(broker_answers, address), PATIENCE_S, 1.0, f"Kafka on {address}")
    wait_until(lambda: _database_answers(settings.require_database()), PATIENCE_S, 1.0, "PostgreSQL")
    log("migrations, service roles and topics (RF 3, min ISR 2), as the chart's migration Job does")
    env = {"LABFLOW_DATABASE_URL": owner_url(s), "LABFLOW_KAFKA_BOOTSTRAP": kafka_bootstrap(),
           "LABFLOW_TOPIC_PARTITIONS": str(PARTITIONS), "LABFLOW_TOPIC_REPLICATION": str(BROKERS),
           "LABFLOW_TOPIC_MIN_INSYNC_REPLICAS": "2",
           **{f"LABFLOW_{c.upper()}_DATABASE_URL": client_url(s, c) for c in CLIENTS}}
    flags = [f"--env={k}={v}" for k, v in env.items()]
    for command in (["db", "upgrade"], ["topics", "create"]):
        podman("run", "--rm", "--network", NETWORK, "--read-only", *flags, LABFLOW_IMAGE, *command)
    engine = make_engine(settings.require_database())
    directory = LabDirectory(engine)
    known = {lab.lab_id for lab in directory.all()}
    for lab_id in lab_ids(LABS):  # the simulator's labs (an `up` of a running cluster adds none)
        if lab_id not in known:
            directory.add(lab_id, f"Cluster laboratory {lab_id[-4:]}", None, None)
    engine.dispose()
    log("services (the chart's Deployments), HAProxy, Prometheus")
    services = service_pods(s)
    gateways = sum(1 for p in services if p["metadata"]["name"].startswith("labflow-gateway-"))
    podman("kube", "play", "--replace", "--network", NETWORK, str(write("services.yaml", services)))
    podman("kube", "play", "--replace", "--network", NETWORK, str(write("edge.yaml", edge_pods(gateways))))
    wait_until(lambda: all(c == 200 for c in readyz().values()), PATIENCE_S, 1.0, "every /readyz 200")
    wait_until(prometheus_all_up, 300, 1.0, "every Prometheus target up")
    seconds = time.monotonic() - started
    log(f"cluster up in {seconds:.0f} s: MLLP 127.0.0.1:{PORT['mllp']}, HTTP 127.0.0.1:{PORT['http']}, "
        f"dashboard 127.0.0.1:{PORT['dashboard']}, Prometheus 127.0.0.1:{PORT['prometheus']}, "
        f"secrets in {STATE}")
    return seconds


def _database_answers(url: str) -> bool:
    import psycopg

    try:
        with psycopg.connect(url, connect_timeout=2) as conn:
            conn.execute("SELECT 1")
    except psycopg.OperationalError:
        return False
    return True


def down() -> None:
    """Every pod of the cluster with its containers and their volumes (Kafka's and PostgreSQL's data,
    the emptyDirs), the network, and the generated secrets."""
    pods = podman("pod", "ps", "-q", "--filter", f"label=app.kubernetes.io/part-of={NETWORK}",
                  capture=True).stdout.split()
    if pods:
        containers = [c for pod_id in pods
                      for c in podman("ps", "-aq", "--filter", f"pod={pod_id}", capture=True).stdout.split()]
        podman("pod", "stop", "-t", "10", *pods, check=False, capture=True)
        podman("rm", "-f", "-v", *containers, check=False, capture=True)
        podman("pod", "rm", "-f", *pods, check=False, capture=True)
    volumes = podman("volume", "ls", "-q", "--filter", "name=^labflow-.*-tmp$", capture=True).stdout.split()
    if volumes:
        podman("volume", "rm", "-f", *volumes, check=False, capture=True)
    if podman("network", "exists", NETWORK, check=False).returncode == 0:
        podman("network", "rm", "-f", NETWORK, check=False)
    for leftover in STATE.glob("*"):  # a failed test's folder (ACK records) stays for the diagnosis
        if leftover.is_file():
            leftover.unlink()
    log("cluster down (pods, volumes, network and generated secrets removed)")


# --- the test -----------------------------------------------------------------------------------------


def prometheus(path: str) -> Any:
    return httpx.get(f"http://127.0.0.1:{PORT['prometheus']}{path}", timeout=5).json()["data"]


def prometheus_all_up() -> bool:
    try:
        targets = prometheus("/api/v1/targets")["activeTargets"]
    except (httpx.HTTPError, KeyError, ValueError):
        return False
    return bool(targets) and all(t["health"] == "up" for t in targets)


def state(container: str) -> tuple[bool, str]:
    out = podman("inspect", "--format", "{{.State.Running}} {{.State.StartedAt}}", container,
                 capture=True).stdout.split(" ", 1)
    return out[0] == "true", out[1].strip()


class Revival:
    """Sees a killed container running again, as a kubelet would restart it.

    podman 4.3 does not: `kube play` gives a pod the exit policy `stop`, so once its only container
    exits the pod is stopped, and a stopped pod is left alone whatever its restartPolicy (the podman
    event log shows kill, died, pod stop and nothing more). Starting the container alone raced with that
    stop: started inside the stopping pod, it was stopped with it (SIGTERM, SIGKILL 10 s later) and
    never came back (a CI run's kafka-2 stayed down for its 600 s). So the whole pod is started, and only
    once it has been seen exited for SETTLE polls in a row, when no stop is in progress; every poll
    checks again, so a late stop of a started pod is undone too."""

    SETTLE = 5

    def __init__(self, container: str) -> None:
        """Before the kill: remembers the start that the kill ends."""
        self.container = container
        self.pod = podman("inspect", "--format", "{{.Pod}}", container, capture=True).stdout.strip()
        _, self.killed_start = state(container)
        self.exited_polls = 0

    def running_again(self) -> bool:
        """Whether the container runs, started since the kill (one poll; starts the pod when due)."""
        running, started_at = state(self.container)
        exited = not running and podman("pod", "inspect", "--format", "{{.State}}", self.pod,
                                        capture=True).stdout.strip() == "Exited"
        self.exited_polls = self.exited_polls + 1 if exited else 0
        if self.exited_polls >= self.SETTLE:
            podman("pod", "start", self.pod, check=False, capture=True)
            self.exited_polls = 0
        return running and started_at != self.killed_start


def kill(container: str) -> Revival:
    """kill -9 the container; returns once it runs again (a new start), with what keeps it running."""
    revival = Revival(container)
    podman("kill", "--signal", "KILL", container, capture=True)
    wait_until(revival.running_again, 120, 0.5, f"{container} running again")
    return revival


def wait_back(revival: Revival, ready: Any) -> None:
    """Wait for a killed container's service to answer; if it does not, say what podman saw."""
    try:
        wait_until(lambda: revival.running_again() and ready(), PATIENCE_S, 0.5, f"{revival.container} back")
    except AssertionError:
        print(podman("ps", "-a", "--format", "{{.Names}} {{.Status}}", check=False, capture=True).stdout)
        logs = podman("logs", "--tail", "60", revival.container, check=False, capture=True)
        print(logs.stdout + logs.stderr)
        raise


def test(rate: float, seconds: float, seed: int) -> int:
    s = cluster_secrets()
    settings = host_settings(s)
    folder = Path(tempfile.mkdtemp(prefix="cluster-test-", dir=STATE))
    profile = profiles.constant(rate, seconds)
    config = SimulatorConfig(profile, LABS, seed, "127.0.0.1", PORT["mllp"], folder / "acks.csv",
                             folder / "keys.csv", ack_timeout_s=30.0, poison=0.01)
    ctx = multiprocessing.get_context("spawn")
    ours, theirs = ctx.Pipe()
    simulator = ctx.Process(target=simulator_main, args=(theirs, config), name="cluster-labs")
    simulator.start()
    try:
        return _drive_and_check(settings, folder, ours, simulator, seconds)
    finally:
        if simulator.is_alive():
            simulator.kill()
            simulator.join(10)


def _drive_and_check(settings: Settings, folder: Path, ours: Any, simulator: Any, seconds: float) -> int:
    if not ours.poll(300):
        raise RuntimeError("the simulator did not plan its messages")
    ours.recv()
    services = SimpleNamespace(readyz=lambda: {k: v for k, v in readyz().items()
                                               if k.split("-")[0] in ("gateway", "worker", "tracing")})
    fault = Fault()
    kills: list[str] = []
    with ReadinessProbe(services) as probe:  # type: ignore[arg-type]
        start_at = time.time() + 1.0
        ours.send(start_at)
        wait_until(lambda: (folder / "acks.csv").exists() and (folder / "acks.csv").stat().st_size > 20000,
                   120, 0.5, "traffic flowing")
        fault.start = time.time()
        victims = [
            ("labflow-kafka-2-kafka", lambda: broker_answers(f"127.0.0.1:{PORT['kafka'] + 1}")),
            ("labflow-gateway-1-gateway", lambda: readyz()["gateway-1"] == 200),
            ("labflow-worker-1-worker", lambda: readyz()["worker-1"] == 200),
        ]
        revivals = []
        for container, ready in victims:  # one after the other, mid-stream
            log(f"kill -9 {container}")
            revivals.append((kill(container), ready))
            kills.append(f"{container} at +{time.time() - start_at:.0f} s")
        last_kill_at = time.time()
        for revival, ready in revivals:
            wait_back(revival, ready)
        fault.end = time.time()
        log(f"every victim back after {fault.end - fault.start:.0f} s")
        fault.notes.extend(kills)
        while not ours.poll(1.0):
            if not simulator.is_alive():
                raise RuntimeError(f"the simulator exited with {simulator.exitcode}")
        outcome = ours.recv()
        simulator.join(30)
        wait_until(lambda: probe.ready_again_at(fault.end) is not None, 300, 0.5, "services ready again")
        drained = drain_pipeline(settings, 180)
    (folder / "tracing-standin").mkdir()
    received = podman("exec", "labflow-tracing-0-standin", "cat",
                      "/tmp/labflow/tracing-standin/received.jsonl",
                      check=False, capture=True).stdout
    (folder / "tracing-standin" / "received.jsonl").write_text(received)
    stack = SimpleNamespace(kafka=SimpleNamespace(bootstrap=external_bootstrap()))
    row = scenario_checks(settings, stack, folder, outcome, fault, probe, drained)  # type: ignore[arg-type]
    row["traffic_ended_after_last_kill"] = start_at + seconds > last_kill_at
    up_ok = wait_until_bool(prometheus_all_up, 120)
    alerts = prometheus("/api/v1/alerts")["alerts"]
    firing = [a["labels"]["alertname"] for a in alerts if a["state"] == "firing"]
    problems = failures(row) + ([] if up_ok else ["a Prometheus target is down"]) + (
        [f"alerts firing: {', '.join(firing)}"] if firing else []) + (
        [] if row["traffic_ended_after_last_kill"] else ["the traffic ended before the last kill"])
    summary = {k: row[k] for k in ("sent", "aa", "ae_ar", "no_answer", "acknowledged_keys", "stored", "lost",
                                    "duplicated", "rejections_missing", "aggregates_equal_recomputation",
                                    "cases_opened", "cases_handed_over", "cases_missing", "recovery_s")}
    summary |= {"kills": kills, "prometheus_targets_up": up_ok, "alerts_firing": firing,
                "ok": not problems, "problems": problems}
    (REPO / "load_tests" / "results").mkdir(parents=True, exist_ok=True)
    (REPO / "load_tests" / "results" / "cluster-test.json").write_text(json.dumps(summary, indent=1) + "\n")
    print("cluster-test summary")
    for key, value in summary.items():
        print(f"  {key}: {value}")
    if problems:
        print(f"cluster-test: FAILED ({'; '.join(problems)}); ACK records in {folder}")
    else:
        shutil.rmtree(folder, ignore_errors=True)
        print("cluster-test: PASSED")
    return 0 if not problems else 1


def wait_until_bool(check: Any, timeout_s: float) -> bool:
    try:
        wait_until(check, timeout_s, 1.0)
    except AssertionError:
        return False
    return True


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("command", choices=["up", "down", "test", "render"])
    parser.add_argument("--rate", type=float, default=120.0, help="offered results/s")
    parser.add_argument("--seconds", type=float, default=120.0, help="traffic duration")
    parser.add_argument("--seed", type=int, default=2026)
    args = parser.parse_args()
    os.environ.setdefault("CONTAINERS_CONF", str(REPO / "deploy/containers/containers.conf"))
    if args.command == "render":
        s = cluster_secrets()
        for name, docs in (("infrastructure.yaml", infrastructure(s)), ("services.yaml", service_pods(s))):
            print(write(name, docs))
        return
    if args.command == "up":
        up()
    elif args.command == "down":
        down()
    else:
        sys.exit(test(args.rate, args.seconds, args.seed))


if __name__ == "__main__":
    main()
