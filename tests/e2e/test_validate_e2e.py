"""Validation that stores nothing (SPEC §8.1), as a lab sees it: `labflow gateway --http` and the
worker as real processes, `POST /v1/validate` answering exactly what `POST /v1/results/…` then
answers for a good and a bad body of each format, with nothing on Kafka and nothing in PostgreSQL.

Kafka is counted by the end offsets of the raw, results and rejected topics (intake answers only
once Kafka confirmed, so a record validation had written would be counted before its answer), and
PostgreSQL by the rows of the tables intake leads to (the submissions the gateway writes, and what
the worker stores); the same bodies sent to intake afterwards move both, so the counts can see it.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from confluent_kafka import Consumer, TopicPartition

from labflow_testkit.processes import wait_until
from services.core.config import Settings
from services.core.db.engine import libpq_url
from tests.e2e.conftest import HttpStack

pytestmark = pytest.mark.e2e
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
LAB, FINESS = "LAB-VALIDATE", "2A0000018"
TABLES = ("submissions", "results", "persons", "aggregates", "lab_daily")


def hl7(name: str) -> bytes:
    return (FIXTURES / "hl7" / name).read_bytes().replace(b"LABO-AJACCIO^123456789^FINESS", LAB.encode())


BODIES: dict[str, tuple[str, bytes]] = {
    "hl7 good": ("hl7", hl7("ok_v251.hl7")),
    "hl7 bad": ("hl7", hl7("ae_bad_ins_key.hl7")),
    "hl7 batch": (
        "hl7", b"BHS|^~\\&\r" + hl7("ok_three_results.hl7") + hl7("ar_version_22.hl7") + b"BTS|2\r"
    ),
    "hl7 as another lab": ("hl7", (FIXTURES / "hl7" / "ok_v25.hl7").read_bytes()),
    "fhir good": ("fhir", (FIXTURES / "fhir" / "ok_two_observations.json").read_bytes()),
    "fhir bad": ("fhir", (FIXTURES / "fhir" / "ae_invalid_content.json").read_bytes()),
    "fhir not json": ("fhir", b'{"resourceType": '),
    "csv good and bad rows": ("csv", (FIXTURES / "csv" / "ok_and_invalid_rows.csv").read_bytes()),
    "csv no rows": ("csv", b"specimen_id,collected_at,loinc,result\n"),
}


@pytest.fixture(scope="module")
def http_stack_labs() -> dict[str, str | None]:
    return {LAB: FINESS}


def kafka_records(settings: Settings) -> dict[str, int]:
    consumer = Consumer(
        {"bootstrap.servers": settings.require_kafka(), "group.id": f"probe-{uuid.uuid4().hex}"}
    )
    try:
        topics = settings.topics
        return {
            topic: sum(
                consumer.get_watermark_offsets(TopicPartition(topic, p), 10)[1]
                for p in range(settings.topic_partitions)
            )
            for topic in (topics.raw, topics.results, topics.rejected)
        }
    finally:
        consumer.close()


def database_rows(settings: Settings) -> dict[str, int]:
    counts: dict[str, int] = {}
    with psycopg.connect(libpq_url(settings.require_database())) as conn:
        for table in TABLES:
            row = conn.execute(f"SELECT count(*) FROM {table}").fetchone()
            assert row is not None, f"no count(*) row for {table}"
            counts[table] = int(row[0])
    return counts


def answer(response: httpx.Response) -> tuple[int, list[tuple[str, str, list[tuple[Any, ...]]]]]:
    """The status and, per item, its ACK code and reasons (location, HL7 table 0357 code, text)."""
    body = response.json()
    if "items" not in body:  # intake answers an unreadable body with its error alone
        return response.status_code, []
    items = []
    for item in body["items"]:
        reasons = item.get("reasons", item.get("issues"))
        located = [(r["location"], r["code"], r["text"]) for r in reasons]
        items.append((item["ref"], item["ack_code"], located))
    return response.status_code, items


def test_validate_answers_what_intake_answers_and_stores_nothing(http_stack: HttpStack) -> None:
    auth = {"Authorization": f"Bearer {http_stack.tokens[LAB]}"}
    kafka_before, rows_before = kafka_records(http_stack.settings), database_rows(http_stack.settings)

    validated = {
        name: http_stack.http.post(f"/v1/validate?format={kind}", content=body, headers=auth)
        for name, (kind, body) in BODIES.items()
    }
    assert kafka_records(http_stack.settings) == kafka_before
    assert database_rows(http_stack.settings) == rows_before

    sent = {
        name: http_stack.http.post(f"/v1/results/{kind}", content=body, headers=auth)
        for name, (kind, body) in BODIES.items()
    }
    for name in BODIES:
        status, items = answer(validated[name])
        intake_status, intake_items = answer(sent[name])
        assert status == intake_status, (name, validated[name].text, sent[name].text)
        if intake_items:  # CSV rows' control ids come from the submission id: compare the rest
            assert items == intake_items, name
        else:
            assert validated[name].json()["detail"] == sent[name].json()["detail"], name

    statuses = {name: r.status_code for name, r in validated.items()}
    assert statuses == {
        "hl7 good": 200, "hl7 bad": 200, "hl7 batch": 200, "hl7 as another lab": 403, "fhir good": 200,
        "fhir bad": 200, "fhir not json": 400, "csv good and bad rows": 200, "csv no rows": 422,
    }
    codes = {name: [i["ack_code"] for i in r.json()["items"]] for name, r in validated.items()}
    assert codes["hl7 good"] == ["AA"] and codes["hl7 bad"] == ["AE"] and codes["hl7 batch"] == ["AA", "AR"]
    assert codes["fhir good"] == ["AA"] and codes["fhir bad"] == ["AE"]
    assert codes["csv good and bad rows"] == ["AA", "AA", "AE"]
    good = validated["hl7 good"].json()["items"][0]
    assert good["counted"] == [{
        "test_kind": "rt-pcr", "outcome": "positive", "status": "F", "collection_day": "2024-01-15",
        "department": "2A", "age_class": "49",
    }]
    assert "DUPONT" not in validated["csv good and bad rows"].text

    # the counts see what intake stores: validation stored nothing
    kafka_after = kafka_records(http_stack.settings)
    assert all(kafka_after[t] > kafka_before[t] for t in kafka_before), kafka_after
    wait_until(
        lambda: database_rows(http_stack.settings)["results"] > rows_before["results"],
        timeout_s=60,
        what="intake's results in PostgreSQL",
    )


def test_validate_authenticates_like_intake(http_stack: HttpStack) -> None:
    body = hl7("ok_v251.hl7")
    assert http_stack.http.post("/v1/validate", content=body).status_code == 401
    wrong = http_stack.http.post("/v1/validate", content=body,
                                 headers={"Authorization": f"Bearer {LAB}.nope"})
    assert wrong.status_code == 401
    auth = {"Authorization": f"Bearer {http_stack.tokens[LAB]}"}
    detected = http_stack.http.post("/v1/validate", content=body, headers=auth)
    assert detected.status_code == 200 and detected.json()["format"] == "hl7"
    schema = http_stack.http.get("/openapi.json").json()
    assert "/v1/validate" in schema["paths"]


def test_the_cli_says_what_intake_says(http_stack: HttpStack, tmp_path: Path) -> None:
    """`labflow validate` offline gives the same ACK codes and reasons as the running gateway."""
    from typer.testing import CliRunner

    from services.cli import app

    auth = {"Authorization": f"Bearer {http_stack.tokens[LAB]}"}
    files = []
    for name, (kind, body) in BODIES.items():
        path = tmp_path / f"{name.replace(' ', '_')}.{kind}"
        path.write_bytes(body)
        files.append(str(path))
    result = CliRunner().invoke(app, ["validate", *files, "--lab", LAB, "--finess", FINESS, "--json"])
    assert result.exit_code == 1, result.output
    reports = json.loads(result.output)
    for report, (name, (kind, body)) in zip(reports, BODIES.items(), strict=True):
        over_http = http_stack.http.post(f"/v1/validate?format={kind}", content=body, headers=auth).json()
        assert report["intake_status"] == over_http["intake_status"], name
        assert codes(report) == codes(over_http), name


def codes(report: dict[str, Any]) -> list[tuple[str, list[tuple[str, str]]]]:
    return [(i["ack_code"], [(f["location"], f["code"]) for f in i["issues"]]) for i in report["items"]]
