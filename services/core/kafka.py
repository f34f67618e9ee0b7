"""Kafka adapter: client configuration and topic administration (confluent-kafka)."""

from __future__ import annotations

import socket

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic

from services.core.config import Settings


def producer_config(settings: Settings, **extra: object) -> dict[str, object]:
    """Durable producer: nothing acknowledged to a lab may be lost (SPEC §2)."""
    config: dict[str, object] = {
        "bootstrap.servers": settings.require_kafka(),
        "acks": "all",
        "enable.idempotence": True,
        "linger.ms": 2,
        "compression.type": "lz4",
        "message.timeout.ms": int(settings.delivery_timeout_s * 1000),
    }
    config.update(extra)
    return config


def consumer_config(settings: Settings, group_id: str, **extra: object) -> dict[str, object]:
    config: dict[str, object] = {
        "bootstrap.servers": settings.require_kafka(),
        "group.id": group_id,
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "auto.offset.reset": "earliest",
        "partition.assignment.strategy": "cooperative-sticky",
        # a worker that died is noticed in 10 s (default 45 s): its partitions do not wait long
        "session.timeout.ms": 10_000,
        "heartbeat.interval.ms": 2_000,
        "isolation.level": "read_committed",
    }
    config.update(extra)
    return config


def create_topics(settings: Settings, timeout_s: float = 30.0) -> dict[str, str]:
    """Create the SPEC §2 topics; existing ones are left as they are. Returns topic -> outcome."""
    admin = AdminClient({"bootstrap.servers": settings.require_kafka()})
    existing = set(admin.list_topics(timeout=timeout_s).topics)
    # raw and rejected payloads are nominative (names, INS, phone): kept only as long as allowed
    nominative = {settings.topics.raw, settings.topics.rejected}
    retention_ms = str(settings.nominative_retention_days * 24 * 3600 * 1000)
    # SPEC §9.1: replication 3 and min ISR 2 in production, so an acks=all write survives one broker
    # lost and is refused (not silently under-replicated) when two are; capped for a 1-broker laptop
    min_isr = str(max(1, min(settings.topic_min_insync_replicas, settings.topic_replication)))

    def config(name: str) -> dict[str, str]:
        values = {"min.insync.replicas": min_isr}
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
    return outcome


def broker_answers(bootstrap: str, timeout_s: float = 2.0) -> bool:
    host, _, port = bootstrap.split(",")[0].rpartition(":")
    try:  # a plain TCP probe first keeps librdkafka from logging refused connections
        socket.create_connection((host, int(port)), timeout=timeout_s).close()
        AdminClient({"bootstrap.servers": bootstrap}).list_topics(timeout=timeout_s)
    except (OSError, KafkaException):
        return False
    return True
