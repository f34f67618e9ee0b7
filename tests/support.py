"""Test-only support: faults and probes the test suite alone uses. What the load tests share with the
tests (isolated databases and topics, services as processes, canonical results) is `labflow_testkit`."""

from __future__ import annotations

import asyncio
import os
import secrets
import socket
import ssl
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta

import psycopg

from labflow_testkit.infrastructure import with_database
from labflow_testkit.processes import free_port, port_open, wait_until
from services.core.config import Settings
from services.core.db.engine import libpq_url
from services.core.domain.model import LabResult, Transport
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


def free_port_in(variable: str) -> int:
    """A free port from the range `lo-hi` in the environment variable (developers sharing the machine
    keep to their own block), else any free port."""
    import random

    span = os.environ.get(variable, "")
    if not span:
        return free_port()
    lo, hi = (int(part) for part in span.split("-", 1))
    for port in random.sample(range(lo, hi + 1), k=hi - lo + 1):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        if not port_open(port):
            return port
    raise RuntimeError(f"no free port in {variable}={span}")


KAFKA_IMAGE = "localhost/labflow-kafka:4.1.1"
POSTGRES_IMAGE = "localhost/labflow-postgres:15"


@contextmanager
def throwaway_containers(timeout_s: float = 180.0) -> Iterator[tuple[str, str]]:
    """A one-node Kafka and a PostgreSQL in containers of the images `make images` builds
    (deploy/containers), started by testcontainers and removed afterwards: (bootstrap, owner URL).

    The broker listens inside its container on the very port published on the host, so the address it
    advertises is right for the host's clients; ports come from LABFLOW_TEST_CONTAINER_PORTS (`lo-hi`).
    Ready is when the broker answers a metadata request and PostgreSQL a query (no log scraping).
    """
    from testcontainers.core.container import DockerContainer

    from services.core.kafka import broker_answers

    kafka_port = free_port_in("LABFLOW_TEST_CONTAINER_PORTS")
    postgres_port = free_port_in("LABFLOW_TEST_CONTAINER_PORTS")
    while postgres_port == kafka_port:
        postgres_port = free_port_in("LABFLOW_TEST_CONTAINER_PORTS")
    password = secrets.token_hex(16)
    kafka = (
        DockerContainer(KAFKA_IMAGE)
        .with_env("KAFKA_CLIENT_PORT", str(kafka_port))
        .with_env("KAFKA_ADVERTISED_HOST", "127.0.0.1")
        .with_env("KAFKA_HEAP", "512m")
        .with_bind_ports(kafka_port, kafka_port)
    )
    postgres = (
        DockerContainer(POSTGRES_IMAGE)
        .with_env("POSTGRES_USER", "labflow")
        .with_env("POSTGRES_PASSWORD", password)
        .with_env("POSTGRES_DB", "labflow")
        .with_bind_ports(5432, postgres_port)
    )
    url = f"postgresql://labflow:{password}@127.0.0.1:{postgres_port}/labflow"

    def database_answers() -> bool:
        try:
            with psycopg.connect(url, connect_timeout=2) as conn:
                conn.execute("SELECT 1")
        except psycopg.OperationalError:
            return False
        return True

    with kafka, postgres:
        bootstrap = f"127.0.0.1:{kafka_port}"
        wait_until(lambda: broker_answers(bootstrap), timeout_s, 0.5, f"the Kafka container on {bootstrap}")
        wait_until(database_answers, timeout_s, 0.5, f"the PostgreSQL container on port {postgres_port}")
        yield bootstrap, url



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

    def collected() -> bool:
        dead.extend(Rejection.model_validate_json(m.value() or b"")
                    for m in consumer.consume(10, 1) if m.error() is None)
        return len(dead) >= expected

    try:
        wait_until(collected, what=f"{expected} dead letter(s)")
    finally:
        consumer.close()
    return dead


def lab_message(lab: str, control_id: str, answer: str = "AA", collected_hours_ago: float = 6.0) -> bytes:
    """An ORU^R01 from `lab` that the gateway answers `answer`: AA; AE (an INS whose key is wrong:
    a content error the lab fixes); AR (an ADT^A01, a message type the gateway does not take)."""
    import random as random_module
    from dataclasses import replace

    from services.simulator.oru import Observation, Order, build_oru_r01, random_patient

    patient = random_patient(random_module.Random(control_id), {"2A": 1.0}, without_ins=0.0)
    if answer == "AE":
        assert patient.ins is not None
        patient = replace(patient, ins=f"{patient.ins[:-2]}{(int(patient.ins[-2:]) + 1) % 97 or 1:02d}")
    result_time = datetime.now(UTC) - timedelta(hours=1)
    collected = datetime.now(UTC) - timedelta(hours=collected_hours_ago)
    order = Order(f"S-{control_id}", "258500001", collected,
                  [Observation("94500-6", "POSITIF", "F", result_time)])
    message = build_oru_r01(lab, control_id, [(patient, [order])])
    return message.replace(b"ORU^R01^ORU_R01", b"ADT^A01^ADT_A01") if answer == "AR" else message


def through_intake(settings: Settings, payloads: Iterable[bytes]) -> list[str]:
    """Each payload through the gateway's own intake (real Kafka, as over MLLP): the ACK codes."""
    from services.core.kafka import producer_config
    from services.gateway.bootstrap import identity_protector
    from services.gateway.intake import Intake
    from services.gateway.publish import KafkaPublisher

    async def send() -> list[str]:
        publisher = KafkaPublisher(producer_config(settings))
        intake = Intake(publisher, settings.topics, identity_protector(settings))
        try:
            return [(await intake.receive_hl7(p, Transport.MLLP)).ack_code for p in payloads]
        finally:
            publisher.close()

    return asyncio.run(send())


@contextmanager
def lab_traffic_consumers(settings: Settings) -> Iterator[None]:
    """The worker's lab-traffic consumers (raw and rejected topics) running in threads."""
    import threading

    from services.worker.lab_traffic import build_lab_traffic

    loops = build_lab_traffic(settings)
    threads = [threading.Thread(target=loop.run, daemon=True) for loop in loops]
    for thread in threads:
        thread.start()
    try:
        yield
    finally:
        for loop in loops:
            loop.stop()
        for thread in threads:
            thread.join(30)


def count_lab_traffic(settings: Settings, sent: Mapping[str, Mapping[str, int]],
                      stored: Callable[[], bool]) -> None:
    """The worker (results consumer and lab-traffic consumers, in threads) runs until every lab's
    messages are counted (`sent`: lab → ACK code → messages) and `stored()` holds."""
    import threading

    from services.worker.app import build_worker

    worker = build_worker(settings)
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    try:
        with lab_traffic_consumers(settings):
            expected = {lab: (sum(n.values()), n["AE"], n["AR"], n["AE"] + n["AR"])
                        for lab, n in sent.items()}
            wait_until(lambda: lab_acks(settings) == expected, timeout_s=60, what="lab traffic counted")
            wait_until(stored, timeout_s=60, what="results stored")
    finally:
        worker.stop()
        thread.join(30)


def lab_acks(settings: Settings) -> dict[str, tuple[int, int, int, int]]:
    """Per lab over all days: messages, AE, AR, rejections written with their payload."""
    with psycopg.connect(libpq_url(settings.require_database())) as conn:
        rows = conn.execute(
            "SELECT lab, sum(messages)::int, sum(ae)::int, sum(ar)::int, sum(rejected_with_copy)::int "
            "FROM lab_acks GROUP BY lab"
        ).fetchall()
    return {str(r[0]): (int(r[1]), int(r[2]), int(r[3]), int(r[4])) for r in rows}
