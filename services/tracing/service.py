"""The tracing handoff: a consumer loop that stores case events, a delivery loop that sends them.

- Consume (a thread, the shared framework `services.core.consume`): events are stored in
  PostgreSQL, then the Kafka offsets are committed. A crash in between re-reads events that the store
  then ignores (unique `event_id`). An event that cannot be read or stored is dead-lettered to the
  rejected topic (stage "tracing") with its reason; outages are retried with backoff, never an exit.
- Deliver (asyncio, aiohttp): each case is a task sending its events in order, one attempt at a time
  under a lease, at most `concurrency` requests at once; a case in backoff sleeps without holding a
  request slot, so a failing case never holds up the others. Retries follow the tenacity policy of
  `deliver.retrying`; every attempt and backoff is recorded, so a restart resumes where it was.
- The identity is unsealed in memory right before a request and never stored or logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

import psycopg
import uvloop
from confluent_kafka import Consumer, Producer
from nacl.exceptions import CryptoError
from prometheus_client import Counter, Gauge, Histogram
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    RetryError,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential_jitter,
)

from services.core.consume import (
    ConsumerLoop,
    DeadLetterStep,
    PartitionProgress,
    backoff_s,
    describe,
    json_decoder,
)
from services.core.domain.case_event import CaseEventMessage
from services.core.logs import get_logger
from services.core.readiness import Readiness
from services.core.sealing import open_sealed
from services.tracing.deliver import (
    PermanentFailure,
    PlatformClient,
    RetryableFailure,
    RetryPolicy,
    expect_delivered,
    retrying,
)
from services.tracing.handoff import build_request
from services.tracing.store import ClaimedEvent, DeliveryStore, HeadEvent, TracingStore

log = get_logger(__name__)

HANDOFF_DELAY = Histogram(
    "labflow_tracing_handoff_delay_seconds",
    "Gateway reception of the result that opened a case → the tracing platform's 2xx for it",
    buckets=(0.5, 1, 2, 5, 10, 30, 60, 300, 900, 3600, 6 * 3600, 24 * 3600),
)
DELIVERIES = Counter(
    "labflow_tracing_deliveries_total", "Delivery attempts by event type and outcome (delivered, retried, "
    "failed, duplicate = a 2xx for an event another instance had already delivered)", ["type", "outcome"],
)
QUEUE = Gauge("labflow_tracing_queue_events", "Case events not delivered, by status", ["status"])
CONSUMED = Counter("labflow_tracing_events_consumed_total", "Case events read from Kafka", ["result"])
DEAD_LETTERS = Counter("labflow_tracing_dead_letters_total",
                       "Case events sent to the rejected topic (unreadable or unstorable)", ["reason"])

MAX_CASES_IN_HAND = 1000  # case tasks at once (most of them sleep in backoff when the platform fails)


class CaseEventSink:
    """The handle step of the consumer: events stored idempotently (unique `event_id`)."""

    fenced = False

    def __init__(self, store: TracingStore, on_stored: Callable[[], None]) -> None:
        self.store = store
        self.on_stored = on_stored

    def write(self, items: Sequence[CaseEventMessage], progress: Sequence[PartitionProgress]) -> None:
        if not items:
            return
        new = self.store.store_events(items)
        CONSUMED.labels("stored").inc(new)
        CONSUMED.labels("duplicate").inc(len(items) - new)
        self.on_stored()

    def trial(self, items: Sequence[CaseEventMessage]) -> None:
        self.store.trial_events(items)

    def stored_offsets(self, partitions: Sequence[int]) -> None:
        return None  # Kafka's committed offsets

    def ping(self) -> None:
        self.store.ping()

    def close(self) -> None:
        self.store.close()


class CaseEventConsumer:
    """cases.v1 → PostgreSQL on the shared consumer framework; the Kafka offsets are committed only
    once the events are stored (or dead-lettered, when they cannot be read or stored)."""

    def __init__(
        self,
        consumer: Consumer,
        producer: Producer,
        *,
        topic: str,
        rejected_topic: str,
        store: TracingStore,
        on_stored: Callable[[], None],
        readiness: Readiness | None = None,
        batch_size: int = 500,
        batch_timeout_s: float = 0.5,
    ) -> None:
        self.loop: ConsumerLoop[CaseEventMessage] = ConsumerLoop(
            consumer,
            CaseEventSink(store, on_stored),
            DeadLetterStep(producer, rejected_topic, "tracing", counter=DEAD_LETTERS),
            topic=topic,
            decode=json_decoder(CaseEventMessage),
            batch_size=batch_size,
            batch_timeout_s=batch_timeout_s,
            readiness=readiness,
        )
        self.readiness = self.loop.readiness

    def ready(self) -> bool:
        return self.readiness.ready()

    def run(self) -> None:
        self.loop.run()

    def stop(self) -> None:
        self.loop.stop()


class DeliveryLoop:
    def __init__(
        self,
        store: DeliveryStore,
        platform: PlatformClient | None,
        *,
        private_key: bytes,
        signing_secret: bytes,
        policy: RetryPolicy,
        concurrency: int,
        lease_s: float,
        poll_s: float = 0.5,
    ) -> None:
        self.store = store
        self.platform = platform
        self.private_key = private_key
        self.signing_secret = signing_secret
        self.policy = policy
        self.lease_s = lease_s
        self.poll_s = poll_s
        self.healthy = threading.Event()  # the loop runs and its last database round trip succeeded
        self._slots = asyncio.Semaphore(concurrency)
        self._cases: dict[str, asyncio.Task[None]] = {}
        self._stop_requested = threading.Event()
        self._stopping = asyncio.Event()
        self._wake = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None

    # -- thread-safe controls -------------------------------------------------------------------
    def wake(self) -> None:
        self._call_soon(self._wake.set)

    def stop(self) -> None:
        self._stop_requested.set()
        self._call_soon(self._stopping.set)

    def _call_soon(self, callback: Callable[[], None]) -> None:
        if self._loop is not None:
            with contextlib.suppress(RuntimeError):  # the loop has already ended
                self._loop.call_soon_threadsafe(callback)

    # -- the loop -------------------------------------------------------------------------------
    async def run(self) -> None:
        self._loop = asyncio.get_running_loop()
        if self._stop_requested.is_set():
            return
        if self.platform is None:
            log.warning("LABFLOW_TRACING_URL is not set: no tracing platform, case events stay pending")
        failures = 0
        try:
            while not self._stopping.is_set():
                try:
                    counts = await self.store.undelivered_counts()
                    for status in ("pending", "failed"):
                        QUEUE.labels(status).set(counts.get(status, 0))
                    if self.platform is not None:
                        await self._start_due_cases()
                    self.healthy.set()
                    failures = 0
                except psycopg.Error as exc:
                    self.healthy.clear()
                    failures += 1
                    log.warning("database unavailable", error=describe(exc), attempt=failures)
                await self._pause(backoff_s(failures) if failures else self.poll_s)
        finally:
            self.healthy.clear()
            await self._shutdown()

    async def _pause(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self._wake.wait()
        self._wake.clear()

    async def _interruptible_sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self._stopping.wait()

    async def _shutdown(self) -> None:
        """In-flight requests finish (their answer is recorded); cases sleeping in backoff end at once."""
        if self._cases:
            _done, pending = await asyncio.wait(list(self._cases.values()), timeout=self.lease_s)
            for task in pending:
                task.cancel()
        if self.platform is not None:
            await self.platform.aclose()
        await self.store.close()

    async def _start_due_cases(self) -> None:
        room = MAX_CASES_IN_HAND - len(self._cases)
        if room <= 0:
            return
        for case_id, head in await self.store.due_cases(room, list(self._cases)):
            self._cases[case_id] = asyncio.create_task(self._run_case(case_id, head), name=f"case-{case_id}")

    async def _run_case(self, case_id: str, head: HeadEvent | None) -> None:
        """Deliver the case's events in order from `head`, until it has none due (or one failed)."""
        try:
            while head is not None and not self._stopping.is_set():
                head = await self._deliver(head)
        except psycopg.Error as exc:
            log.warning("delivery interrupted: database unavailable", case_id=case_id, error=str(exc))
        except Exception:
            log.exception("delivery task failed", case_id=case_id)
        finally:
            self._cases.pop(case_id, None)

    async def _deliver(self, head: HeadEvent) -> HeadEvent | None:
        """One event, with retries; once it is delivered, the case's next event if one is due."""
        age_s = (datetime.now(UTC) - head.queued_at).total_seconds()
        claimed: ClaimedEvent | None = None

        async def before_sleep(state: RetryCallState) -> None:
            error = state.outcome.exception() if state.outcome is not None else None
            reason = error.reason if isinstance(error, RetryableFailure) else repr(error)
            assert claimed is not None
            await self.store.record_retry(head.id, reason, state.upcoming_sleep)
            DELIVERIES.labels(claimed.event.type, "retried").inc()
            log.info("delivery will be retried", case_id=claimed.event.case_id,
                     event_id=claimed.event.event_id, attempt=claimed.attempts, reason=reason,
                     wait_s=round(state.upcoming_sleep, 2))

        try:
            async for attempt in retrying(self.policy, head.attempts, age_s, before_sleep,
                                          self._interruptible_sleep):
                with attempt:
                    if self._stopping.is_set():
                        return None
                    async with self._slots:
                        claimed = await self.store.claim(head.id, self.lease_s)
                        if claimed is None:  # delivered, failed or leased by another instance meanwhile
                            return None
                        return await self._attempt(claimed)
        except RetryError as exc:
            error = exc.last_attempt.exception()
            reason = error.reason if isinstance(error, RetryableFailure) else repr(error)
            await self._fail(head, claimed, f"gave up after {claimed.attempts if claimed else '?'} attempts: "
                                            f"{reason}")
        except PermanentFailure as exc:
            await self._fail(head, claimed, exc.reason)
        return None

    async def _attempt(self, claimed: ClaimedEvent) -> HeadEvent | None:
        assert self.platform is not None
        event = claimed.event
        identity = self._unseal(claimed) if event.type == "case.opened" else None
        request = build_request(event, identity, claimed.previous_delivered, self.signing_secret,
                                int(time.time()))
        expect_delivered(await self.platform.send(request))
        async for attempt in AsyncRetrying(  # losing this write would send the event again
            retry=retry_if_exception_type(psycopg.OperationalError),
            stop=stop_after_attempt(5), wait=wait_exponential_jitter(multiplier=0.2, max=2), reraise=True,
        ):
            with attempt:
                first, next_head = await self.store.mark_delivered(claimed)
        DELIVERIES.labels(event.type, "delivered" if first else "duplicate").inc()
        if first and event.type == "case.opened":
            HANDOFF_DELAY.observe((datetime.now(UTC) - event.first_received_at).total_seconds())
        log.info("case event delivered", case_id=event.case_id, event_id=event.event_id, type=event.type,
                 attempt=claimed.attempts)
        return next_head

    def _unseal(self, claimed: ClaimedEvent) -> dict[str, Any]:
        if claimed.sealed_identity is None:
            raise PermanentFailure("case.opened carries no sealed identity")
        try:
            return open_sealed(self.private_key, claimed.sealed_identity)
        except (CryptoError, ValueError) as exc:
            raise PermanentFailure(
                "the sealed identity does not open with LABFLOW_TRACING_PRIVATE_KEY"
            ) from exc

    async def _fail(self, head: HeadEvent, claimed: ClaimedEvent | None, reason: str) -> None:
        await self.store.mark_failed(head.id, reason)
        event_type = claimed.event.type if claimed else "unknown"
        DELIVERIES.labels(event_type, "failed").inc()
        log.warning("case event delivery failed; see `labflow tracing failed`",
                    case_id=claimed.event.case_id if claimed else None, type=event_type, reason=reason)


class TracingService:
    def __init__(self, consumer: CaseEventConsumer, deliveries: DeliveryLoop) -> None:
        self.consumer = consumer
        self.deliveries = deliveries
        self._consumer_error: BaseException | None = None

    def ready(self) -> bool:
        return self.consumer.ready() and self.deliveries.healthy.is_set()

    def run(self) -> None:
        """Blocks until `stop` or until either loop ends (then the other one is stopped too)."""
        # the copied context keeps the log fields bound at start-up (service name) in the thread
        thread = threading.Thread(target=contextvars.copy_context().run, args=(self._consume,),
                                  name="cases-consumer", daemon=True)
        thread.start()
        try:
            with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
                runner.run(self.deliveries.run())
        finally:
            self.consumer.stop()
            thread.join(30)
        if self._consumer_error is not None:
            raise RuntimeError("the case event consumer failed") from self._consumer_error

    def _consume(self) -> None:
        try:
            self.consumer.run()
        except BaseException as exc:  # handed to `run`, so the process exits with an error
            self._consumer_error = exc
        finally:
            self.deliveries.stop()

    def stop(self) -> None:
        self.consumer.stop()
        self.deliveries.stop()


def new_owner_id() -> str:
    """Identifies this process's leases in `tracing_deliveries`."""
    return uuid.uuid4().hex[:16]
