"""A lab's view of the HTTP intake: `labflow gateway --http` and the worker as real processes,
HL7 / FHIR / CSV posted with a bearer token, the JSON per item, the rows in PostgreSQL, the
records on Kafka, and the lab registry refusing unknown and disabled labs (HTTP and MLLP)."""

from __future__ import annotations

import asyncio
import random
import re
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from confluent_kafka import Consumer

from labflow_testkit.processes import free_port, wait_until
from services.core.config import Settings
from services.core.db.engine import libpq_url, make_engine
from services.core.domain.rejection import Rejection
from services.core.kafka import consumer_config, producer_config
from services.gateway.bootstrap import identity_protector
from services.gateway.http_api import SubmissionStore, create_app
from services.gateway.intake import Intake
from services.gateway.labs import LabDirectory, registry_for
from services.gateway.publish import KafkaPublisher
from services.simulator.client import Ack
from services.simulator.oru import Observation, Order, build_oru_r01, random_patient
from tests.e2e.conftest import HttpStack
from tests.support import mllp_send

pytestmark = pytest.mark.e2e
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


@dataclass(frozen=True)
class Stack:
    settings: Settings
    http: httpx.Client
    token: str
    other_token: str
    off_token: str
    directory: LabDirectory

    def post(self, kind: str, body: bytes, token: str | None = None, **headers: str) -> httpx.Response:
        auth = {"Authorization": f"Bearer {token or self.token}"}
        return self.http.post(f"/v1/results/{kind}", content=body, headers=auth | headers)


@pytest.fixture(scope="module")
def http_stack_labs() -> dict[str, str | None]:
    return {"LAB-HTTP": "2A0000018", "LAB-OTHER": None, "LAB-OFF": None}


@pytest.fixture(scope="module")
def stack(http_stack: HttpStack) -> Stack:
    tokens = http_stack.tokens
    return Stack(http_stack.settings, http_stack.http, tokens["LAB-HTTP"], tokens["LAB-OTHER"],
                 tokens["LAB-OFF"], http_stack.directory)


def stored(settings: Settings, *specimen_ids: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(libpq_url(settings.require_database())) as conn:
        return conn.execute(
            "SELECT specimen_id, loinc, outcome, transport, sending_facility, lab_finess, department "
            "FROM results WHERE specimen_id = ANY(%s) ORDER BY specimen_id, loinc",
            (list(specimen_ids),),
        ).fetchall()


def all_stored(settings: Settings, *specimen_ids: str) -> list[tuple[Any, ...]]:
    """The rows once there is one per specimen id, else [] (for wait_until)."""
    rows = stored(settings, *specimen_ids)
    return rows if {r[0] for r in rows} == set(specimen_ids) else []


def oru(lab: str, control_id: str, specimen_id: str, *, bad_ins: bool = False) -> bytes:
    patient = random_patient(random.Random(control_id), {"2A": 1.0}, without_ins=0.0)
    if bad_ins:
        assert patient.ins is not None
        patient = replace(patient, ins=f"{patient.ins[:-2]}{(int(patient.ins[-2:]) + 1) % 97 or 1:02d}")
    result_time = datetime.now(UTC) - timedelta(hours=1)
    order = Order(
        specimen_id,
        "258500001",
        result_time - timedelta(hours=3),
        [Observation("94500-6", "POSITIF", "F", result_time)],
    )
    return build_oru_r01(lab, control_id, [(patient, [order])])


def rejections_until(settings: Settings, done: Callable[[list[Rejection]], bool]) -> list[Rejection]:
    """The rejected topic read from the start until `done` holds (or 30 s)."""
    consumer = Consumer(
        consumer_config(settings, f"e2e-{uuid.uuid4().hex[:8]}", **{"auto.offset.reset": "earliest"})
    )
    consumer.subscribe([settings.topics.rejected])
    found: list[Rejection] = []
    deadline = time.monotonic() + 30
    try:
        while not done(found) and time.monotonic() < deadline:
            for message in consumer.consume(100, 1.0):
                if message.error() is None:
                    found.append(Rejection.model_validate_json(message.value() or b""))
    finally:
        consumer.close()
    return found


def test_an_hl7_batch_is_answered_per_message_and_kept(stack: Stack) -> None:
    tag = uuid.uuid4().hex[:6].upper()
    body = (
        b"FHS|^~\\&|LIS|LAB-HTTP\rBHS|^~\\&|LIS|LAB-HTTP\r"
        + oru("LAB-HTTP", f"{tag}-1", f"{tag}-S1")
        + oru("LAB-HTTP", f"{tag}-2", f"{tag}-S2")
        + oru("LAB-HTTP", f"{tag}-3", f"{tag}-S3", bad_ins=True)
        + b"BTS|3\rFTS|1\r"
    )

    response = stack.post("hl7", body, **{"Content-Type": "application/hl7-v2"})

    assert response.status_code == 200, response.text
    answer = response.json()
    assert (answer["status"], answer["accepted"], answer["rejected"], answer["warnings"]) == (
        "partially-accepted",
        2,
        1,
        [],
    )
    first, second, third = answer["items"]
    assert (first["status"], first["ack_code"], first["control_id"], len(first["result_ids"])) == (
        "accepted",
        "AA",
        f"{tag}-1",
        1,
    )
    assert second["status"] == "accepted"
    assert (third["status"], third["ack_code"], third["ref"]) == ("rejected", "AE", "message 3")
    (reason,) = third["reasons"]
    assert (reason["location"], reason["code"], reason["severity"]) == ("PID-3.1", "102", "E")
    assert "INS key" in reason["text"]
    assert response.headers["location"] == f"/v1/submissions/{answer['submission_id']}"
    later = stack.http.get(response.headers["location"], headers={"Authorization": f"Bearer {stack.token}"})
    assert later.status_code == 200 and later.json() == answer
    rows = wait_until(lambda: all_stored(stack.settings, f"{tag}-S1", f"{tag}-S2"), what="the HL7 results")
    assert [(r[0], r[2], r[3], r[4], r[6]) for r in rows] == [
        (f"{tag}-S1", "positive", "http-hl7", "LAB-HTTP", "2A"),
        (f"{tag}-S2", "positive", "http-hl7", "LAB-HTTP", "2A"),
    ]
    assert stored(stack.settings, f"{tag}-S3") == []


def test_a_fhir_bundle_is_mapped_to_the_same_results(stack: Stack) -> None:
    body = (FIXTURES / "fhir" / "ok_two_observations.json").read_bytes()

    response = stack.post("fhir", body, **{"Content-Type": "application/fhir+json"})

    assert response.status_code == 200, response.text
    (item,) = response.json()["items"]
    assert (item["status"], item["ref"], item["control_id"], len(item["result_ids"])) == (
        "accepted",
        "bundle",
        "FHIR-CTRL-0001",
        2,
    )
    rows = wait_until(
        lambda: (
            len(all_stored(stack.settings, "FHIR-SPEC-0001")) == 2
            and all_stored(stack.settings, "FHIR-SPEC-0001")
        ),
        what="the FHIR results",
    )
    assert rows == [
        ("FHIR-SPEC-0001", "94500-6", "positive", "http-fhir", "LAB-HTTP", "2A0000018", "2A"),
        ("FHIR-SPEC-0001", "94558-4", "negative", "http-fhir", "LAB-HTTP", "2A0000018", "2A"),
    ]

    invalid = stack.post("fhir", (FIXTURES / "fhir" / "ae_invalid_content.json").read_bytes())
    assert invalid.status_code == 200
    (item,) = invalid.json()["items"]
    assert (item["status"], item["ack_code"]) == ("rejected", "AE")
    where = {(r["location"], r["code"]) for r in item["reasons"]}
    assert {("Bundle.entry[0].resource.identifier", "102"), ("Bundle.entry[1].resource.code", "103")} <= where
    # FHIR terms only: no HL7 segment or field numbers in a FHIR answer
    assert all(r["location"].startswith("Bundle") and r["segment"] is None and r["field"] is None
               for r in item["reasons"])

    # a FHIR client asking for FHIR gets an OperationOutcome with FHIRPath expressions
    outcome = stack.post("fhir", (FIXTURES / "fhir" / "ae_invalid_content.json").read_bytes(),
                         Accept="application/fhir+json")
    assert outcome.status_code == 200 and outcome.headers["content-type"].startswith("application/fhir+json")
    document = outcome.json()
    assert document["resourceType"] == "OperationOutcome"
    assert document["extension"][0]["valueString"] == "rejected"
    found = {(tuple(i.get("expression", [])), i["details"]["coding"][0]["code"], i["code"])
             for i in document["issue"] if i["severity"] == "error"}
    assert {(("Bundle.entry[0].resource.identifier",), "102", "value"),
            (("Bundle.entry[1].resource.code",), "103", "code-invalid")} <= found
    accepted = stack.post("fhir", body, Accept="application/fhir+json").json()
    assert [i["severity"] for i in accepted["issue"]] == ["information"]
    assert stack.post("fhir", b"{", Accept="application/fhir+json").json()["issue"][0]["code"] == "structure"


def test_a_csv_batch_is_answered_per_row(stack: Stack) -> None:
    body = (FIXTURES / "csv" / "ok_and_invalid_rows.csv").read_bytes()

    response = stack.post("csv", body, **{"Content-Type": "text/csv"})

    assert response.status_code == 200, response.text
    answer = response.json()
    assert [(i["ref"], i["status"]) for i in answer["items"]] == [
        ("row 1", "accepted"),
        ("row 2", "accepted"),
        ("row 3", "rejected"),
    ]
    reasons = {(r["location"], r["code"]) for r in answer["items"][2]["reasons"]}
    assert all(r["segment"] is None for r in answer["items"][2]["reasons"])  # CSV columns, not HL7 fields
    assert {
        ("row 3, column ins", "102"),
        ("row 3, column collected_at", "102"),
        ("row 3, column result", "103"),
    } <= reasons
    rows = wait_until(lambda: all_stored(stack.settings, "CSV-SPEC-0001", "CSV-SPEC-0002"), what="CSV rows")
    assert [(r[0], r[2], r[3], r[6]) for r in rows] == [
        ("CSV-SPEC-0001", "positive", "http-csv", "75"),
        ("CSV-SPEC-0002", "negative", "http-csv", "29"),
    ]


def test_unreadable_bodies_get_a_json_4xx_and_are_still_kept_as_rejections(stack: Stack) -> None:
    cases = [
        ("fhir", b'{"resourceType": "Bundle", "entry": [', 400, "malformed-json"),
        ("fhir", (FIXTURES / "fhir" / "not_a_bundle.json").read_bytes(), 422, "not-a-bundle"),
        ("csv", (FIXTURES / "csv" / "unknown_column.csv").read_bytes(), 400, "malformed-csv"),
        ("csv", b"\xff\xfe\x00garbage", 400, "malformed-csv"),
        ("csv", b"specimen_id,collected_at,loinc,result\r\n", 422, "no-rows"),
    ]
    for kind, body, status, error in cases:
        response = stack.post(kind, body)
        assert response.status_code == status, response.text
        assert response.json()["error"] == error and response.json()["detail"]
    payloads = {body for _, body, _, _ in cases}

    def all_kept(found: list[Rejection]) -> bool:
        return {r.payload for r in found if r.ack_code == "AR" and r.lab == "LAB-HTTP"} >= payloads

    kept = [r for r in rejections_until(stack.settings, all_kept) if r.payload in payloads]
    assert all_kept(kept)
    assert {r.transport.value for r in kept if r.transport} >= {"http-fhir", "http-csv"}


def test_tokens_and_labs_are_checked(stack: Stack) -> None:
    body = oru("LAB-HTTP", "AUTH-1", "AUTH-S1")
    missing = stack.http.post("/v1/results/hl7", content=body)
    assert missing.status_code == 401 and missing.json()["error"] == "unauthorized"
    assert missing.headers["www-authenticate"].startswith("Bearer")
    wrong = stack.post("hl7", body, token=stack.token[:-2] + "xx")
    assert wrong.status_code == 401 and wrong.json()["detail"] == "unknown or revoked token"

    as_other = stack.post("hl7", body, token=stack.other_token)
    assert as_other.status_code == 403, as_other.text
    refused = as_other.json()
    assert refused["error"] == "forbidden" and "LAB-HTTP" in refused["detail"]
    assert refused["items"][0]["reasons"][0]["code"] == "204"
    # a submission is only visible to its own lab
    other = stack.http.get(
        f"/v1/submissions/{refused['submission_id']}", headers={"Authorization": f"Bearer {stack.token}"}
    )
    assert other.status_code == 404 and other.json()["error"] == "not-found"

    stack.directory.set_enabled("LAB-OFF", False)

    def refused_as_disabled() -> bool:
        return stack.post("hl7", oru("LAB-OFF", "OFF-1", "OFF-S1"), token=stack.off_token).status_code == 403

    wait_until(refused_as_disabled, timeout_s=10, what="the disabled lab refused over HTTP")


def test_unknown_and_disabled_labs_get_ar_over_mllp(stack: Stack) -> None:
    unknown = mllp_send(stack.settings.mllp_port, oru("LAB-NOBODY", "MLLP-1", "MLLP-S1"))[0]
    assert (unknown.code, unknown.control_id) == ("AR", "MLLP-1")
    (err,) = unknown.errors
    assert "204" in err and "not a registered lab" in err

    stack.directory.add("LAB-LATE", "Late", None, None)
    late = wait_until(
        lambda: mllp_send(stack.settings.mllp_port, oru("LAB-LATE", "MLLP-2", "MLLP-S2"))[0].code == "AA",
        timeout_s=10,
        what="a newly registered lab accepted",
    )
    assert late
    stack.directory.set_enabled("LAB-LATE", False)

    def refused() -> Ack | None:
        ack = mllp_send(stack.settings.mllp_port, oru("LAB-LATE", "MLLP-3", "MLLP-S3"))[0]
        return ack if ack.code == "AR" else None

    disabled = wait_until(refused, timeout_s=10, what="the disabled lab refused over MLLP")
    assert disabled is not None and "disabled in the lab registry" in disabled.errors[0]


def test_when_kafka_does_not_confirm_the_answer_is_503_with_retry_after(fresh_settings: Settings) -> None:
    """In process (the broker must stay up for the others): the gateway's producer points at a port
    where no broker listens, so Kafka never confirms."""
    settings = fresh_settings.model_copy(
        update={
            "kafka_bootstrap": f"127.0.0.1:{free_port()}",
            "delivery_timeout_s": 1.0,
        }
    )
    engine = make_engine(settings.require_database())
    directory = LabDirectory(engine)
    directory.add("LAB-HTTP", "Http", None, None)
    token = directory.issue_token("LAB-HTTP")

    async def post() -> httpx.Response:
        publisher = KafkaPublisher(producer_config(settings, log_level=0))  # the refused connections
        registry = registry_for(settings)
        await registry.start()
        intake = Intake(publisher, settings.topics, identity_protector(settings), registry)
        app = create_app(intake, registry, SubmissionStore(engine), max_body_bytes=1_000_000)
        try:
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as client:
                return await client.post(
                    "/v1/results/hl7",
                    content=oru("LAB-HTTP", "DOWN-1", "DOWN-S1"),
                    headers={"Authorization": f"Bearer {token}"},
                )
        finally:
            await registry.stop()
            publisher.close()

    try:
        response = asyncio.run(post())
    finally:
        engine.dispose()
    assert response.status_code == 503
    assert response.headers["retry-after"] == "5"
    assert response.json()["error"] == "unavailable" and "send it again" in response.json()["detail"]


def test_the_api_documentation_is_served_offline(stack: Stack) -> None:
    page = stack.http.get("/docs")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assets = re.findall(r"""(?:src|href)=['"]([^'"]+)['"]""", page.text)
    assert assets and all(url.startswith("/") for url in assets), f"a third-party asset: {assets}"
    for url in assets:
        asset = stack.http.get(url)
        assert asset.status_code == 200 and asset.content, url
    assert "SwaggerUIBundle" in stack.http.get("/docs/vendor/swagger-ui-bundle.js").text
    paths = stack.http.get("/openapi.json").json()["paths"]
    assert any(path.startswith("/v1/results/") for path in paths)
