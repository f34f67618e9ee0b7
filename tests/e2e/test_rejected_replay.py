"""An operator's view of rejections: list them, read why, fix the cause, replay — nothing is lost."""

from __future__ import annotations

import random
import subprocess
import sys
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from labflow_testkit.infrastructure import settings_env
from labflow_testkit.processes import wait_until
from services.core.config import REPO_ROOT, Settings
from services.core.db.engine import libpq_url
from services.simulator.oru import Observation, Order, build_oru_r01, random_patient
from tests.support import mllp_send

pytestmark = pytest.mark.e2e


def labflow(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "services.cli", *args],
        env=settings_env(settings),
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_unknown_lab_is_refused_then_registered_and_replayed(services: Settings) -> None:
    result_time = datetime.now(UTC) - timedelta(hours=1)
    order = Order(
        "REPLAY-1",
        "258500001",
        result_time - timedelta(hours=4),
        [Observation("94500-6", "POSITIF", "F", result_time)],
    )
    message = build_oru_r01("LAB-NEW", "CTRL-R1", [(random_patient(random.Random(5)), [order])])
    patient_name = random_patient(random.Random(5)).birth_name

    assert mllp_send(services.mllp_port, message)[0].code == "AR"

    listed = labflow(services, "rejected", "list", "--lab", "LAB-NEW")
    assert listed.returncode == 0, listed.stderr
    lines = [line for line in listed.stdout.splitlines() if "CTRL-R1" in line]
    assert len(lines) == 1 and "AR" in lines[0] and "204" in lines[0]
    assert patient_name not in listed.stdout, "the list must not show identity"
    rejection_id = lines[0].split()[0]

    shown = labflow(services, "rejected", "show", rejection_id)
    assert "LAB-NEW" in shown.stdout and patient_name not in shown.stdout
    assert patient_name in labflow(services, "rejected", "show", rejection_id, "--payload").stdout

    assert labflow(services, "labs", "add", "LAB-NEW", "--name", "Nouveau laboratoire",
                   "--mode", "production").returncode == 0
    replayed = labflow(services, "rejected", "replay", rejection_id)
    assert replayed.returncode == 0, replayed.stderr
    assert f"{rejection_id}: AA" in replayed.stdout

    def stored() -> list[tuple[object, ...]]:
        with psycopg.connect(libpq_url(services.require_database())) as conn:
            return conn.execute(
                "SELECT sending_facility, outcome FROM results WHERE specimen_id = 'REPLAY-1'"
            ).fetchall()

    assert wait_until(stored, what="the replayed result in PostgreSQL") == [("LAB-NEW", "positive")]

    # the list says it was replayed; replaying it again by mistake is refused unless asked for
    line = next(x for x in labflow(services, "rejected", "list", "--lab", "LAB-NEW").stdout.splitlines()
                if x.startswith(rejection_id))
    assert "[replayed " in line and "→ AA]" in line
    twice = labflow(services, "rejected", "replay", rejection_id)
    assert twice.returncode == 1 and "already replayed" in twice.stderr and "--again" in twice.stderr
    assert f"{rejection_id}: AA" not in twice.stdout
    again = labflow(services, "rejected", "replay", rejection_id, "--again")
    assert again.returncode == 0 and f"{rejection_id}: AA" in again.stdout
    assert "(2 times)]" in labflow(services, "rejected", "list", "--lab", "LAB-NEW").stdout
    missing = labflow(services, "rejected", "replay", "no-such-id")
    assert missing.returncode == 1 and "not found" in missing.stderr
