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
from services.core.limits import PRODUCER_BATCH_BYTES, SizeLimits
from services.core.logs import librdkafka_logger


def producer_config(settings: Settings, **extra: object) -> dict[str, object]:
    """Durable producer: nothing acknowledged to a lab may be lost (SPEC §2)."""
    config: dict[str, object] = {
        "bootstrap.servers": settings.require_kafka(),
        "acks": "all",
        "enable.idempotence": True,
        "linger.ms": 2,
        "compression.type": "lz4",
        "message.timeout.ms": int(settings.delivery_timeout_s * 1000),
        "logger": librdkafka_logger(),
        # derived from the documented intake limits (services/core/limits.py)
        "message.max.bytes": SizeLimits.of(settings).record_bytes,
        "batch.size": PRODUCER_BATCH_BYTES,
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
        "logger": librdkafka_logger(),
    }
    config.update(extra)
    return config


def admin_client(bootstrap: str, **extra: object) -> AdminClient:
    config: dict[str, Any] = {"bootstrap.servers": bootstrap, "logger": librdkafka_logger(), **extra}
    return AdminClient(config)


def create_topics(settings: Settings, timeout_s: float = 30.0) -> dict[str, str]:
    """Create the SPEC §2 topics; existing ones are left as they are. Returns topic -> outcome."""
    admin = admin_client(require_broker(settings.require_kafka()))
    existing = set(admin.list_topics(timeout=timeout_s).topics)
    # raw and rejected payloads are nominative (names, INS, phone): kept only as long as allowed
    nominative = {settings.topics.raw, settings.topics.rejected}
    retention_ms = str(settings.nominative_retention_days * 24 * 3600 * 1000)
    size = {"max.message.bytes": str(SizeLimits.of(settings).topic_bytes)}
    wanted = [
        NewTopic(
            name,
            num_partitions=settings.topic_partitions,
            replication_factor=settings.topic_replication,
            config=size | ({"retention.ms": retention_ms} if name in nominative else {}),
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


def broker_answers(bootstrap: str, timeout_s: float = 2.0) -> bool:
    host, _, port = bootstrap.split(",")[0].rpartition(":")
    try:  # a plain TCP probe first keeps librdkafka from logging refused connections
        socket.create_connection((host, int(port)), timeout=timeout_s).close()
        admin_client(bootstrap).list_topics(timeout=timeout_s)
    except (OSError, KafkaException):
        return False
    return True


def require_broker(bootstrap: str, timeout_s: float = 5.0) -> str:
    """`bootstrap` when a broker answers there; else one clear error at once, not a long librdkafka wait."""
    if not broker_answers(bootstrap, timeout_s):
        raise KafkaUnavailable(bootstrap)
    return bootstrap
