"""Nominative data past the retention limit is removed; pseudonymized data stays."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient
from confluent_kafka.admin._config import ConfigResource

from labflow_testkit.processes import wait_until
from labflow_testkit.results import make_result
from services.core.config import Settings
from services.core.db.engine import libpq_url
from services.core.kafka import producer_config
from services.core.retention import purge_nominative
from services.worker.app import build_relay, build_worker

pytestmark = pytest.mark.integration


def test_old_identities_are_purged_and_results_kept(fresh_settings: Settings) -> None:
    settings = fresh_settings
    old = make_result(sealed_identity="c2VhbGVk", received_at=datetime.now(UTC) - timedelta(days=100))
    recent = make_result(sealed_identity="c2VhbGVk")
    producer = Producer(producer_config(settings))
    for r in (old, recent):
        producer.produce(settings.topics.results, r.model_dump_json().encode(), r.patient_pseudonym.encode())
    assert producer.flush(30) == 0
    worker, relay = build_worker(settings), build_relay(settings)
    threads = [
        threading.Thread(target=worker.run, daemon=True),
        threading.Thread(target=relay.run, daemon=True),
    ]
    for t in threads:
        t.start()
    dsn = libpq_url(settings.require_database())
    try:
        with psycopg.connect(dsn, autocommit=True) as conn:
            wait_until(
                lambda: (
                    conn.execute("SELECT count(*) FROM outbox WHERE sent_at IS NOT NULL").fetchone() == (2,)
                ),
                what="both cases relayed",
            )
            conn.execute(
                "UPDATE outbox SET created_at = now() - interval '100 days' WHERE key = %s",
                (old.patient_pseudonym,),
            )
    finally:
        worker.stop()
        relay.stop()
        for t in threads:
            t.join(30)

    purge = libpq_url(settings.database_url_for("purge"))  # as `labflow purge`, with its own role
    assert purge_nominative(purge, 90) == {"person_identities": 1, "tracing_deliveries": 0, "outbox": 1}

    with psycopg.connect(dsn) as conn:
        identities = conn.execute("SELECT patient_pseudonym FROM person_identities").fetchall()
        sealed_in_outbox = conn.execute(
            "SELECT key FROM outbox WHERE payload->>'sealed_identity' IS NOT NULL"
        ).fetchall()
        results = conn.execute("SELECT count(*) FROM results").fetchone()
    assert identities == [(recent.patient_pseudonym,)]
    assert sealed_in_outbox == [(recent.patient_pseudonym,)]
    assert results == (2,)


def test_raw_and_rejected_topics_keep_payloads_only_for_the_retention_limit(fresh_settings: Settings) -> None:
    admin = AdminClient({"bootstrap.servers": fresh_settings.require_kafka()})
    topics = fresh_settings.topics
    resources = [
        ConfigResource(ConfigResource.Type.TOPIC, t) for t in (topics.raw, topics.rejected, topics.results)
    ]
    retention = {
        r.name: int(f.result(10)["retention.ms"].value) for r, f in admin.describe_configs(resources).items()
    }
    ninety_days = 90 * 24 * 3600 * 1000
    assert retention[topics.raw] == ninety_days
    assert retention[topics.rejected] == ninety_days
    assert retention[topics.results] != ninety_days
