"""Readiness: what a service needs to do its work, and whether each need is met right now.

`/readyz` answers 503 while any condition fails and 200 again by itself once every one is met:
readiness is measured, never latched. Conditions are set by the code that talks to the dependency:

- PostgreSQL: the last round trip (a write, or the periodic ping of an idle service) failed.
- Kafka: librdkafka's `error_cb` reports `_ALL_BROKERS_DOWN` (immediate, no traffic needed), and
  the consumer's metadata request every few seconds, even when idle, confirms that a broker answers
  (librdkafka never reports that brokers came back, and a stopped broker that keeps its TCP
  connections open produces no error at all). `_TRANSPORT` is not used: it reports one broker's
  connection, which a multi-broker cluster survives. (The gateway, which has no consume loop, follows
  its publisher instead: `services/gateway/publish.py`.)
- The consumer group: partitions assigned; cleared on revoke and on loss.
- Dead letters: Kafka did not confirm the last ones (the batch waits); cleared by the next commit.
- Progress: one step of the consume loop has been running for more than `STALLED_AFTER_S`. A hung
  dependency (a stopped PostgreSQL, a partitioned host) raises no error at all: the call just never
  returns, and only its duration tells.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from confluent_kafka import KafkaError

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


STALLED_AFTER_S = 10.0  # a batch write takes well under a second; ten means nothing answers


class Readiness:
    """Named conditions, each met or failing with a reason; ready when none fails. Thread-safe."""

    def __init__(self, *conditions: str) -> None:
        self._lock = threading.Lock()
        self._failing: dict[str, str] = {c: "not checked yet" for c in conditions}
        self._busy_since: float | None = None
        self.stalled_after_s = STALLED_AFTER_S

    @contextmanager
    def step(self) -> Iterator[None]:
        """Around one step of work that calls dependencies: not ready while it lasts too long."""
        self._busy_since = time.monotonic()
        try:
            yield
        finally:
            self._busy_since = None

    def _stalled_s(self) -> float | None:
        since = self._busy_since
        if since is None:
            return None
        elapsed = time.monotonic() - since
        return elapsed if elapsed > self.stalled_after_s else None

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

    def ready(self, ignoring: frozenset[str] = frozenset()) -> bool:
        """No condition fails (but those `ignoring`), and no step has stalled."""
        with self._lock:
            failing = self._failing.keys() - ignoring if ignoring else self._failing
            return not failing and self._stalled_s() is None

    def reason(self) -> str | None:
        with self._lock:
            reasons = [f"{c}: {r}" for c, r in sorted(self._failing.items())]
        stalled = self._stalled_s()
        if stalled is not None:
            reasons.append(f"progress: a step has waited {stalled:.0f} s for a dependency that does not "
                           "answer")
        return "; ".join(reasons) or None

    def kafka_error(self, error: KafkaError) -> None:
        """librdkafka `error_cb` (called from the client's poll/consume)."""
        if error.code() == KafkaError._ALL_BROKERS_DOWN:
            self.fail(KAFKA, error.str())
