"""The retention limit of nominative data (SPEC §8): `labflow purge`, to run daily.

Sealed identities are the only nominative data in PostgreSQL: the latest one per person, the copy
held by each tracing delivery, and the copy inside `case.opened` outbox rows. Past the limit they
are removed; pseudonymized results and aggregates stay. Kafka's raw and rejected topics, which hold
payloads as received, get the same limit as their `retention.ms` (`labflow topics create`).
"""

from __future__ import annotations

import psycopg

PURGES = {
    "person_identities": (
        "DELETE FROM person_identities WHERE received_at < now() - make_interval(days => %s)"
    ),
    "tracing_deliveries": (
        "UPDATE tracing_deliveries SET sealed_identity = NULL "
        "WHERE sealed_identity IS NOT NULL AND status <> 'pending' "
        "AND queued_at < now() - make_interval(days => %s)"
    ),
    "outbox": (
        "UPDATE outbox SET payload = payload - 'sealed_identity' "
        "WHERE payload ? 'sealed_identity' AND sent_at IS NOT NULL "
        "AND created_at < now() - make_interval(days => %s)"
    ),
}


def purge_nominative(dsn: str, retention_days: int) -> dict[str, int]:
    """Remove identities older than the limit; returns rows affected per table, in one transaction."""
    with psycopg.connect(dsn) as conn, conn.transaction():
        return {table: conn.execute(sql, (retention_days,)).rowcount for table, sql in PURGES.items()}
