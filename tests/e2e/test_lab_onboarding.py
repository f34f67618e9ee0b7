"""Lab onboarding through the real stack (SPEC §8.1): a lab in test mode gets the answers a production
lab gets, but its results land in test storage only (nothing counted, published or handed to tracing);
its conformance report passes for the simulator as a conforming LIS and names each failure of a
non-conforming one; promotion is refused until the report passes."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import psycopg
import pytest
from confluent_kafka import Consumer, TopicPartition
from nacl.public import PrivateKey
from psycopg.rows import TupleRow

from labflow_testkit.infrastructure import settings_env
from labflow_testkit.processes import wait_until
from services.core.config import REPO_ROOT, Settings
from services.core.db.engine import libpq_url
from services.core.domain.conformance import PLAN
from services.core.domain.model import Transport
from services.gateway.hl7.normalize import normalize_oru
from services.gateway.identity import IdentityProtector
from services.simulator.client import Ack
from services.simulator.conformance import NON_CONFORMING, plan_messages
from tests.support import mllp_send

pytestmark = pytest.mark.e2e
PRODUCTION_TABLES = ("results", "persons", "cases", "aggregates", "outbox", "lab_daily", "lab_delays",
                     "person_identities")


def labflow(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "services.cli", *args],
        env=settings_env(settings), cwd=REPO_ROOT, capture_output=True, text=True, timeout=120,
    )


def query(settings: Settings, sql: str, *params: object) -> list[TupleRow]:
    with psycopg.connect(libpq_url(settings.require_database())) as conn:
        return conn.execute(sql, params or None).fetchall()


def accepted_results(messages: list[tuple[str, bytes]]) -> int:
    """How many results the accepted messages carry (the gateway's own normalization, any keys)."""
    protector = IdentityProtector(b"k" * 32, bytes(PrivateKey.generate().public_key))
    now = datetime.now(UTC)
    normalized = (normalize_oru(raw, received_at=now, transport=Transport.MLLP, protector=protector)
                  for _, raw in messages)
    return sum(len(n.results) for n in normalized if n.ack_code == "AA")


def answers(acks: list[Ack], lab_id: str) -> list[tuple[str, str, list[str]]]:
    return [(a.code, a.control_id, [e.replace(lab_id, "LAB") for e in a.errors]) for a in acks]


def cases_published(settings: Settings) -> int:
    consumer = Consumer({"bootstrap.servers": settings.require_kafka(), "group.id": "onboarding-probe"})
    try:
        topic = settings.topics.cases
        partitions = consumer.list_topics(topic, timeout=30).topics[topic].partitions
        ends = (consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=30)[1] for p in partitions)
        return sum(ends)
    finally:
        consumer.close()


def test_a_lab_in_test_mode_is_answered_as_in_production_and_counted_nowhere(
    services: Settings, tmp_path: Path
) -> None:
    now = datetime.now(UTC)
    conforming = plan_messages("LAB-ONBOARD", now)
    sloppy = plan_messages("LAB-SLOPPY", now, NON_CONFORMING)

    onboard_acks = mllp_send(services.mllp_port, *(payload for _, payload in conforming))
    sloppy_acks = mllp_send(services.mllp_port, *(payload for _, payload in sloppy))
    assert [a.control_id for a in onboard_acks] == [cid for cid, _ in conforming]
    assert len(sloppy_acks) == len(sloppy)

    expected = {"LAB-ONBOARD": accepted_results(conforming), "LAB-SLOPPY": accepted_results(sloppy)}
    planned = sum(s.patients * s.times for scenario in PLAN for s in scenario.sends if s.ack == "AA")
    assert expected["LAB-ONBOARD"] == planned

    def stored() -> bool:
        return dict(query(services, "SELECT lab_id, count(*) FROM test_results GROUP BY lab_id")) == expected

    wait_until(stored, timeout_s=60, what="every accepted result of the test labs in test storage")
    # nothing counted, nothing for open data (it reads aggregates), nothing for tracing (outbox, cases.v1)
    for table in PRODUCTION_TABLES:
        assert query(services, f"SELECT count(*) FROM {table}") == [(0,)], table
    assert cases_published(services) == 0

    # the same messages from a production lab get the very same answers, and do count
    production = [(cid, payload.replace(b"|LAB-ONBOARD|", b"|LAB-E2E|"))
                  for cid, payload in plan_messages("LAB-ONBOARD", now)]
    production_acks = mllp_send(services.mllp_port, *(payload for _, payload in production))
    assert answers(production_acks, "LAB-E2E") == answers(onboard_acks, "LAB-ONBOARD")
    wait_until(lambda: query(services, "SELECT count(*) FROM outbox")[0][0] > 0, what="production cases")
    assert query(services, "SELECT DISTINCT sending_facility FROM results") == [("LAB-E2E",)]
    assert query(services, "SELECT count(*) FROM test_results WHERE lab_id = 'LAB-E2E'") == [(0,)]

    # the conforming LIS passes; the report is written as Markdown and JSON and stored
    passed = labflow(services, "conformance", "report", "LAB-ONBOARD", "--out", str(tmp_path))
    assert passed.returncode == 0, passed.stdout + passed.stderr
    assert f"LAB-ONBOARD: passed ({len(PLAN)} passed, 0 failed, 0 missing)" in passed.stdout
    (json_file,) = tmp_path.glob("conformance-LAB-ONBOARD-*.json")
    (markdown_file,) = tmp_path.glob("conformance-LAB-ONBOARD-*.md")
    assert json.loads(json_file.read_text())["passed"] is True
    assert "**PASSED**" in markdown_file.read_text()

    # the non-conforming one is told each failure, scenario by scenario
    failed = labflow(services, "conformance", "report", "LAB-SLOPPY", "--out", str(tmp_path))
    assert failed.returncode == 1, failed.stdout + failed.stderr
    report = json.loads(next(tmp_path.glob("conformance-LAB-SLOPPY-*.json")).read_text())
    statuses = {s["code"]: s["status"] for s in report["scenarios"]}
    assert {code for code, status in statuses.items() if status != "passed"} == set(NON_CONFORMING)
    assert statuses["LFC-07"] == statuses["LFC-27"] == "missing"
    for code in NON_CONFORMING:
        assert any(line.startswith(f"{code} ") for line in failed.stdout.splitlines()), code
    assert "LFC-21: answered AA, expected AE with error 102 at PID-3" in failed.stdout
    assert "LFC-05-2 was received before LFC-05-1" in failed.stdout

    # promotion: refused for the lab whose latest report failed, done for the one that passed
    refused = labflow(services, "labs", "promote", "LAB-SLOPPY")
    assert refused.returncode == 2 and "did not pass" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1
    promoted = labflow(services, "labs", "promote", "LAB-ONBOARD")
    assert promoted.returncode == 0, promoted.stderr
    modes: dict[str, str] = dict(query(services, "SELECT lab_id, mode FROM labs WHERE lab_id LIKE 'LAB-%'"))
    assert [modes[lab] for lab in ("LAB-ONBOARD", "LAB-SLOPPY", "LAB-E2E")] == [
        "production", "test", "production",
    ]
    stored_reports = query(services, "SELECT lab_id, passed FROM conformance_reports ORDER BY generated_at")
    assert stored_reports == [("LAB-ONBOARD", True), ("LAB-SLOPPY", False)]
