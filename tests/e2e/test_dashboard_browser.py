"""The dashboard page in a real chromium: results → real worker → aggregates → `labflow dashboard`
process → page; the numbers the page shows are checked against the open-data files, and what a person
reads (names, legend, provisional days, small counts, French dates) is checked as text. Screenshots go to
tests/browser/artifacts/ (dashboard.png, dashboard-map.png, dashboard-department.png, dashboard-ages.png,
dashboard-en.png)."""

from __future__ import annotations

import csv
import math
import threading
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path

import pytest
from confluent_kafka import Producer

from labflow_testkit.processes import wait_until
from labflow_testkit.results import make_result
from services.core.config import REPO_ROOT, Settings
from services.core.db.engine import make_engine
from services.core.domain.model import LabResult, Outcome, Sex, TestKind
from services.core.kafka import producer_config
from services.gateway.labs import LabDirectory
from services.opendata.export import export
from services.worker.app import build_worker
from tests.e2e.browser import ARTIFACTS, require_node_and_chromium, run_spec, running_dashboard

pytestmark = pytest.mark.e2e
DAYS = 60
# the data ends yesterday, so that the last collection days are provisional as they would be live
TODAY = datetime.now(UTC).date()
DAY0 = datetime.combine(TODAY - timedelta(days=DAYS), time(9), tzinfo=UTC)
PROVISIONAL_DAYS = 3
SMALL_COUNT_P7 = 20
DEPARTMENTS = {"75": ("11", 1.0), "13": ("93", 0.8), "69": ("84", 0.7), "59": ("32", 0.6),
               "33": ("75", 0.5), "2A": ("94", 0.9), "971": ("01", 0.4)}
# Saint-Barthélemy (9,961 inhabitants): one positive test a day over the last week gives the highest
# incidence of all from 7 positives, a small count that must not top the ranking
SMALL = "977"
LAB_NAMES = {"LAB-FAST": "Laboratoire Rapide Analyses", "LAB-SLOW": "Biolab Lenteur",
             "LAB-GONE": "Laboratoire Disparu"}
AGES = ("09", "19", "29", "39", "49", "59", "69", "79", "89", "90")
TOKEN = "browser-test-token"


def epidemic() -> list[LabResult]:
    """A wave peaking around day 45 in seven departments, from three labs (one slow, one that stops), and
    a small overseas collectivity with a few positives at the end."""
    results = []
    for day in range(DAYS):
        wave = math.exp(-(((day - 45) / 12) ** 2))
        if day >= DAYS - 7:
            collected = DAY0 + timedelta(days=day, hours=6)
            results.append(make_result(
                sending_facility="LAB-FAST", collected_at=collected,
                received_at=collected + timedelta(hours=6), department=SMALL, region=None,
                postal_code="97133", age_class="39", outcome=Outcome.POSITIVE,
            ))
        for dep, (region, weight) in DEPARTMENTS.items():
            tested = 5 + round(24 * weight * (0.3 + wave))
            positives = round(tested * (0.08 + 0.6 * wave * weight))
            for i in range(tested):
                lab, delay = ("LAB-SLOW", 30) if i % 5 == 0 else ("LAB-FAST", 6)
                if day < 40 and i % 7 == 3:
                    lab, delay = "LAB-GONE", 8
                collected = DAY0 + timedelta(days=day, minutes=i)
                antigen = i % 3 == 0
                results.append(make_result(
                    sending_facility=lab, collected_at=collected,
                    received_at=collected + timedelta(hours=delay),
                    department=dep, region=region, age_class=AGES[(day + i) % len(AGES)],
                    sex=Sex.FEMALE if i % 2 else Sex.MALE,
                    outcome=Outcome.POSITIVE if i < positives else Outcome.NEGATIVE,
                    loinc="94558-4" if antigen else "94500-6",
                    test_kind=TestKind.ANTIGEN if antigen else TestKind.RT_PCR,
                ))
    return results


def fill(settings: Settings, results: list[LabResult]) -> None:
    import psycopg

    from services.core.db.engine import libpq_url

    running = build_worker(settings)
    thread = threading.Thread(target=running.run, daemon=True)
    thread.start()
    try:
        producer = Producer(producer_config(settings))
        for r in results:
            producer.produce(settings.topics.results, r.model_dump_json().encode(),
                             r.patient_pseudonym.encode())
        assert producer.flush(30) == 0

        def stored() -> bool:
            with psycopg.connect(libpq_url(settings.require_database())) as conn:
                row = conn.execute("SELECT count(*) FROM results").fetchone()
            return row is not None and row[0] == len(results)

        wait_until(stored, timeout_s=120, what="results stored by the worker")
    finally:
        running.stop()
        thread.join(30)


def rows(folder: Path, name: str) -> list[dict[str, str]]:
    with (folder / name).open(encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle, delimiter=";"))


def page_row(day: str, p: str, t: str, p7: str, t7: str, incidence: str, positivity: str) -> list[str]:
    """A row of the page's series table: rates with 2 decimals, '–' when there is none."""
    return [day, p, t, p7, t7, incidence or "–", positivity or "–"]


def provisional(day: date) -> bool:
    """The dashboard's rule: the last 3 collection days (today and the 2 before) are provisional."""
    return day > datetime.now(UTC).date() - timedelta(days=PROVISIONAL_DAYS)


def expectations(folder: Path) -> dict[str, object]:
    last = (DAY0.date() + timedelta(days=DAYS - 1)).isoformat()
    fra = [r for r in rows(folder, "sp-pos-quot-fra.csv") if r["cl_age90"] == "0"]
    week = [r for r in fra if r["jour"] > (DAY0.date() + timedelta(days=DAYS - 8)).isoformat()]
    p7, t7 = sum(int(r["P"]) for r in week), sum(int(r["T"]) for r in week)
    today = next(r for r in fra if r["jour"] == last)
    fra_row = page_row(last, today["P"], today["T"], str(p7), str(t7),
                       f"{round(100000 * p7 / float(today['pop']), 2):.2f}", f"{round(100 * p7 / t7, 2):.2f}")
    sliding = {(r["dep"], r["jour"], r["cl_age90"]): r for r in rows(folder, "sp-pos-7j-dep.csv")}
    daily = {(r["dep"], r["jour"], r["cl_age90"]): r for r in rows(folder, "sp-pos-quot-dep.csv")}

    def dep_row(dep: str, age: str) -> list[str]:
        s, d = sliding[(dep, last, age)], daily[(dep, last, age)]
        return page_row(last, d["P"], d["T"], s["P7"], s["T7"], s["tx_incid"], s["tx_pos"])

    week_rows = {dep: r for (dep, day, age), r in sliding.items() if day == last and age == "0"}
    incidences = {dep: float(r["tx_incid"]) for dep, r in week_rows.items()}
    top = max(incidences, key=lambda d: incidences[d])
    assert top == SMALL and int(week_rows[SMALL]["P7"]) < SMALL_COUNT_P7, "the highest rate is a small count"
    ranked = {d: v for d, v in incidences.items() if int(week_rows[d]["P7"]) >= SMALL_COUNT_P7}
    assert len(ranked) >= 3, "the test data needs departments with enough positives"
    first = max(ranked, key=lambda d: ranked[d])
    assert sorted(ranked.values())[-2] < ranked[first], "the test data needs one highest department"
    days = [DAY0.date() + timedelta(days=i) for i in range(DAYS)]
    return {
        "fra": {"day": last, "row": fra_row}, "points": 90,
        "dep": {"code": "2A", "name": "Corse-du-Sud (2A)", "day": last, "row": dep_row("2A", "0"),
                "age": "29", "age_label": "20–29 ans", "age_row": dep_row("2A", "29")},
        "top_department": top, "first_ranked": first, "small_department": SMALL,
        "provisional_days": [d.isoformat() for d in days if provisional(d)],
        "consolidated_day": max(d for d in days if not provisional(d)).isoformat(),
        "late_lab": "LAB-SLOW", "silent_labs": ["LAB-GONE"], "lab_names": LAB_NAMES,
    }


def test_the_page_in_chromium(fresh_settings: Settings, tmp_path: Path) -> None:
    node = require_node_and_chromium()
    if not (REPO_ROOT / "services/dashboard/static/vendor/uPlot.iife.min.js").exists():
        pytest.fail("the vendored uPlot is missing: run `make install`", pytrace=False)

    settings = fresh_settings.model_copy(update={"opendata_dir": tmp_path / "opendata"})
    engine = make_engine(settings.require_database())
    for lab_id, name in LAB_NAMES.items():
        LabDirectory(engine).add(lab_id, name, None, None)
    engine.dispose()
    fill(settings, epidemic())
    export(settings, datetime.now(UTC))

    with running_dashboard(settings, tmp_path, TOKEN) as dashboard:
        scenario = {"url": dashboard.url, "token": TOKEN, "screenshot": str(tmp_path / "dashboard.png"),
                    "artifacts": str(ARTIFACTS), "downloads": str(tmp_path / "downloads"),
                    "expected": expectations(settings.opendata_path)}
        run_spec(node, "dashboard.spec.mjs", scenario, tmp_path, dashboard)
