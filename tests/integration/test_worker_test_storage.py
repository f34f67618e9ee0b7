"""The worker's routing step (SPEC §8.1): a test-mode lab's results land in test storage only."""

from __future__ import annotations

from datetime import timedelta

import psycopg
import pytest
from psycopg.rows import TupleRow

from labflow_testkit.processes import wait_until
from labflow_testkit.results import make_result
from services.core.config import Settings
from services.core.db.engine import libpq_url
from services.core.domain.model import LabMode, ResultStatus
from tests.support import produce_results

pytestmark = pytest.mark.integration

COUNTED = ("results", "persons", "cases", "aggregates", "outbox", "lab_daily", "lab_delays",
           "person_identities")


def query(settings: Settings, sql: str) -> list[TupleRow]:
    with psycopg.connect(libpq_url(settings.require_database())) as conn:
        return conn.execute(sql).fetchall()


def counts(settings: Settings) -> dict[str, int]:
    return {table: int(query(settings, f"SELECT count(*) FROM {table}")[0][0]) for table in COUNTED}


def test_test_mode_results_go_to_test_storage_and_nothing_counted(worker: Settings) -> None:
    production = make_result(sending_facility="LAB-PROD", sealed_identity="c2VhbGVk")
    produce_results(worker, [production])
    wait_until(lambda: counts(worker)["outbox"] == 1, what="the production case in the outbox")
    before = counts(worker)

    # a positive of a test lab, for the same person as the production one and for a new person, its
    # correction, and the same record delivered twice (a Kafka redelivery: stored once)
    positive = make_result(sending_facility="LAB-TRY", lab_mode=LabMode.TEST, sealed_identity="c2VhbGVk")
    same_person = make_result(
        sending_facility="LAB-TRY", lab_mode=LabMode.TEST, patient_pseudonym=production.patient_pseudonym
    )
    correction = positive.model_copy(
        update={"status": ResultStatus.CORRECTED, "received_at": positive.received_at + timedelta(seconds=1)}
    )
    produce_results(worker, [positive, same_person, correction, positive])
    # a production result after them: once it is stored, the batch before it was handled
    produce_results(worker, [make_result(sending_facility="LAB-PROD")])
    wait_until(lambda: counts(worker)["results"] == before["results"] + 1, what="the later production result")

    stored = query(worker, "SELECT lab_id, message_control_id, record->>'status', record->>'lab_mode', "
                           "record ? 'sealed_identity' FROM test_results ORDER BY received_at")
    assert sorted(stored) == sorted([
        ("LAB-TRY", positive.message_control_id, "F", "test", False),
        ("LAB-TRY", same_person.message_control_id, "F", "test", False),
        ("LAB-TRY", positive.message_control_id, "C", "test", False),
    ])
    # only the two production results count: two persons, two cases handed on, P = T = 2
    assert query(worker, "SELECT sum(p), sum(t) FROM aggregates") == [(2, 2)]
    assert query(worker, "SELECT count(*) FROM outbox") == [(2,)]
    assert query(worker, "SELECT count(*) FROM cases") == [(2,)]
    assert counts(worker)["person_identities"] == before["person_identities"]
    assert counts(worker)["persons"] == before["persons"] + 1
    for table, column in (("results", "sending_facility"), ("lab_daily", "lab"), ("lab_delays", "lab")):
        assert query(worker, f"SELECT count(*) FROM {table} WHERE {column} = 'LAB-TRY'") == [(0,)]
