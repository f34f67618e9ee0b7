"""Person deduplication, aggregates and case events through the real broker and database."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from confluent_kafka import Consumer

from labflow_testkit.processes import wait_until
from labflow_testkit.results import full_recomputation, make_result, stored_aggregates
from services.core.config import Settings
from services.core.db.engine import libpq_url
from services.core.domain.case_event import CaseEventMessage
from services.core.domain.model import Outcome, ResultStatus, TestKind
from services.worker.app import build_relay, build_worker
from tests.support import produce_results

pytestmark = pytest.mark.integration
DAY0 = datetime(2022, 1, 3, 9, 0, tzinfo=UTC)


def query(settings: Settings, sql: str, *params: object) -> list[tuple[object, ...]]:
    with psycopg.connect(libpq_url(settings.require_database())) as conn:
        return conn.execute(sql, params).fetchall()


@pytest.fixture
def pipeline(fresh_settings: Settings) -> Iterator[Settings]:
    worker, relay = build_worker(fresh_settings), build_relay(fresh_settings)
    threads = [
        threading.Thread(target=worker.run, daemon=True),
        threading.Thread(target=relay.run, daemon=True),
    ]
    for t in threads:
        t.start()
    yield fresh_settings
    worker.stop()
    relay.stop()
    for t in threads:
        t.join(30)


def case_events(settings: Settings, expected: int) -> list[CaseEventMessage]:
    consumer = Consumer(
        {
            "bootstrap.servers": settings.require_kafka(),
            "group.id": "cases-probe",
            "auto.offset.reset": "earliest",
        }
    )
    consumer.subscribe([settings.topics.cases])
    events: list[CaseEventMessage] = []

    def collect() -> bool:
        events.extend(
            CaseEventMessage.model_validate_json(m.value() or b"")
            for m in consumer.consume(50, 0.5)
            if m.error() is None
        )
        return len(events) >= expected

    wait_until(collect, timeout_s=30, what=f"{expected} case events")
    consumer.close()
    return events


def test_people_are_counted_once_and_cases_reach_cases_topic(pipeline: Settings) -> None:
    settings = pipeline
    alice = make_result(collected_at=DAY0, department="75", age_class="29")
    alice_again = make_result(  # 30 days later: covered, counts in neither P nor T
        patient_pseudonym=alice.patient_pseudonym,
        collected_at=DAY0 + timedelta(days=30),
        department="75",
        age_class="29",
    )
    same_day_antigen = make_result(
        patient_pseudonym=alice.patient_pseudonym,
        collected_at=DAY0 + timedelta(hours=2),
        loinc="94558-4",
        test_kind=TestKind.ANTIGEN,
        department="75",
        age_class="29",
    )
    bob = make_result(collected_at=DAY0, outcome=Outcome.NEGATIVE, department="2A", age_class="89")
    carol = make_result(collected_at=DAY0, department="971", age_class="09")
    produce_results(settings, [alice, alice_again, same_day_antigen, bob, carol])
    wait_until(lambda: query(settings, "SELECT count(*) FROM results")[0][0] == 5, what="5 results")

    # a correction turns Carol's positive negative: her case is retracted, she stays in T only
    assert carol.result_at is not None, "make_result gave a result without a result time"
    carol_corrected = carol.model_copy(
        update={
            "status": ResultStatus.CORRECTED,
            "outcome": Outcome.NEGATIVE,
            "result_at": carol.result_at + timedelta(hours=3),
        }
    )
    produce_results(settings, [carol_corrected])
    wait_until(
        lambda: (
            query(settings, "SELECT status FROM cases WHERE patient_pseudonym = %s", carol.patient_pseudonym)
            == [("retracted",)]
        ),
        what="Carol's case retracted",
    )
    day = DAY0.date()
    aggregates = stored_aggregates(settings.require_database())
    assert aggregates == {
        (day, "75", "29", "F", "rt-pcr"): (1, 1),
        (day, "2A", "89", "F", "rt-pcr"): (0, 1),
        (day, "971", "09", "F", "rt-pcr"): (0, 1),
    }
    assert aggregates == full_recomputation(settings.require_database())

    events = case_events(settings, expected=3)
    by_person = {(e.patient_pseudonym, e.type) for e in events}
    assert by_person == {
        (alice.patient_pseudonym, "case.opened"),
        (carol.patient_pseudonym, "case.opened"),
        (carol.patient_pseudonym, "case.retracted"),
    }
    opened = next(
        e for e in events if e.type == "case.opened" and e.patient_pseudonym == alice.patient_pseudonym
    )
    assert opened.onset_day == day and opened.department == "75"
    assert query(settings, "SELECT count(*) FROM outbox WHERE sent_at IS NULL") == [(0,)]


def test_lab_reception_statistics(pipeline: Settings) -> None:
    settings = pipeline
    received = datetime.now(UTC)
    results = [
        make_result(
            sending_facility="LAB-STATS",
            collected_at=received - timedelta(hours=h),
            received_at=received,
            outcome=Outcome.POSITIVE if h == 5 else Outcome.NEGATIVE,
        )
        for h in (1, 5, 30)
    ]
    produce_results(settings, results + results[:1])  # the re-send is not a new reception
    wait_until(
        lambda: (
            query(settings, "SELECT results, positives FROM lab_daily WHERE lab = 'LAB-STATS'") == [(3, 1)]
        ),
        what="lab statistics",
    )
    assert query(settings, "SELECT delay_hours, n FROM lab_delays WHERE lab = 'LAB-STATS' ORDER BY 1") == [
        (1, 1),
        (5, 1),
        (30, 1),
    ]
