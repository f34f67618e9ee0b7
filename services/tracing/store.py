"""PostgreSQL adapter of the tracing handoff: one `tracing_deliveries` row per case event.

- The consumer inserts events (`ON CONFLICT (event_id) DO NOTHING`: a re-published event is stored,
  hence delivered, once) before it commits its Kafka offsets.
- A delivery claims one event with a lease (`lease_owner`, `lease_until`) by an atomic UPDATE, so two
  instances never send the same event at the same time; a crashed instance's lease expires and
  the event is sent again with the same idempotency key (its answer was lost).
- Only the head of a case — its oldest event not yet delivered — is picked: an update never
  overtakes its opening, and a failed event holds back the later events of its case.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool

from services.core.domain.case_event import CaseEventMessage

INSERT_EVENT = """
INSERT INTO tracing_deliveries (event_id, case_id, type, message, sealed_identity, first_received_at)
VALUES (%s, %s, %s, %s, %s, %s)
ON CONFLICT (event_id) DO NOTHING
"""

DUE_HEAD = """
SELECT d.id, d.attempts, d.queued_at FROM tracing_deliveries d
WHERE d.id = (SELECT h.id FROM tracing_deliveries h
              WHERE h.case_id = %(case_id)s AND h.status <> 'delivered' AND h.id <> %(after)s
              ORDER BY h.id LIMIT 1)
  AND d.status = 'pending' AND d.next_attempt_at <= now()
  AND (d.lease_until IS NULL OR d.lease_until < now())
"""
"""The case's head event if it is due and not leased; `after` is an event not to count."""

DELIVERED_THEN_HEAD = f"""
WITH delivered AS (
    UPDATE tracing_deliveries SET status = 'delivered', delivered_at = now(), lease_owner = NULL,
        lease_until = NULL
    WHERE id = %(after)s AND status <> 'delivered' RETURNING id
)
SELECT (SELECT count(*) FROM delivered), head.* FROM (SELECT) one
LEFT JOIN LATERAL ({DUE_HEAD}) head ON true
"""
"""Marks an event delivered and reads its case's next due event in the same round trip: the head
look-up runs on the snapshot from before the update, hence it leaves the delivered event out."""

CLAIM = """
UPDATE tracing_deliveries d
SET attempts = d.attempts + 1, last_attempt_at = now(), lease_owner = %(owner)s,
    lease_until = now() + %(lease_s)s * interval '1 second'
WHERE d.id = %(id)s AND d.status = 'pending' AND (d.lease_until IS NULL OR d.lease_until < now())
RETURNING d.id, d.message, d.sealed_identity, d.attempts,
    (SELECT p.type FROM tracing_deliveries p
     WHERE p.case_id = d.case_id AND p.id < d.id AND p.status = 'delivered' ORDER BY p.id DESC LIMIT 1)
"""

DUE_CASES = """
SELECT case_id, id, attempts, queued_at FROM (
    SELECT DISTINCT ON (case_id) case_id, id, attempts, queued_at, status, next_attempt_at, lease_until
    FROM tracing_deliveries WHERE status <> 'delivered' ORDER BY case_id, id
) head
WHERE status = 'pending' AND next_attempt_at <= now() AND (lease_until IS NULL OR lease_until < now())
  AND case_id <> ALL(%s)
ORDER BY next_attempt_at
LIMIT %s
"""

FAILED_EVENTS = """
SELECT f.case_id, f.event_id, f.type, f.attempts, f.last_error, f.last_attempt_at, f.first_received_at,
    (SELECT count(*) FROM tracing_deliveries w
     WHERE w.case_id = f.case_id AND w.id > f.id AND w.status = 'pending')
FROM tracing_deliveries f WHERE f.status = 'failed' ORDER BY f.last_attempt_at, f.id
"""

REDELIVER = """
UPDATE tracing_deliveries
SET status = 'pending', attempts = 0, next_attempt_at = now(), queued_at = now(),
    lease_owner = NULL, lease_until = NULL
WHERE status = 'failed' AND (%(case_id)s::text IS NULL OR case_id = %(case_id)s)
"""

UNDELIVERED_COUNTS = (
    "SELECT status, count(*) FROM tracing_deliveries WHERE status <> 'delivered' GROUP BY status"
)


@dataclass(frozen=True, slots=True)
class HeadEvent:
    """The oldest undelivered event of a case, when it is pending, due and not leased."""

    id: int
    attempts: int  # spent so far, by this run of the service or earlier ones
    queued_at: datetime  # the give-up clock starts here (reset by `redeliver`)


@dataclass(frozen=True, slots=True)
class ClaimedEvent:
    id: int
    event: CaseEventMessage  # without its sealed identity
    sealed_identity: str | None
    attempts: int  # including the attempt this claim is for
    previous_delivered: str | None  # type of the case's last delivered event


@dataclass(frozen=True, slots=True)
class FailedEvent:
    case_id: str
    event_id: str
    type: str
    attempts: int
    last_error: str | None
    failed_at: datetime | None
    first_received_at: datetime
    waiting: int  # later events of the case held back behind this one


def _event_row(event: CaseEventMessage) -> tuple[object, ...]:
    message = event.model_dump(mode="json", exclude={"sealed_identity"})
    return (event.event_id, event.case_id, event.type, Jsonb(message), event.sealed_identity,
            event.first_received_at)


def _head(row: Sequence[Any]) -> HeadEvent:
    return HeadEvent(int(row[0]), int(row[1]), row[2])


def _claimed(row: tuple[Any, ...] | None) -> ClaimedEvent | None:
    if row is None:
        return None
    pk, message, sealed, attempts, previous = row
    return ClaimedEvent(int(pk), CaseEventMessage.model_validate(message), sealed, int(attempts), previous)


class TracingStore:
    """Synchronous side: the Kafka consumer and the operator commands."""

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self._conn: psycopg.Connection[tuple[Any, ...]] | None = None

    def _connection(self) -> psycopg.Connection[tuple[Any, ...]]:
        if self._conn is None or self._conn.closed:
            self._conn = psycopg.connect(self.dsn)
        return self._conn

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()

    def store_events(self, events: Sequence[CaseEventMessage]) -> int:
        """Store events not seen before, in order; returns how many were new."""
        conn = self._connection()
        try:
            with conn.transaction(), conn.cursor() as cur:
                cur.executemany(INSERT_EVENT, [_event_row(e) for e in events])
                return max(cur.rowcount, 0)
        except psycopg.OperationalError:
            conn.close()
            raise

    def trial_events(self, events: Sequence[CaseEventMessage]) -> None:
        """`store_events`, rolled back: raises what it would raise (finding an unstorable event)."""
        conn = self._connection()
        try:
            with conn.transaction() as tx, conn.cursor() as cur:
                cur.executemany(INSERT_EVENT, [_event_row(e) for e in events])
                raise psycopg.Rollback(tx)
        except psycopg.OperationalError:
            conn.close()
            raise

    def ping(self) -> None:
        conn = self._connection()
        try:
            with conn.transaction():
                conn.execute("SELECT 1")
        except psycopg.OperationalError:
            conn.close()
            raise

    def failed_events(self) -> list[FailedEvent]:
        with self._connection().transaction() as tx:
            rows = tx.connection.execute(FAILED_EVENTS).fetchall()
        return [FailedEvent(*row) for row in rows]

    def redeliver(self, case_id: str | None) -> int:
        """Failed events of `case_id` (all cases when None) back to pending with a fresh retry budget."""
        with self._connection().transaction() as tx:
            return tx.connection.execute(REDELIVER, {"case_id": case_id}).rowcount


class DeliveryStore:
    """Asynchronous side: the delivery loop, on a small pool of connections (statements in autocommit).

    Each event costs a few round trips (head, claim, mark delivered), two of them commits. On one
    connection, the round trips of every case in flight queued behind each other, so a busy database
    slowed every delivery at once: in the 10-minute sustained profile (issue #16) cases were handed
    over minutes late (p50 92 s). With a pool, cases in flight overlap their round trips and PostgreSQL
    groups their commits. 1,000 events, the database behind a proxy adding 5 ms to each answer: 32
    delivered per second on one connection, 111 on 4, 166 on 8 (the default,
    LABFLOW_TRACING_DATABASE_CONNECTIONS).
    """

    def __init__(self, dsn: str, owner: str, connections: int = 8, connect_timeout_s: float = 5.0) -> None:
        self.owner = owner
        # timeout: how long a statement waits for a connection; with PostgreSQL down it then fails (the
        # loop turns unready and backs off), while the pool keeps trying to reconnect in the background
        self._pool: AsyncConnectionPool[psycopg.AsyncConnection[tuple[Any, ...]]] = AsyncConnectionPool(
            dsn, min_size=1, max_size=connections, open=False, timeout=connect_timeout_s,
            kwargs={"autocommit": True}, name="tracing-deliveries",
        )
        self._opened = False

    async def _fetch(self, sql: str, params: Sequence[object] | dict[str, object]) -> list[tuple[Any, ...]]:
        """The statement's rows ([] when it returns none)."""
        if not self._opened:
            await self._pool.open(wait=False)
            self._opened = True
        async with self._pool.connection() as conn:
            cur = await conn.execute(sql, params)
            return await cur.fetchall() if cur.description is not None else []

    async def close(self) -> None:
        await self._pool.close()

    async def due_cases(self, limit: int, busy: Sequence[str]) -> list[tuple[str, HeadEvent]]:
        """Cases whose head event may be sent now, with that event; `busy` ones (already in hand
        here) excepted."""
        return [(str(row[0]), _head(row[1:])) for row in await self._fetch(DUE_CASES, (list(busy), limit))]

    async def claim(self, event_pk: int, lease_s: float) -> ClaimedEvent | None:
        """Lease the event for one attempt; None when it is delivered, failed or leased elsewhere."""
        rows = await self._fetch(CLAIM, {"id": event_pk, "owner": self.owner, "lease_s": lease_s})
        return _claimed(rows[0] if rows else None)

    async def record_retry(self, event_pk: int, error: str, delay_s: float) -> None:
        await self._fetch(
            "UPDATE tracing_deliveries SET last_error = %s, "
            "next_attempt_at = now() + %s * interval '1 second', lease_owner = NULL, lease_until = NULL "
            "WHERE id = %s AND status = 'pending' AND lease_owner = %s",
            (error, delay_s, event_pk, self.owner),
        )

    async def mark_failed(self, event_pk: int, error: str) -> None:
        await self._fetch(
            "UPDATE tracing_deliveries SET status = 'failed', last_error = %s, lease_owner = NULL, "
            "lease_until = NULL WHERE id = %s AND status = 'pending' AND lease_owner = %s",
            (error, event_pk, self.owner),
        )

    async def mark_delivered(self, event: ClaimedEvent) -> tuple[bool, HeadEvent | None]:
        """Unconditional on the lease: the platform answered 2xx, that is the truth. Whether this call
        marked it (False: an instance whose lease this one took over already had), and the case's next
        event if it is due now."""
        rows = await self._fetch(DELIVERED_THEN_HEAD, {"after": event.id, "case_id": event.event.case_id})
        first, *head = rows[0]
        return bool(first), _head(head) if head[0] is not None else None

    async def undelivered_counts(self) -> dict[str, int]:
        return {str(status): int(n) for status, n in await self._fetch(UNDELIVERED_COUNTS, ())}
