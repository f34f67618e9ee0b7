"""Test storage: where the results of a lab in test mode go, and nowhere else (SPEC §8.1).

The gateway marks a test-mode lab's results (`LabResult.lab_mode == test`); the worker's routing step
(`services.worker.pipeline.ResultSink`) hands those to this adapter instead of the result store. So they
never reach `results`, `persons`, `cases`, `aggregates`, `lab_daily`, `lab_delays` or the outbox: they
are never counted, exported (open data reads `aggregates`) nor handed to tracing (which reads the
outbox's `cases.v1`), and person deduplication never mixes a test patient with a real one.

One row per reception of a result (key: result id, pseudonym, gateway reception time), so a message
re-sent by the lab is a second row, which the conformance report needs to see; the record is kept as
the canonical JSON without its sealed identity (nothing here is ever handed to tracing, so the identity
has no use). Kafka re-delivering the same record (a retried batch) inserts nothing twice.

The write is its own transaction, committed before the batch's offsets (written with the production
results in the store's transaction): a crash in between re-reads the batch and re-inserts nothing, so a
test result is neither lost nor doubled without joining the result store's transaction (whose code it
leaves alone).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from services.core.domain.model import LabResult

INSERT_TEST_RESULT = (
    "INSERT INTO test_results "
    "(result_id, patient_pseudonym, received_at, lab_id, message_control_id, record) "
    "VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING"
)


def _row(r: LabResult) -> tuple[Any, ...]:
    record = r.model_dump(mode="json", exclude={"sealed_identity"})
    return (r.result_id, r.patient_pseudonym, r.received_at, r.sending_facility, r.message_control_id,
            Jsonb(record))


class TestResultStore:
    """The `test_results` table (the worker's role may only insert into it)."""

    __test__ = False  # not a pytest class

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self._conn: psycopg.Connection[tuple[Any, ...]] | None = None

    @property
    def conn(self) -> psycopg.Connection[tuple[Any, ...]]:
        if self._conn is None or self._conn.closed:
            self._conn = psycopg.connect(self.dsn, autocommit=False)
        return self._conn

    def write(self, results: Sequence[LabResult]) -> int:
        """Store test results (idempotent); the number of rows newly stored."""
        return self._insert(results, keep=True)

    def trial(self, results: Sequence[LabResult]) -> None:
        """The same write, rolled back: raises what `write` would raise."""
        self._insert(results, keep=False)

    def _insert(self, results: Sequence[LabResult], *, keep: bool) -> int:
        if not results:
            return 0
        try:
            conn = self.conn
            with conn.transaction() as tx, conn.cursor() as cur:
                cur.executemany(INSERT_TEST_RESULT, [_row(r) for r in results])
                if not keep:
                    raise psycopg.Rollback(tx)
                return max(cur.rowcount, 0)
        except psycopg.OperationalError:  # the session is gone: the next call reconnects
            self.close()
            self._conn = None
            raise
        return 0

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
