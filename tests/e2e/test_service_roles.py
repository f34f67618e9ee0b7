"""The services as started by the e2e fixtures connect with their own roles, never as the owner (SPEC §8)."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from labflow_testkit.processes import wait_until
from services.core.config import DATABASE_CLIENTS, Settings
from services.core.db.engine import libpq_url
from services.core.db.roles import credentials
from services.simulator.oru import Observation, Order, build_oru_r01, random_patient
from tests.support import mllp_send

pytestmark = pytest.mark.e2e


def test_a_result_goes_through_gateway_and_worker_each_with_its_own_role(services: Settings) -> None:
    result_time = datetime.now(UTC) - timedelta(hours=1)
    order = Order("E2E-ROLES", "258500001", result_time - timedelta(hours=5),
                  [Observation("94500-6", "260373001", "F", result_time)])
    patient = random_patient(random.Random(11), {"75": 1.0}, without_ins=0.0)
    (ack,) = mllp_send(services.mllp_port, build_oru_r01("LAB-E2E", "CTRL-ROLES", [(patient, [order])]))
    assert ack.code == "AA"

    owner = libpq_url(services.require_database())
    # this test's own sessions are named: a backend whose client just closed can still be listed
    # in pg_stat_activity for a moment, and must not pass for a service connected as the owner
    check = "e2e-role-check"

    def stored() -> bool:
        with psycopg.connect(owner) as conn:
            row = conn.execute("SELECT 1 FROM results WHERE specimen_id = 'E2E-ROLES'").fetchone()
        return row is not None

    wait_until(stored, what="the result stored by the worker")
    with psycopg.connect(owner, application_name=check) as conn:
        sessions = {
            str(row[0]) for row in conn.execute(
                "SELECT usename FROM pg_stat_activity WHERE datname = current_database() "
                "AND application_name <> %s AND backend_type = 'client backend'", (check,)
            ).fetchall()
        }
    logins = {client: credentials(services.database_url_for(client))[0] for client in DATABASE_CLIENTS}
    assert {logins["gateway"], logins["worker"]} <= sessions
    assert sessions <= set(logins.values()), "a service connected as another role than its own"
