"""The gateway's producer against the real broker: Kafka reachability (for /readyz) and records over
the derived size limit."""

from __future__ import annotations

import asyncio

import pytest
from confluent_kafka import KafkaError

from labflow_testkit.processes import free_port, wait_until
from services.core.config import Settings
from services.core.kafka import producer_config
from services.core.record_sizes import SizeLimits
from services.gateway.publish import KafkaPublisher, Record, RecordTooLarge

pytestmark = pytest.mark.integration


def test_reachability_follows_all_brokers_down_and_comes_back_by_itself(shared_settings: Settings) -> None:
    publisher = KafkaPublisher(producer_config(shared_settings))
    try:
        wait_until(lambda: publisher.reachable, timeout_s=15, what="the first metadata answer")
        # what librdkafka reports through error_cb when the last broker connection is lost
        publisher._on_error(KafkaError(KafkaError._ALL_BROKERS_DOWN))
        assert not publisher.reachable
        wait_until(lambda: publisher.reachable, timeout_s=10, what="the probe finding Kafka again")
    finally:
        publisher.close()


def test_not_reachable_while_no_broker_answers(shared_settings: Settings) -> None:
    away = shared_settings.model_copy(update={"kafka_bootstrap": f"127.0.0.1:{free_port()}"})
    publisher = KafkaPublisher(producer_config(away, log_level=0))
    try:
        for _ in range(10):
            assert not publisher.reachable
            asyncio.run(asyncio.sleep(0.3))
    finally:
        publisher._producer.purge()
        publisher.close()


def test_the_largest_rejection_fits_and_a_larger_record_is_refused_before_producing(
    shared_settings: Settings,
) -> None:
    limits = SizeLimits.of(shared_settings)
    publisher = KafkaPublisher(producer_config(shared_settings))
    topic = shared_settings.topics.rejected
    try:
        # a record as large as a rejection of the largest payload may be (the topic takes it)
        asyncio.run(publisher.publish([Record(topic, b"r" * (limits.record_bytes - 200), b"k")]))
        with pytest.raises(RecordTooLarge):
            asyncio.run(publisher.publish([Record(topic, b"r" * (limits.record_bytes + 1))]))
    finally:
        publisher.close()


def test_existing_topics_get_the_derived_size_limit(shared_settings: Settings) -> None:
    from confluent_kafka.admin import AdminClient
    from confluent_kafka.admin._config import ConfigResource
    from confluent_kafka.admin._resource import ResourceType

    from services.core.kafka import create_topics

    bigger = shared_settings.model_copy(update={"http_max_body_bytes": 20 * 1024 * 1024})
    assert set(create_topics(bigger).values()) == {"exists"}
    admin = AdminClient({"bootstrap.servers": shared_settings.require_kafka()})
    resource = ConfigResource(ResourceType.TOPIC, shared_settings.topics.raw)
    config = admin.describe_configs([resource])[resource].result(10)
    assert config["max.message.bytes"].value == str(SizeLimits.of(bigger).topic_bytes)
    create_topics(shared_settings)  # back to the session's limits


def test_every_record_of_concurrent_publishes_is_confirmed_loop_after_loop(shared_settings: Settings) -> None:
    """Deliveries are served by the loop's pump while records are in flight and by the idle thread
    otherwise: no confirmation is lost between them, and a pump left behind by a closed loop does not
    hold the next loop's deliveries back (a gateway process runs one loop; tests and the replay CLI
    run several)."""
    publisher = KafkaPublisher(producer_config(shared_settings))
    topics = shared_settings.topics

    async def burst(batches: int) -> int:
        async def one(n: int) -> int:
            key = f"k{n}".encode()
            records = [
                Record(topics.raw, b"raw", key),
                Record(topics.results, b"{}", key),
                Record(topics.results, b"{}", key),
            ]
            await publisher.publish(records)
            return len(records)

        return sum(await asyncio.gather(*(one(n) for n in range(batches))))

    try:
        for batches in (300, 1, 300):
            assert asyncio.run(asyncio.wait_for(burst(batches), timeout=60)) == 3 * batches
            asyncio.run(asyncio.sleep(0.2))  # idle: the thread polls again
        assert len(publisher._producer) == 0
    finally:
        publisher.close()
