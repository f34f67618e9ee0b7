"""A lab's view: an ORU^R01 over a real MLLP socket, the ACK it gets, and the row in PostgreSQL."""

from __future__ import annotations

import random
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from labflow_testkit.processes import http_status, wait_until
from services.core.config import Settings
from services.core.db.engine import libpq_url
from services.simulator.oru import Observation, Order, build_oru_r01, random_patient
from tests.support import mllp_send

pytestmark = pytest.mark.e2e


def stored(settings: Settings, specimen_id: str) -> list[tuple[object, ...]]:
    with psycopg.connect(libpq_url(settings.require_database())) as conn:
        return conn.execute(
            "SELECT sending_facility, message_control_id, loinc, test_kind, outcome, status, department "
            "FROM results WHERE specimen_id = %s ORDER BY loinc",
            (specimen_id,),
        ).fetchall()


def test_valid_result_is_acknowledged_then_stored(services: Settings) -> None:
    rng = random.Random(7)
    patient = random_patient(rng, {"2A": 1.0}, without_ins=0.0)
    result_time = datetime.now(UTC) - timedelta(hours=1)
    order = Order(
        "E2E-0001",
        "258500001",
        result_time - timedelta(hours=5),
        [
            Observation("94500-6", "260373001", "F", result_time),
            Observation("94558-4", "NEGATIF", "F", result_time),
        ],
    )
    message = build_oru_r01("LAB-E2E", "CTRL-0001", [(patient, [order])])

    (ack,) = mllp_send(services.mllp_port, message)

    assert (ack.code, ack.control_id, ack.errors) == ("AA", "CTRL-0001", [])
    rows = wait_until(lambda: stored(services, "E2E-0001"), what="the stored results")
    assert rows == [
        ("LAB-E2E", "CTRL-0001", "94500-6", "rt-pcr", "positive", "F", "2A"),
        ("LAB-E2E", "CTRL-0001", "94558-4", "antigen", "negative", "F", "2A"),
    ]
    # the same message again (a lost ACK): acknowledged again, still stored once
    (again,) = mllp_send(services.mllp_port, message)
    assert again.code == "AA"
    assert len(stored(services, "E2E-0001")) == 2
    assert http_status(f"http://127.0.0.1:{services.gateway_ops_port}/metrics") == 200


def test_invalid_content_gets_ae_with_a_precise_err_and_nothing_is_stored(services: Settings) -> None:
    rng = random.Random(8)
    patient = random_patient(rng, without_ins=0.0)
    assert patient.ins is not None
    wrong_key = (int(patient.ins[-2:]) + 1) % 97 or 1
    wrong_ins = f"{patient.ins[:-2]}{wrong_key:02d}"
    patient = replace(patient, ins=wrong_ins)
    result_time = datetime.now(UTC) - timedelta(hours=1)
    order = Order(
        "E2E-0002",
        "258500001",
        result_time - timedelta(hours=2),
        [Observation("94500-6", "POSITIF", "F", result_time)],
    )

    (ack,) = mllp_send(services.mllp_port, build_oru_r01("LAB-E2E", "CTRL-0002", [(patient, [order])]))

    assert (ack.code, ack.control_id) == ("AE", "CTRL-0002")
    assert len(ack.errors) == 1
    assert "PID^1^3" in ack.errors[0]
    assert "INS key" in ack.errors[0] and wrong_ins not in ack.errors[0]
    assert stored(services, "E2E-0002") == []


def test_bytes_that_are_not_hl7_get_ar_and_the_connection_keeps_serving(services: Settings) -> None:
    rng = random.Random(9)
    result_time = datetime.now(UTC) - timedelta(hours=1)
    order = Order(
        "E2E-0003",
        "258500001",
        result_time - timedelta(hours=2),
        [Observation("94500-6", "NEGATIF", "F", result_time)],
    )
    good = build_oru_r01("LAB-E2E", "CTRL-0003", [(random_patient(rng), [order])])

    garbage, ack = mllp_send(services.mllp_port, b"hello, is this the lab server?", good)

    assert garbage.code == "AR" and garbage.errors
    assert (ack.code, ack.control_id) == ("AA", "CTRL-0003")
    wait_until(lambda: stored(services, "E2E-0003"), what="the result sent after the garbage")
