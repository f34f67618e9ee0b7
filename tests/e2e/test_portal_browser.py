"""The lab portal in a real chromium: messages through the gateway's intake → Kafka → the worker (results
and lab-traffic consumers) → PostgreSQL → `labflow dashboard` process → `/portal`. Lab A logged in with
its own token sees its counts, rejections (location, code, reason, replay status) and delays, and never
anything of lab B — not on the page, not through the API with A's session, not on the staff dashboard's
API; then lab B sees its own and nothing of A. No person's identity appears on the page. Screenshots go
to tests/browser/artifacts/ (portal.png, portal-en.png, portal-lab-b.png)."""

from __future__ import annotations

import random
from datetime import UTC, datetime, time, timedelta
from pathlib import Path

import psycopg
import pytest

from labflow_testkit.results import make_result
from services.core.config import Settings
from services.core.db.engine import libpq_url, make_engine
from services.core.domain.model import LabResult
from services.gateway.labs import LabDirectory
from services.gateway.rejections import ReplayLog
from services.simulator.oru import random_patient
from tests.e2e.browser import ARTIFACTS, require_node_and_chromium, run_spec, running_dashboard
from tests.support import count_lab_traffic, lab_message, produce_results, through_intake

pytestmark = pytest.mark.e2e
STAFF_TOKEN = "staff-browser-token"
# lab -> answer -> messages sent today through the intake
SENT = {"LAB-ALPHA": {"AA": 6, "AE": 2, "AR": 1}, "LAB-BETA": {"AA": 4, "AE": 0, "AR": 3}}
HISTORY_DAYS = 10  # results of the days before, straight on the results topic (delays per day)


def control_ids(lab: str) -> list[tuple[str, str]]:
    short = lab.split("-")[1]
    return [(f"{short}-{answer}-{i}", answer) for answer, n in SENT[lab].items() for i in range(n)]


def identities(lab: str) -> list[str]:
    """What identifies the patients of this lab's messages: none of it may appear on the page."""
    found = []
    for control_id, _ in control_ids(lab):
        patient = random_patient(random.Random(control_id), {"2A": 1.0}, without_ins=0.0)
        born = patient.birth_date
        found += [patient.birth_name, patient.given_name, patient.ins or "", born.strftime("%d/%m/%Y"),
                  born.isoformat()]
    return [f for f in found if f]


def history(lab: str, delay_h: int) -> list[LabResult]:
    today = datetime.now(UTC).date()
    results = []
    for day in range(1, HISTORY_DAYS + 1):
        received = datetime.combine(today - timedelta(days=day), time(8), tzinfo=UTC)
        collected = received - timedelta(hours=delay_h)
        for i in range(day % 4 + 1):
            late = received + timedelta(hours=i)
            results.append(make_result(sending_facility=lab, collected_at=collected, received_at=late))
    return results


def stored(settings: Settings, query: str) -> object:
    with psycopg.connect(libpq_url(settings.require_database())) as conn:
        row = conn.execute(query).fetchone()
    return row[0] if row else None


def fill(settings: Settings) -> dict[str, str]:
    engine = make_engine(settings.require_database())
    directory = LabDirectory(engine)
    tokens = {}
    for lab in SENT:
        directory.add(lab, f"Laboratoire {lab}", None, None)
        tokens[lab] = directory.issue_token(lab) or ""
    payloads = [lab_message(lab, cid, a) for lab in SENT for cid, a in control_ids(lab)]
    answers = through_intake(settings, payloads)
    assert answers == [a for lab in SENT for _, a in control_ids(lab)]
    produce_results(settings, [*history("LAB-ALPHA", 5), *history("LAB-BETA", 30)])
    total = sum(len(history(lab, 0)) + SENT[lab]["AA"] for lab in SENT)
    count_lab_traffic(settings, SENT, lambda: stored(settings, "SELECT count(*) FROM results") == total)
    # the first AE of lab A was replayed by an operator, and failed again
    replayed = stored(settings, "SELECT rejection_id FROM lab_rejections "
                                "WHERE message_control_id = 'ALPHA-AE-0'")
    assert replayed is not None
    ReplayLog(engine).record(str(replayed), "AE")
    engine.dispose()
    return tokens


def expected(lab: str, other: str) -> dict[str, object]:
    sent = SENT[lab]
    return {
        "lab": lab, "messages": sum(sent.values()), "aa": sent["AA"], "ae": sent["AE"], "ar": sent["AR"],
        "results": sent["AA"] + len(history(lab, 0)),
        "rejected": sorted(cid for cid, a in control_ids(lab) if a != "AA"),
        "forbidden": [other, *(cid for cid, _ in control_ids(other)), *identities(lab), *identities(other)],
    }


def test_the_lab_portal_in_chromium_shows_a_lab_its_own_traffic_only(fresh_settings: Settings,
                                                                        tmp_path: Path) -> None:
    node = require_node_and_chromium()
    tokens = fill(fresh_settings)

    with running_dashboard(fresh_settings, tmp_path, STAFF_TOKEN) as dashboard:
        scenario = {
            "url": dashboard.url, "artifacts": str(ARTIFACTS),
            "screenshot": str(tmp_path / "portal-failure.png"),
            "a": {"token": tokens["LAB-ALPHA"], **expected("LAB-ALPHA", "LAB-BETA")},
            "b": {"token": tokens["LAB-BETA"], **expected("LAB-BETA", "LAB-ALPHA")},
            "replayed": "ALPHA-AE-0",
        }
        run_spec(node, "portal.spec.mjs", scenario, tmp_path, dashboard)
        assert (ARTIFACTS / "portal.png").exists()
