"""A single-node Apache Kafka (KRaft) from the official Maven Central artifacts."""

from __future__ import annotations

import base64
import hashlib
import shutil
import subprocess
import uuid

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


class LocalKafka:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.home = settings.state_dir / "kafka"
        pom_digest = hashlib.sha256(POM.read_bytes()).hexdigest()[:10]
        self.libs = settings.state_dir / "cache" / f"kafka-libs-{pom_digest}"
        self.data = self.home / "data"
        self.config = self.home / "server.properties"
        self.process = ManagedProcess("kafka", self.home / "kafka.pid", self.home / "kafka.log")

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.settings.kafka_port}"

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

    def _write_config(self) -> None:
        s = self.settings
        self.home.mkdir(parents=True, exist_ok=True)
        self.config.write_text(
            "\n".join(
                [
                    "process.roles=broker,controller",
                    "node.id=1",
                    f"controller.quorum.voters=1@127.0.0.1:{s.kafka_controller_port}",
                    f"listeners=PLAINTEXT://127.0.0.1:{s.kafka_port},CONTROLLER://127.0.0.1:{s.kafka_controller_port}",
                    f"advertised.listeners=PLAINTEXT://127.0.0.1:{s.kafka_port}",
                    "controller.listener.names=CONTROLLER",
                    "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
                    "inter.broker.listener.name=PLAINTEXT",
                    f"log.dirs={self.data}",
                    f"num.partitions={s.topic_partitions}",
                    "offsets.topic.replication.factor=1",
                    "offsets.topic.num.partitions=12",
                    "transaction.state.log.replication.factor=1",
                    "transaction.state.log.min.isr=1",
                    "share.coordinator.state.topic.replication.factor=1",
                    "share.coordinator.state.topic.min.isr=1",
                    "group.initial.rebalance.delay.ms=0",
                    "auto.create.topics.enable=false",
                    "log.retention.hours=168",
                    "",
                ]
            )
        )
        (self.home / "log4j2.xml").write_text(LOG4J2)

    def _java(self, main_class: str, *args: str) -> list[str]:
        return [
            "java",
            "-Xms256m",
            f"-Xmx{self.settings.kafka_heap}",
            "-XX:+UseG1GC",
            f"-Dlog4j2.configurationFile={self.home / 'log4j2.xml'}",
            "-cp",
            f"{self.libs}/*",
            main_class,
            *args,
        ]

    def start(self) -> None:
        if self.process.running():
            return
        self.fetch()
        self._write_config()
        if not (self.data / "meta.properties").exists():
            formatted = subprocess.run(
                self._java(STORAGE_TOOL, "format", "-t", new_cluster_id(), "-c", str(self.config)),
                capture_output=True,
                text=True,
            )
            if formatted.returncode != 0:
                raise RuntimeError(f"Kafka storage format failed: {formatted.stderr or formatted.stdout}")
        self.process.start(self._java(MAIN_CLASS, str(self.config)))

    def stop(self) -> bool:
        return self.process.stop(timeout_s=30)
