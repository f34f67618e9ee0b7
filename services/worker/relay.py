"""Outbox relay: publishes the case events the worker wrote, in order, then marks them sent.

A row is marked sent only after Kafka confirmed it, in the same transaction that selected it: a
crash re-sends the unsent rows (consumers dedupe on `event_id`), never skips one. One relay at a
time holds the advisory lock, so events leave in the order they were written.
"""

from __future__ import annotations

import json
import threading

import psycopg
from confluent_kafka import KafkaError, KafkaException, Message, Producer

from services.core.consume import backoff_s, describe
from services.core.logs import get_logger

log = get_logger(__name__)
RELAY_LOCK = 0x4C4142_0001  # pg advisory lock id of the outbox relay


class OutboxRelay:
    def __init__(self, dsn: str, producer: Producer, batch_size: int = 1000) -> None:
        self.dsn = dsn
        self.producer = producer
        self.batch_size = batch_size
        self.stopping = threading.Event()
        self._conn: psycopg.Connection[tuple[object, ...]] | None = None

    def _connection(self) -> psycopg.Connection[tuple[object, ...]]:
        if self._conn is None or self._conn.closed:
            self._conn = psycopg.connect(self.dsn)
        return self._conn

    def publish_pending(self) -> int:
        """Publish one batch of unsent events; returns how many were published."""
        conn = self._connection()
        with conn.transaction():
            locked = conn.execute("SELECT pg_try_advisory_xact_lock(%s)", (RELAY_LOCK,)).fetchone()
            if not locked or not locked[0]:
                return 0
            rows = conn.execute(
                "SELECT id, topic, key, payload FROM outbox WHERE sent_at IS NULL ORDER BY id LIMIT %s",
                (self.batch_size,),
            ).fetchall()
            if not rows:
                return 0
            failures: list[str] = []

            def on_delivery(err: KafkaError | None, _msg: Message) -> None:
                if err is not None:
                    failures.append(err.str())

            for _id, topic, key, payload in rows:
                self.producer.produce(
                    str(topic), json.dumps(payload).encode(), str(key).encode(), on_delivery=on_delivery
                )
            remaining = self.producer.flush(30)
            if remaining or failures:
                raise RuntimeError(f"outbox publication not confirmed: {failures[:3] or remaining}")
            conn.execute("UPDATE outbox SET sent_at = now() WHERE id = ANY(%s)", ([r[0] for r in rows],))
        return len(rows)

    def run(self, idle_sleep_s: float = 0.1) -> None:
        try:
            self._run(idle_sleep_s)
        finally:
            self.close()

    def _run(self, idle_sleep_s: float) -> None:
        failures = 0
        while not self.stopping.is_set():
            try:
                published = self.publish_pending()
            except (psycopg.Error, KafkaException, BufferError, RuntimeError) as exc:
                failures += 1
                wait_s = backoff_s(failures)
                log.warning("outbox relay retrying", error=describe(exc), attempt=failures,
                            wait_s=round(wait_s, 2))
                if self._conn is not None:
                    self._conn.close()
                    self._conn = None
                self.stopping.wait(wait_s)
                continue
            failures = 0
            if published == 0:
                self.stopping.wait(idle_sleep_s)

    def stop(self) -> None:
        self.stopping.set()

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
        self.producer.flush(5)
