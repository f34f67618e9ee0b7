"""Apache Kafka (KRaft) from the official Maven Central artifacts: one node for a laptop, or a real
cluster of N combined broker+controller nodes on this machine (`labflow stack up --kafka-brokers 3`).

Policy and why:
- One node (the default) keeps its data in `<state>/kafka/`, as before, so a laptop stack is unchanged.
- A cluster lives in `<state>/kafka-cluster/node-<id>/` (its own config, data dir, pid file and log per
  node). Every node is broker and controller; the static quorum names all of them as voters, so a
  cluster of 3 survives the loss of any one node — the broker or the active controller. Node `i`
  (0-based) listens on `LABFLOW_KAFKA_PORT + 2i` (clients, inter-broker) and
  `LABFLOW_KAFKA_CONTROLLER_PORT + 2i` (quorum): with the defaults 19092/19093 the ports interleave and
  never collide. All nodes are formatted with one cluster id (read back from a node already formatted,
  so restarting one node never re-formats it).
- Internal topics (consumer offsets, transactions) are replicated min(N, 3) times with a minimum ISR of
  min(N, 2); the application topics get their replication and `min.insync.replicas` from
  `services.core.kafka.create_topics` (one place).
- Fault injection on the network (`load_tests/chaos.py`) needs every byte between the services and a
  broker to cross the proxy, but Kafka clients connect to the addresses the brokers *advertise*, not to
  the bootstrap address. With `LABFLOW_KAFKA_PROXY_PORT` set, each node gets a dedicated third listener
  `PROXIED` bound on `PROXY_PORT + 2i + 1` and advertised as `PROXY_PORT + 2i`, where a Toxiproxy proxy
  forwards to it. Clients that bootstrap through a proxy port are told the proxy addresses of every
  broker (metadata answers with the listener the request came in on); the brokers' own replication and
  the controller quorum keep their direct listeners, so a network fault hits only the services.
"""

from __future__ import annotations

import base64
import hashlib
import re
import shutil
import subprocess
import uuid
from dataclasses import dataclass
from pathlib import Path

from services.core.config import REPO_ROOT, Settings
from services.core.errors import OperatorError
from services.stack.process import ManagedProcess

POM = REPO_ROOT / "deploy" / "local" / "pom.xml"
MAIN_CLASS = "kafka.Kafka"
STORAGE_TOOL = "kafka.tools.StorageTool"

LOG4J2 = """<?xml version="1.0" encoding="UTF-8"?>
<Configuration status="WARN">
  <Appenders>
    <Console name="stdout" target="SYSTEM_OUT">
      <PatternLayout pattern="[%d] %p %m (%c)%n"/>
    </Console>
  </Appenders>
  <Loggers>
    <Logger name="kafka" level="INFO"/>
    <Logger name="org.apache.kafka" level="WARN"/>
    <Root level="WARN"><AppenderRef ref="stdout"/></Root>
  </Loggers>
</Configuration>
"""


def new_cluster_id() -> str:
    """A KRaft cluster id: 16 random bytes, URL-safe base64 without padding. One starting with `-`
    would be read as an option by the storage tool (Kafka's own generator skips those too)."""
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cluster_id.startswith("-"):
            return cluster_id


@dataclass(frozen=True)
class KafkaNode:
    """One combined broker + controller of the local stack."""

    node_id: int
    broker_port: int
    controller_port: int
    home: Path
    proxy_port: int | None = None  # advertised address of the PROXIED listener (the Toxiproxy side)

    @property
    def data(self) -> Path:
        return self.home / "data"

    @property
    def config(self) -> Path:
        return self.home / "server.properties"

    @property
    def proxied_port(self) -> int | None:
        """Where the PROXIED listener binds (the proxy forwards to it)."""
        return None if self.proxy_port is None else self.proxy_port + 1

    @property
    def process(self) -> ManagedProcess:
        name = "kafka" if self.home.name == "kafka" else f"kafka-{self.node_id}"
        return ManagedProcess(name, self.home / "kafka.pid", self.home / "kafka.log")

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.broker_port}"


class LocalKafka:
    def __init__(self, settings: Settings, brokers: int | None = None) -> None:
        self.settings = settings
        self.brokers = brokers if brokers is not None else settings.kafka_brokers
        if self.brokers < 1:
            raise ValueError("a Kafka stack needs at least one broker")
        pom_digest = hashlib.sha256(POM.read_bytes()).hexdigest()[:10]
        self.libs = settings.state_dir / "cache" / f"kafka-libs-{pom_digest}"
        self.nodes = [self._node(i) for i in range(self.brokers)]

    def _node(self, index: int) -> KafkaNode:
        s = self.settings
        home = s.state_dir / "kafka" if self.brokers == 1 else cluster_home(s) / f"node-{index + 1}"
        return KafkaNode(
            node_id=index + 1,
            broker_port=s.kafka_port + 2 * index,
            controller_port=s.kafka_controller_port + 2 * index,
            home=home,
            proxy_port=s.kafka_proxy_port + 2 * index if s.kafka_proxy_port else None,
        )

    # kept for callers of the single-node stack
    @property
    def home(self) -> Path:
        return self.nodes[0].home

    @property
    def process(self) -> ManagedProcess:
        return self.nodes[0].process

    @property
    def bootstrap(self) -> str:
        return ",".join(node.address for node in self.nodes)

    @property
    def proxied_bootstrap(self) -> str | None:
        """Bootstrap servers through the proxy (None without `LABFLOW_KAFKA_PROXY_PORT`)."""
        if any(node.proxy_port is None for node in self.nodes):
            return None
        return ",".join(f"127.0.0.1:{node.proxy_port}" for node in self.nodes)

    @property
    def replication(self) -> int:
        return min(self.brokers, 3)

    def running(self) -> bool:
        return all(node.process.running() for node in self.nodes)

    def fetch(self) -> None:
        """Resolve the broker and its dependencies with Maven (cached in ~/.m2 and the state dir)."""
        if self.libs.exists() and any(self.libs.glob("kafka_2.13-*.jar")):
            return
        if shutil.which("mvn") is None:
            raise OperatorError("Maven (mvn) is needed to fetch Apache Kafka from Maven Central")
        staging = self.libs.with_name(self.libs.name + ".partial")
        shutil.rmtree(staging, ignore_errors=True)
        subprocess.run(
            [
                "mvn",
                "-q",
                "-B",
                "-Dstyle.color=never",
                "-f",
                str(POM),
                "dependency:copy-dependencies",
                f"-DoutputDirectory={staging}",
                "-DincludeScope=runtime",
            ],
            check=True,
        )
        staging.rename(self.libs)

    def _write_config(self, node: KafkaNode) -> None:
        s = self.settings
        node.home.mkdir(parents=True, exist_ok=True)
        voters = ",".join(f"{n.node_id}@127.0.0.1:{n.controller_port}" for n in self.nodes)
        listeners = [f"PLAINTEXT://127.0.0.1:{node.broker_port}", f"CONTROLLER://127.0.0.1:{node.controller_port}"]
        advertised = [f"PLAINTEXT://127.0.0.1:{node.broker_port}"]
        protocols = ["PLAINTEXT:PLAINTEXT", "CONTROLLER:PLAINTEXT"]
        if node.proxy_port is not None:
            listeners.append(f"PROXIED://127.0.0.1:{node.proxied_port}")
            advertised.append(f"PROXIED://127.0.0.1:{node.proxy_port}")
            protocols.append("PROXIED:PLAINTEXT")
        replication, min_isr = self.replication, min(self.brokers, 2)
        node.config.write_text(
            "\n".join(
                [
                    "process.roles=broker,controller",
                    f"node.id={node.node_id}",
                    f"controller.quorum.voters={voters}",
                    f"listeners={','.join(listeners)}",
                    f"advertised.listeners={','.join(advertised)}",
                    "controller.listener.names=CONTROLLER",
                    f"listener.security.protocol.map={','.join(protocols)}",
                    "inter.broker.listener.name=PLAINTEXT",
                    f"log.dirs={node.data}",
                    f"num.partitions={s.topic_partitions}",
                    f"offsets.topic.replication.factor={replication}",
                    "offsets.topic.num.partitions=12",
                    f"transaction.state.log.replication.factor={replication}",
                    f"transaction.state.log.min.isr={min_isr}",
                    f"share.coordinator.state.topic.replication.factor={replication}",
                    f"share.coordinator.state.topic.min.isr={min_isr}",
                    "group.initial.rebalance.delay.ms=0",
                    "auto.create.topics.enable=false",
                    "log.retention.hours=168",
                    "",
                ]
            )
        )
        (node.home / "log4j2.xml").write_text(LOG4J2)

    def _java(self, node: KafkaNode, main_class: str, *args: str) -> list[str]:
        return [
            "java",
            "-Xms256m",
            f"-Xmx{self.settings.kafka_heap}",
            "-XX:+UseG1GC",
            f"-Dlog4j2.configurationFile={node.home / 'log4j2.xml'}",
            "-cp",
            f"{self.libs}/*",
            main_class,
            *args,
        ]

    def _cluster_id(self) -> str:
        """The id of a node already formatted (all nodes of one cluster share it), else a new one."""
        for node in self.nodes:
            meta = node.data / "meta.properties"
            if meta.exists() and (found := re.search(r"^cluster\.id=(\S+)$", meta.read_text(), re.M)):
                return found.group(1)
        return new_cluster_id()

    def start(self) -> None:
        """Start every node that is not running (formatting a node's storage on its first start)."""
        self.fetch()
        cluster_id = self._cluster_id()
        for node in self.nodes:
            self.start_node(node, cluster_id)

    def start_node(self, node: KafkaNode, cluster_id: str | None = None) -> None:
        if node.process.running():
            return
        self.fetch()
        self._write_config(node)
        if not (node.data / "meta.properties").exists():
            formatted = subprocess.run(
                self._java(node, STORAGE_TOOL, "format", "-t", cluster_id or self._cluster_id(),
                           "-c", str(node.config)),
                capture_output=True,
                text=True,
            )
            if formatted.returncode != 0:
                raise RuntimeError(f"Kafka storage format failed: {formatted.stderr or formatted.stdout}")
        node.process.start(self._java(node, MAIN_CLASS, str(node.config)))

    def stop(self) -> bool:
        stopped = False
        for node in self.nodes:
            stopped = node.process.stop(timeout_s=30) or stopped
        return stopped


def cluster_home(settings: Settings) -> Path:
    return settings.state_dir / "kafka-cluster"


def started_stacks(settings: Settings) -> list[LocalKafka]:
    """The single node and the cluster found under the state dir (whichever `stack up` started)."""
    stacks = [LocalKafka(settings, brokers=1)]
    nodes = sorted(cluster_home(settings).glob("node-*"))
    if nodes:
        stacks.append(LocalKafka(settings, brokers=max(2, len(nodes))))
    return stacks
