"""The worker's PostgreSQL session for a fenced consumer: one connection, the stored offsets, the guard.

Every consumer of the worker (results, lab traffic) keeps its positions in `consumer_offsets`, keyed
by its group id and topic, and advances them in the same transaction as its data, guarded by the
offset the batch started from (`Fenced` when another consumer moved the partition meanwhile).

The connection is re-opened after any connection error: the caller retries the batch, which was
rolled back with the lost session.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeVar

import psycopg

from services.core.consume import Fenced, PartitionProgress

Cursor = psycopg.Cursor[tuple[Any, ...]]
T = TypeVar("T")


class FencedStore:
    def __init__(self, dsn: str, group_id: str, topic: str) -> None:
        self.dsn = dsn
        self.group_id = group_id
        self.topic = topic
        self._conn: psycopg.Connection[tuple[Any, ...]] | None = None

    def prepare(self, conn: psycopg.Connection[tuple[Any, ...]]) -> None:
        """Per new session (temporary tables, …); nothing by default."""

    @property
    def conn(self) -> psycopg.Connection[tuple[Any, ...]]:
        if self._conn is None or self._conn.closed:
            conn = psycopg.connect(self.dsn, autocommit=False)
            try:
                self.prepare(conn)
            except BaseException:
                conn.close()
                raise
            self._conn = conn
        return self._conn

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()

    def lost(self) -> None:
        """After a connection error: the session is gone (or unusable); the next call reconnects."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def ping(self) -> None:
        try:
            conn = self.conn
            with conn.transaction():
                conn.execute("SELECT 1")
        except psycopg.OperationalError:
            self.lost()
            raise

    def stored_offsets(self, partitions: Iterable[int]) -> dict[int, int]:
        try:
            conn = self.conn
            with conn.transaction():
                rows = conn.execute(
                    "SELECT partition, next_offset FROM consumer_offsets "
                    "WHERE group_id = %s AND topic = %s AND partition = ANY(%s)",
                    (self.group_id, self.topic, list(partitions)),
                ).fetchall()
        except psycopg.OperationalError:
            self.lost()
            raise
        return {int(p): int(o) for p, o in rows}

    def advance_offsets(self, cur: Cursor, progress: Sequence[PartitionProgress]) -> None:
        for p in progress:
            cur.execute(
                "INSERT INTO consumer_offsets (group_id, topic, partition, next_offset) "
                "VALUES (%s, %s, %s, %s) "
                "ON CONFLICT (group_id, topic, partition) DO UPDATE "
                "SET next_offset = EXCLUDED.next_offset, updated_at = now() "
                "WHERE consumer_offsets.next_offset = %s "
                "RETURNING partition",
                (self.group_id, self.topic, p.partition, p.next_offset, p.start_offset),
            )
            if cur.fetchone() is None:
                raise Fenced(f"partition {p.partition} moved past offset {p.start_offset}")

    def write_with_offsets(self, write: Callable[[Cursor], T], progress: Sequence[PartitionProgress]) -> T:
        """`write` and the offsets of its batch in one transaction."""
        try:
            conn = self.conn
            with conn.transaction(), conn.cursor() as cur:
                self.advance_offsets(cur, progress)
                return write(cur)
        except psycopg.OperationalError:
            self.lost()
            raise

    def trial(self, write: Callable[[Cursor], object]) -> None:
        """`write` without offsets, rolled back: raises what it would raise in `write_with_offsets`."""
        try:
            conn = self.conn
            with conn.transaction() as tx, conn.cursor() as cur:
                write(cur)
                raise psycopg.Rollback(tx)
        except psycopg.OperationalError:
            self.lost()
            raise
