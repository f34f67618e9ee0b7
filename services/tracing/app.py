"""Tracing bootstrap: wires the consumer, the PostgreSQL stores, the platform client and the loops."""

from __future__ import annotations

import signal
from types import FrameType

from confluent_kafka import Consumer, Producer

from services.core.config import Settings
from services.core.db.engine import libpq_url
from services.core.errors import OperatorError
from services.core.kafka import consumer_config, producer_config
from services.core.logs import configure_logging
from services.core.ops_http import OpsServer
from services.core.readiness import DATABASE, GROUP, KAFKA, Readiness
from services.tracing.deliver import PlatformClient, RetryPolicy
from services.tracing.service import CaseEventConsumer, DeliveryLoop, TracingService, new_owner_id
from services.tracing.store import DeliveryStore, TracingStore


def build_service(settings: Settings) -> TracingService:
    if settings.tracing_private_key is None:
        raise OperatorError("LABFLOW_TRACING_PRIVATE_KEY is not set: run `labflow stack up` or set it")
    platform = None
    if settings.tracing_url:
        if settings.tracing_signing_secret is None:
            raise OperatorError("LABFLOW_TRACING_URL is set but LABFLOW_TRACING_SIGNING_SECRET is not")
        platform = PlatformClient(
            settings.tracing_url, settings.tracing_timeout_s, settings.tracing_concurrency
        )
    secret = settings.tracing_signing_secret
    dsn = libpq_url(settings.database_url_for("tracing"))
    deliveries = DeliveryLoop(
        DeliveryStore(dsn, new_owner_id(), connections=settings.tracing_database_connections),
        platform,
        private_key=bytes.fromhex(settings.tracing_private_key.get_secret_value()),
        signing_secret=secret.get_secret_value().encode() if secret is not None else b"",
        policy=RetryPolicy(
            max_attempts=settings.tracing_max_attempts,
            give_up_after_s=settings.tracing_give_up_after_s,
            backoff_initial_s=settings.tracing_backoff_initial_s,
            backoff_max_s=settings.tracing_backoff_max_s,
        ),
        concurrency=settings.tracing_concurrency,
        # an attempt lasts at most the timeout; the margin covers recording its answer
        lease_s=settings.tracing_timeout_s + 5.0,
    )
    readiness = Readiness(KAFKA, DATABASE, GROUP)
    consumer = CaseEventConsumer(
        # a short session: after a crash, the restarted instance gets the partitions back sooner
        Consumer(consumer_config(settings, settings.tracing_group, **{"session.timeout.ms": 10_000},
                                 error_cb=readiness.kafka_error)),
        Producer(producer_config(settings)),  # mostly idle: no error_cb (see the worker's)
        topic=settings.topics.cases,
        rejected_topic=settings.topics.rejected,
        store=TracingStore(dsn),
        on_stored=deliveries.wake,
        readiness=readiness,
    )
    return TracingService(consumer, deliveries)


def run_tracing(settings: Settings) -> None:
    configure_logging("tracing", settings.log_level)
    service = build_service(settings)

    def stop(_signum: int, _frame: FrameType | None) -> None:
        service.stop()

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    ops = OpsServer(settings.ops_host, settings.tracing_ops_port, ready=service.ready).start()
    try:
        service.run()
    finally:
        ops.stop()
