"""Test-only support: faults and probes the test suite alone uses. What the load tests share with the
tests (isolated databases and topics, services as processes, canonical results) is `labflow_testkit`."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

import psycopg

from labflow_testkit.infrastructure import with_database
from labflow_testkit.processes import wait_until
from services.core.config import Settings
from services.core.db.engine import libpq_url
from services.core.domain.model import LabResult
from services.core.domain.rejection import Rejection
from services.simulator.client import Ack, MllpClient


@contextmanager
def database_refusing_connections(settings: Settings) -> Iterator[None]:
    """An outage of the test's database alone: its sessions are terminated (AdminShutdown, as in a
    PostgreSQL restart) and new connections are refused until the block ends."""
    database = settings.require_database().rpartition("/")[2]
    admin = libpq_url(with_database(settings.require_database(), "postgres"))
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS false')
        conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (database,))
    try:
        yield
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS true')


def produce_results(settings: Settings, results: Iterable[LabResult]) -> None:
    """Put canonical results on the results topic as the gateway does (keyed by pseudonym)."""
    from confluent_kafka import Producer

    from services.core.kafka import producer_config

    producer = Producer(producer_config(settings))
    for r in results:
        producer.produce(settings.topics.results, r.model_dump_json().encode(), r.patient_pseudonym.encode())
        producer.poll(0)
    assert producer.flush(60) == 0, "Kafka did not confirm every result"


def mllp_send(port: int, *payloads: bytes, ssl_context: ssl.SSLContext | None = None) -> list[Ack]:
    """Like a lab: one connection, each message sent after the previous one's ACK."""

    async def conversation() -> list[Ack]:
        client = await MllpClient("127.0.0.1", port, ssl_context).connect()
        try:
            return [await client.send(payload) for payload in payloads]
        finally:
            await client.close()

    return asyncio.run(conversation())


def dead_letters(settings: Settings, expected: int) -> list[Rejection]:
    """The first `expected` records of the rejected topic (waits for them)."""
    from confluent_kafka import Consumer

    consumer = Consumer({"bootstrap.servers": settings.require_kafka(), "group.id": "dlq-probe",
                         "auto.offset.reset": "earliest"})
    consumer.subscribe([settings.topics.rejected])
    dead: list[Rejection] = []
    try:
        wait_until(lambda: dead.extend(Rejection.model_validate_json(m.value() or b"")
                                       for m in consumer.consume(10, 1) if m.error() is None)
                   or len(dead) >= expected, what=f"{expected} dead letter(s)")
    finally:
        consumer.close()
    return dead
