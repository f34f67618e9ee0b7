"""Readiness: what a service needs to do its work, and whether each need is met right now.

`/readyz` answers 503 while any condition fails and 200 again by itself once every one is met:
readiness is measured, never latched. Conditions are set by the code that talks to the dependency:

- PostgreSQL: the last round trip (a write, or the periodic ping of an idle service) failed.
- Kafka: librdkafka's `error_cb` reports `_ALL_BROKERS_DOWN` (immediate, no traffic needed), and a
  cheap metadata request every few seconds confirms that a broker answers. The error callback alone
  is not enough: librdkafka never reports that brokers came back, and a broker that accepts TCP but
  does not answer (stopped, partitioned) produces no error at all; the metadata request catches both.
  `_TRANSPORT` is not used: it reports one broker's connection, which a multi-broker cluster survives.
- The consumer group: partitions assigned; cleared on revoke and on loss.
- Dead letters: Kafka did not confirm the last ones (the batch waits); cleared by the next commit.
"""

from __future__ import annotations

import threading

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient

from services.core.logs import get_logger

log = get_logger(__name__)

KAFKA = "kafka"
DATABASE = "database"
GROUP = "partitions"
DEAD_LETTERS = "dead letters"  # the last dead letters were not confirmed; cleared by the next commit
HINTS = {
    KAFKA: "check LABFLOW_KAFKA_BOOTSTRAP; `labflow stack up` starts the local Kafka; retrying meanwhile",
    DATABASE: "check LABFLOW_DATABASE_URL; `labflow stack up` starts the local PostgreSQL; retrying "
              "meanwhile",
}


class Readiness:
    """Named conditions, each met or failing with a reason; ready when none fails. Thread-safe."""

    def __init__(self, *conditions: str) -> None:
        self._lock = threading.Lock()
        self._failing: dict[str, str] = {c: "not checked yet" for c in conditions}

    def ok(self, condition: str) -> None:
        with self._lock:
            was = self._failing.pop(condition, None)
        if was is not None and was != "not checked yet":
            log.info("dependency back", condition=condition)

    def fail(self, condition: str, reason: str) -> None:
        with self._lock:
            was = self._failing.get(condition)
            self._failing[condition] = reason
        if was is None or was == "not checked yet":  # once per outage, with what to check
            log.warning("dependency unavailable", condition=condition, reason=reason,
                        hint=HINTS.get(condition, ""))

    def ready(self) -> bool:
        return not self._failing

    def reason(self) -> str | None:
        with self._lock:
            return "; ".join(f"{c}: {r}" for c, r in sorted(self._failing.items())) or None

    def kafka_error(self, error: KafkaError) -> None:
        """librdkafka `error_cb` (called from the client's poll/consume)."""
        if error.code() == KafkaError._ALL_BROKERS_DOWN:
            self.fail(KAFKA, error.str())


class BrokerWatch:
    """For a service with no consume loop of its own (the gateway): a metadata request every
    `interval_s` on one long-lived admin client (built with `error_cb=readiness.kafka_error`), in a
    daemon thread."""

    def __init__(self, admin: AdminClient, readiness: Readiness, interval_s: float = 5.0,
                 timeout_s: float = 2.0) -> None:
        self.readiness = readiness
        self.interval_s = interval_s
        self.timeout_s = timeout_s
        self._admin = admin
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="kafka-watch", daemon=True)

    def start(self) -> BrokerWatch:
        self._thread.start()
        return self

    def check(self) -> None:
        try:
            self._admin.list_topics(timeout=self.timeout_s)
        except KafkaException as exc:
            error = exc.args[0] if exc.args else None
            self.readiness.fail(KAFKA, error.str() if isinstance(error, KafkaError) else str(exc))
        else:
            self.readiness.ok(KAFKA)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.check()
            self._stop.wait(self.interval_s)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(self.timeout_s + 1)
