"""The dashboard page in a real chromium: results → real worker → aggregates → `labflow dashboard`
process → page; the numbers the page shows are checked against the open-data files."""

from __future__ import annotations

import csv
import json
import math
import shutil
import subprocess
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from confluent_kafka import Producer

from services.core.config import REPO_ROOT, Settings
from services.core.domain.model import LabResult, Outcome, Sex, TestKind
from services.core.kafka import producer_config
from services.opendata.export import export
from services.worker.app import build_worker
from tests.support import ServiceProcess, free_port, http_status, make_result, settings_env, wait_until

pytestmark = pytest.mark.e2e
SPEC = REPO_ROOT / "tests" / "browser" / "dashboard.spec.mjs"
ARTIFACTS = REPO_ROOT / "tests" / "browser" / "artifacts"
CHROMIUM = "/usr/bin/chromium"
DAY0 = datetime(2022, 1, 3, 9, 0, tzinfo=UTC)
DAYS = 60
DEPARTMENTS = {"75": ("11", 1.0), "13": ("93", 0.8), "69": ("84", 0.7), "59": ("32", 0.6),
               "33": ("75", 0.5), "2A": ("94", 0.9), "971": ("01", 0.4)}
AGES = ("09", "19", "29", "39", "49", "59", "69", "79", "89", "90")
TOKEN = "browser-test-token"


def epidemic() -> list[LabResult]:
    """A wave peaking around day 35 in seven departments, from three labs (one slow, one that stops)."""
    results = []
    for day in range(DAYS):
        wave = math.exp(-(((day - 35) / 12) ** 2))
        for dep, (region, weight) in DEPARTMENTS.items():
            tested = 3 + round(10 * weight * (0.3 + wave))
            positives = round(tested * (0.05 + 0.4 * wave * weight))
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

    incidences = {dep: float(r["tx_incid"])
                  for (dep, day, age), r in sliding.items() if day == last and age == "0"}
    top = max(incidences, key=lambda d: incidences[d])
    assert sorted(incidences.values())[-2] < incidences[top], "the test data needs one highest department"
    return {
        "fra": {"day": last, "row": fra_row}, "points": 90,
        "dep": {"code": "2A", "day": last, "row": dep_row("2A", "0"),
                "age": "29", "age_row": dep_row("2A", "29")},
        "top_department": top, "late_lab": "LAB-SLOW", "silent_labs": ["LAB-GONE"],
    }


def test_the_page_in_chromium(fresh_settings: Settings, tmp_path: Path) -> None:
    if not Path(CHROMIUM).exists():
        pytest.fail("chromium is missing: `make test` installs it (apt-get install chromium)", pytrace=False)
    node = shutil.which("node")
    if node is None or not (REPO_ROOT / "services/dashboard/web/node_modules/playwright-core").exists():
        pytest.fail("node or playwright-core is missing: run `make install`", pytrace=False)
    if not (REPO_ROOT / "services/dashboard/static/vendor/uPlot.iife.min.js").exists():
        pytest.fail("the vendored uPlot is missing: run `make install`", pytrace=False)

    settings = fresh_settings.model_copy(update={"opendata_dir": tmp_path / "opendata"})
    fill(settings, epidemic())
    export(settings, datetime.now(UTC))

    port = free_port()
    env = settings_env(settings, LABFLOW_DASHBOARD_PORT=str(port), LABFLOW_DASHBOARD_TOKENS=TOKEN)
    service = ServiceProcess("dashboard", env, tmp_path)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_until(lambda: http_status(f"{url}/readyz") == 200, timeout_s=60,
                   what=f"dashboard ready {service.log()}")
        scenario = {"url": url, "token": TOKEN, "screenshot": str(tmp_path / "dashboard.png"),
                    "expected": expectations(settings.opendata_path)}
        (tmp_path / "scenario.json").write_text(json.dumps(scenario))
        run = subprocess.run([node, str(SPEC), str(tmp_path / "scenario.json")], capture_output=True,
                             text=True, timeout=180, cwd=REPO_ROOT)
        ARTIFACTS.mkdir(exist_ok=True)
        if (tmp_path / "dashboard.png").exists():
            shutil.copy(tmp_path / "dashboard.png", ARTIFACTS / "dashboard.png")
        assert run.returncode == 0, f"{run.stdout}\n{run.stderr}\n--- dashboard log ---\n{service.log()}"
    finally:
        service.stop()
