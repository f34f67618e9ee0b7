"""Test support: isolated databases and topics on the real servers, services as real processes."""

from __future__ import annotations

import asyncio
import os
import secrets
import socket
import ssl
import subprocess
import sys
import time
import urllib.request
import uuid
import zlib
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import psycopg
from nacl.public import PrivateKey

from services.core.config import DATABASE_CLIENTS, REPO_ROOT, Settings
from services.core.db.engine import libpq_url
from services.core.db.migrate import upgrade
from services.core.db.roles import GROUP_ROLES, drop_login_roles, sync_login_roles, with_credentials
from services.core.domain.model import (
    LabResult,
    Outcome,
    PseudonymBasis,
    ResultStatus,
    Sex,
    TestKind,
    Transport,
    make_result_id,
)
from services.core.domain.rejection import Rejection
from services.core.kafka import create_topics
from services.simulator.client import Ack, MllpClient

T = TypeVar("T")


def with_database(url: str, name: str) -> str:
    base, _, _ = url.rpartition("/")
    return f"{base}/{name}"


@contextmanager
def isolated_settings(
    kafka_bootstrap: str, database_url: str, partitions: int = 3, replication: int = 1
) -> Iterator[Settings]:
    """A fresh database (migrated) and fresh topics on the real servers, dropped afterwards.

    Every database client connects as a login role of its own (member of its service's group role),
    so whatever a test runs through the services proves their grants are enough.
    """
    tag = uuid.uuid4().hex[:10]
    db_name = f"labflow_test_{tag}"
    admin = libpq_url(with_database(database_url, "postgres"))
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{db_name}"')
    url = with_database(database_url, db_name)
    logins = {client: f"{GROUP_ROLES[client]}_{tag}" for client in DATABASE_CLIENTS}
    client_urls: dict[str, Any] = {
        f"{client}_database_url": with_credentials(url, login, secrets.token_hex(16))
        for client, login in logins.items()
    }
    key = PrivateKey.generate()
    settings = Settings(
        kafka_bootstrap=kafka_bootstrap,
        database_url=url,
        **client_urls,
        topic_prefix=f"test-{tag}.",
        topic_partitions=partitions,
        topic_replication=replication,
        pseudonym_key=secrets.token_hex(32),
        tracing_public_key=bytes(key.public_key).hex(),
        tracing_private_key=bytes(key).hex(),
        worker_group=f"test-worker-{tag}",
        worker_batch_timeout_s=0.2,
    )
    upgrade(url)
    sync_login_roles(settings)
    create_topics(settings)
    try:
        yield settings
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{db_name}" WITH (FORCE)')
        drop_login_roles(admin, list(logins.values()))


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


def settings_env(settings: Settings, **extra: str) -> dict[str, str]:
    """The environment a service process needs to run against `settings`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LABFLOW_")}
    values: dict[str, Any] = settings.model_dump()
    for key, value in values.items():
        if value is None:
            continue
        if hasattr(value, "get_secret_value"):
            value = value.get_secret_value()
        env[f"LABFLOW_{key.upper()}"] = str(value)
    env.update(extra)
    env["PYTHONPATH"] = str(REPO_ROOT)
    return env


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


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


def wait_until(check: Callable[[], T], timeout_s: float = 30.0, interval_s: float = 0.1, what: str = "") -> T:
    deadline = time.monotonic() + timeout_s
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what or check}")
        time.sleep(interval_s)


class ServiceProcess:
    """`labflow <service>` as a real process, its output kept in a log file for the failure report."""

    def __init__(self, name: str, env: dict[str, str], log_dir: Path) -> None:
        self.name = name
        self.log_path = log_dir / f"{name}-{uuid.uuid4().hex[:6]}.log"
        self._log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "services.cli", name], env=env, stdout=self._log, stderr=subprocess.STDOUT
        )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-5000:]

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()
        self._log.close()


def port_open(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
    except OSError:
        return False
    return True


def http_status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except OSError:
        return 0


def make_result(**overrides: Any) -> LabResult:
    """A valid canonical result; override what the test is about."""
    lab = overrides.pop("sending_facility", "LAB-TEST")
    specimen = overrides.pop("specimen_id", uuid.uuid4().hex[:12])
    loinc = overrides.pop("loinc", "94500-6")
    collected = overrides.pop("collected_at", datetime(2022, 1, 10, 9, 30, tzinfo=UTC))
    fields: dict[str, Any] = {
        "result_id": make_result_id(lab, specimen, loinc),
        "sending_application": "LIS",
        "sending_facility": lab,
        "message_control_id": uuid.uuid4().hex[:10],
        "transport": Transport.MLLP,
        "received_at": datetime.now(UTC),
        "patient_pseudonym": secrets.token_hex(32),
        "pseudonym_basis": PseudonymBasis.INS,
        "sex": Sex.FEMALE,
        "birth_year": 1980,
        "age_class": "49",
        "postal_code": "75011",
        "department": "75",
        "region": "11",
        "specimen_id": specimen,
        "specimen_type": "258500001",
        "collected_at": collected,
        "loinc": loinc,
        "test_kind": TestKind.RT_PCR,
        "outcome": Outcome.POSITIVE,
        "status": ResultStatus.FINAL,
        "result_at": collected + timedelta(hours=20),
    }
    fields.update(overrides)
    return LabResult(**fields)


def full_recomputation(database_url: str) -> dict[tuple[object, ...], tuple[int, int]]:
    """P/T per aggregate key recomputed from every stored result, to compare with `aggregates`."""
    from collections import defaultdict

    from services.worker.dedup import evaluate_person
    from services.worker.store import SELECT_PERSON_RESULTS, _version

    with psycopg.connect(libpq_url(database_url)) as conn:
        people = [r[0] for r in conn.execute("SELECT DISTINCT patient_pseudonym FROM results").fetchall()]
        rows = conn.execute(SELECT_PERSON_RESULTS, (people,)).fetchall()
    by_person: dict[str, list[Any]] = defaultdict(list)
    for row in rows:
        v = _version(row)
        by_person[v.patient_pseudonym].append(v)
    totals: dict[tuple[object, ...], list[int]] = defaultdict(lambda: [0, 0])
    for versions in by_person.values():
        for k, c in evaluate_person(versions).contributions.items():
            key = (k.day, k.department or "", k.age_class or "", k.sex.value, k.test_kind.value)
            totals[key][0] += c.p
            totals[key][1] += c.t
    return {k: (p, t) for k, (p, t) in totals.items() if p or t}


def stored_aggregates(database_url: str) -> dict[tuple[object, ...], tuple[int, int]]:
    with psycopg.connect(libpq_url(database_url)) as conn:
        rows = conn.execute(
            "SELECT day, department, age_class, sex, test_kind, p, t FROM aggregates WHERE p <> 0 OR t <> 0"
        ).fetchall()
    return {tuple(r[:5]): (int(r[5]), int(r[6])) for r in rows}


def random_result_stream(n: int, persons: int, seed: int) -> list[LabResult]:
    """`n` result versions over `persons` people and 120 days: re-sends, corrections, cancellations."""
    import random

    rng = random.Random(seed)
    pseudonyms = [f"{rng.getrandbits(256):064x}" for _ in range(persons)]
    departments = ["75", "13", "2A", "971", None]
    start = datetime(2021, 11, 1, 8, tzinfo=UTC)
    stream: list[LabResult] = []
    while len(stream) < n:
        roll = rng.random()
        if stream and roll < 0.08:  # a re-send of an earlier version
            stream.append(rng.choice(stream))
            continue
        if stream and roll < 0.13:  # a correction or a cancellation of an earlier result
            base = rng.choice(stream)
            status = ResultStatus.CORRECTED if rng.random() < 0.7 else ResultStatus.CANCELLED
            outcome = Outcome.NEGATIVE if base.outcome is Outcome.POSITIVE else Outcome.POSITIVE
            stream.append(base.model_copy(update={
                "status": status, "outcome": outcome,
                "result_at": (base.result_at or base.collected_at) + timedelta(hours=rng.randrange(1, 48)),
            }))
            continue
        pseudonym = rng.choice(pseudonyms)
        collected = start + timedelta(days=rng.randrange(120), minutes=rng.randrange(600))
        antigen = rng.random() < 0.3
        stream.append(make_result(
            patient_pseudonym=pseudonym,
            sending_facility=f"LAB-{rng.randrange(40):02d}",
            collected_at=collected,
            loinc="94558-4" if antigen else "94500-6",
            test_kind=TestKind.ANTIGEN if antigen else TestKind.RT_PCR,
            outcome=Outcome.POSITIVE if rng.random() < 0.15 else Outcome.NEGATIVE,
            status=ResultStatus.PRELIMINARY if rng.random() < 0.02 else ResultStatus.FINAL,
            department=(dep := departments[zlib.crc32(pseudonym.encode()) % len(departments)]),
            region=None if dep is None else "11",
            age_class=rng.choice(["09", "29", "49", "69", "89", "90"]),
            sex=Sex.FEMALE if zlib.crc32(pseudonym.encode()) % 2 else Sex.MALE,
        ))
    return stream


def expected_winners(stream: list[LabResult]) -> dict[tuple[str, str], str]:
    """(result_id, pseudonym) -> version_key of the version that must count."""
    from services.worker.versions import ResultVersion, winning_version

    versions: dict[tuple[str, str], list[ResultVersion]] = {}
    for r in stream:
        versions.setdefault((r.result_id, r.patient_pseudonym), []).append(ResultVersion.from_lab_result(r))
    return {key: winning_version(vs).version_key for key, vs in versions.items()}


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
