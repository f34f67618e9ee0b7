"""The demo's history: a backfilled epidemic wave through the real worker fills ≥ 60 collection days
and gives a 7-day file with figures."""

from __future__ import annotations

import csv
import uuid
from datetime import UTC, datetime

import psycopg
import pytest

from services.core.config import Settings
from services.core.db.engine import libpq_url
from services.opendata.export import export
from services.simulator.backfill import backfill

pytestmark = pytest.mark.integration


def test_a_demo_backfill_fills_sixty_days_and_the_seven_day_file(worker: Settings) -> None:
    settings = worker
    tag = f"H{uuid.uuid4().hex[:5].upper()}"
    summary = backfill(settings, labs=[f"DEMO-LAB-{i:02d}" for i in range(1, 11)], days=63, peak=120,
                       tag=tag, wait_s=90)
    assert summary.refused == 0 and summary.results >= summary.tests > 63 * 10
    with psycopg.connect(libpq_url(settings.require_database())) as conn:
        days = conn.execute("SELECT count(DISTINCT day) FROM aggregates WHERE t > 0").fetchone()
        departments = conn.execute("SELECT count(DISTINCT department) FROM aggregates").fetchone()
        late = conn.execute(
            "SELECT count(*) FROM results WHERE received_at - collected_at > interval '24 hours'"
        ).fetchone()
        received_days = conn.execute(
            "SELECT count(DISTINCT (received_at AT TIME ZONE 'UTC')::date) FROM results"
        ).fetchone()
    assert days is not None and days[0] >= 60
    assert departments is not None and departments[0] >= 60  # residences spread by population
    assert received_days is not None and received_days[0] >= 60  # received when labs sent them, not today
    assert late is not None and 0 < late[0] < summary.results * 0.2

    publication = export(settings, datetime.now(UTC))
    assert publication.first_day == summary.first_day and publication.data_cut_off == summary.last_day
    with (settings.opendata_path / "sp-pos-7j-dep.csv").open(encoding="utf-8", newline="") as handle:
        sliding = list(csv.DictReader(handle, delimiter=";"))
    assert len(sliding) == 104 * (63 - 6) * 11
    with_cases = [r for r in sliding if r["cl_age90"] == "0" and int(r["P7"]) > 0]
    assert len({r["dep"] for r in with_cases}) >= 30 and len({r["jour"] for r in with_cases}) == 63 - 6
    # the wave: national positivity varies over the period
    with (settings.opendata_path / "sp-pos-quot-fra.csv").open(encoding="utf-8", newline="") as handle:
        national = [r for r in csv.DictReader(handle, delimiter=";") if r["cl_age90"] == "0"]
    weeks = [national[i:i + 7] for i in range(0, 56, 7)]
    weekly = [sum(int(r["P"]) for r in w) / max(1, sum(int(r["T"]) for r in w)) for w in weeks]
    assert max(weekly) > 1.5 * min(weekly)
