"""Kafka adapter: client configuration and topic administration (confluent-kafka)."""

from __future__ import annotations

import socket
from typing import Any

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient
from confluent_kafka.admin._config import AlterConfigOpType, ConfigEntry, ConfigResource
from confluent_kafka.admin._resource import ResourceType
from confluent_kafka.cimpl import NewTopic

from services.core.config import Settings
from services.core.errors import KafkaUnavailable
from services.core.logs import librdkafka_logger
from services.core.record_sizes import PRODUCER_BATCH_BYTES, SizeLimits


def client_config(settings: Settings) -> dict[str, Any]:
    """Bootstrap servers, librdkafka's log lines through structlog and, when configured, TLS (mutual
    with a client certificate): what every client of ours starts from."""
    config: dict[str, Any] = {"bootstrap.servers": settings.require_kafka(), "logger": librdkafka_logger()}
    if settings.kafka_security_protocol.upper() != "PLAINTEXT":
        config["security.protocol"] = settings.kafka_security_protocol
    for key, path in (("ssl.ca.location", settings.kafka_ssl_ca_location),
                      ("ssl.certificate.location", settings.kafka_ssl_certificate_location),
                      ("ssl.key.location", settings.kafka_ssl_key_location)):
        if path is not None:
            config[key] = str(path)
    return config


def producer_config(settings: Settings, **extra: object) -> dict[str, object]:
    """Durable producer: nothing acknowledged to a lab may be lost (SPEC §2).

    `linger.ms` (LABFLOW_KAFKA_LINGER_MS, 10): results are keyed by pseudonym and raw copies by lab, so
    at national rates each partition gets few records per millisecond and every batch carries fixed
    costs in librdkafka and in the broker. Measured on 2 cores, 1,500 messages/s of three records each
    at a fixed rate (the gateway's records, one broker, 12 partitions per topic): from 2 ms to 10 ms
    the broker's CPU per message fell by about 30 % and the producer's by about 15 %, for 7 ms more on
    the median publish; 20 ms and 50 ms save more and cost more latency."""
    config: dict[str, object] = {
        **client_config(settings),
        "acks": "all",
        "enable.idempotence": True,
        "linger.ms": settings.kafka_linger_ms,
        "compression.type": "lz4",
        "message.timeout.ms": int(settings.delivery_timeout_s * 1000),
        # derived from the documented intake limits (services/core/record_sizes.py)
        "message.max.bytes": SizeLimits.of(settings).record_bytes,
        "batch.size": PRODUCER_BATCH_BYTES,
    }
    config.update(extra)
    return config


def consumer_config(settings: Settings, group_id: str, **extra: object) -> dict[str, object]:
    config: dict[str, object] = {
        **client_config(settings),
        "group.id": group_id,
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "auto.offset.reset": "earliest",
        "partition.assignment.strategy": "cooperative-sticky",
        # a worker that died is noticed in 10 s (default 45 s): its partitions do not wait long
        "session.timeout.ms": 10_000,
        "heartbeat.interval.ms": 2_000,
        "isolation.level": "read_committed",
        # a fetch waits for 64 KiB or 100 ms, where librdkafka's default (1 byte) answers each fetch
        # as soon as one record is there: with a producer of 1,500 messages/s and one consumer on 2
        # cores, the broker's CPU per message fell from 240–340 µs to 170–180 µs (the producer's own
        # share), for at most 100 ms more before a quiet topic's record is read
        "fetch.min.bytes": 65_536,
        "fetch.wait.max.ms": 100,
        # librdkafka pre-fetches up to 64 MiB per consumer by default, and a worker runs four (two for
        # results, two for lab traffic): catching up a backlog of 200,000 results, its peak RSS was
        # 459–482 MB (the chart's limit is 512 Mi), against 269–277 MB with 4 MiB each and no loss of
        # throughput (`bench_worker --results 200000`, alternated). 4 MiB is still seconds of traffic.
        "queued.max.messages.kbytes": 4096,
    }
    config.update(extra)
    return config


def admin_client(settings: Settings, *, require_broker: bool = False, **extra: object) -> AdminClient:
    """An admin client; with `require_broker`, one clear error at once when nothing listens there
    instead of librdkafka's long wait."""
    if require_broker and not broker_listens(settings.require_kafka()):
        raise KafkaUnavailable(settings.require_kafka())
    config: dict[str, Any] = {**client_config(settings), **extra}
    return AdminClient(config)


def create_topics(settings: Settings, timeout_s: float = 30.0) -> dict[str, str]:
    """Create the SPEC §2 topics; existing ones are left as they are. Returns topic -> outcome."""
    admin = admin_client(settings, require_broker=True)
    existing = set(admin.list_topics(timeout=timeout_s).topics)
    # raw and rejected payloads are nominative (names, INS, phone): kept only as long as allowed
    nominative = {settings.topics.raw, settings.topics.rejected}
    retention_ms = str(settings.nominative_retention_days * 24 * 3600 * 1000)
    size = {"max.message.bytes": str(SizeLimits.of(settings).topic_bytes)}
    # SPEC §9.1: replication 3 and min ISR 2 in production, so an acks=all write survives one broker
    # lost and is refused (not silently under-replicated) when two are; capped for a 1-broker laptop
    min_isr = str(max(1, min(settings.topic_min_insync_replicas, settings.topic_replication)))

    def config(name: str) -> dict[str, str]:
        values = size | {"min.insync.replicas": min_isr}
        if name in nominative:
            values["retention.ms"] = retention_ms
        return values

    wanted = [
        NewTopic(
            name,
            num_partitions=settings.topic_partitions,
            replication_factor=settings.topic_replication,
            config=config(name),
        )
        for name in settings.topics.all()
        if name not in existing
    ]
    outcome = {name: "exists" for name in settings.topics.all() if name in existing}
    if wanted:
        for name, future in admin.create_topics(wanted, operation_timeout=timeout_s).items():
            try:
                future.result(timeout_s)
                outcome[name] = "created"
            except KafkaException as exc:
                if "TOPIC_ALREADY_EXISTS" not in str(exc):
                    raise
                outcome[name] = "exists"
    _align_size_limit(admin, [name for name, done in outcome.items() if done == "exists"], size, timeout_s)
    return outcome


def _align_size_limit(
    admin: AdminClient, names: list[str], size: dict[str, str], timeout_s: float
) -> None:
    """Existing topics get the derived `max.message.bytes` too: the intake limits may have changed."""
    if not names:
        return
    entries = [
        ConfigEntry(key, value, incremental_operation=AlterConfigOpType.SET) for key, value in size.items()
    ]
    resources = [ConfigResource(ResourceType.TOPIC, name, incremental_configs=entries) for name in names]
    for future in admin.incremental_alter_configs(resources).values():
        future.result(timeout_s)


def broker_listens(bootstrap: str, timeout_s: float = 3.0) -> bool:
    """A plain TCP probe of the bootstrap servers: cheap, and librdkafka logs no refused connection."""
    for server in bootstrap.split(","):
        host, _, port = server.strip().rpartition(":")
        try:
            socket.create_connection((host, int(port)), timeout=timeout_s).close()
        except (OSError, ValueError):
            continue
        return True
    return False


def broker_answers(bootstrap: str, timeout_s: float = 2.0) -> bool:
    """A broker of a plaintext cluster answers a metadata request (the local stack's start-up wait)."""
    if not broker_listens(bootstrap, timeout_s):
        return False
    try:
        config: dict[str, Any] = {"bootstrap.servers": bootstrap, "logger": librdkafka_logger()}
        AdminClient(config).list_topics(timeout=timeout_s)
    except KafkaException:
        return False
    return True
