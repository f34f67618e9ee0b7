"""Open data end to end: results through the real worker → aggregates → files → HTTP."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
import urllib.request
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import psycopg
import pytest
from fastapi.testclient import TestClient

from labflow_testkit.infrastructure import settings_env
from labflow_testkit.processes import ServiceProcess, free_port, http_status, wait_until
from labflow_testkit.results import make_result
from services.core.config import Settings
from services.core.db.engine import libpq_url
from services.core.domain.model import Outcome, Sex, TestKind
from services.opendata.app import build_app
from services.opendata.export import export
from services.opendata.files import INDEX_NAME
from tests.support import produce_results

pytestmark = pytest.mark.integration
DAY0 = datetime(2022, 1, 3, 9, 0, tzinfo=UTC)
LATEST = ("sp-pos-quot-dep.csv", "sp-pos-quot-reg.csv", "sp-pos-quot-fra.csv", "sp-pos-7j-dep.csv")


def at(days: int) -> datetime:
    return DAY0 + timedelta(days=days)


def jour(days: int) -> str:
    return (DAY0.date() + timedelta(days=days)).isoformat()


def stored_results(settings: Settings) -> int:
    with psycopg.connect(libpq_url(settings.require_database())) as conn:
        row = conn.execute("SELECT count(*) FROM results").fetchone()
    assert row is not None, "no count(*) row for results"
    return int(row[0])


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle, delimiter=";"))


def reuser_all_ages(path: Path) -> list[dict[str, str]]:
    """How reusers read SpF's files: `csv` with `;`, all-ages rows only."""
    with path.open(encoding="utf-8", newline="") as handle:
        return [row for row in csv.DictReader(handle, delimiter=";") if row["cl_age90"] == "0"]


Cells = dict[tuple[str, str, str], tuple[int, ...]]


def nonzero(rows: list[dict[str, str]], code: str, columns: tuple[str, ...]) -> Cells:
    """(code, jour, cl_age90) → the `columns` values, of the rows where one of them is not zero."""
    found: Cells = {}
    for row in rows:
        values = tuple(int(row[c]) for c in columns)
        if any(values):
            found[(row[code], row["jour"], row["cl_age90"])] = values
    return found


def test_results_through_the_worker_become_the_published_files(worker: Settings, tmp_path: Path) -> None:
    settings = worker
    alice = make_result(collected_at=at(0), department="75", region="11", age_class="29", sex=Sex.FEMALE)
    results = [
        alice,
        # 3 days later: covered by her positive, counts nowhere
        make_result(
            patient_pseudonym=alice.patient_pseudonym,
            collected_at=at(3),
            department="75",
            region="11",
            age_class="29",
            sex=Sex.FEMALE,
        ),
        make_result(
            collected_at=at(0),
            outcome=Outcome.NEGATIVE,
            department="2A",
            region="94",
            age_class="89",
            sex=Sex.MALE,
        ),
        make_result(collected_at=at(1), department="971", region="01", age_class="09", sex=Sex.UNKNOWN),
        # unknown residence: national file only
        make_result(
            collected_at=at(2), department=None, region=None, postal_code=None, age_class="49", sex=Sex.MALE
        ),
        # unknown age class: all-ages rows only
        make_result(
            collected_at=at(7),
            outcome=Outcome.NEGATIVE,
            department="13",
            region="93",
            age_class=None,
            birth_year=None,
            sex=Sex.FEMALE,
        ),
        # serology does not count
        make_result(
            collected_at=at(4),
            loinc="94762-2",
            test_kind=TestKind.SEROLOGY,
            department="75",
            region="11",
            age_class="29",
        ),
        make_result(
            collected_at=at(5),
            loinc="94558-4",
            test_kind=TestKind.ANTIGEN,
            department="978",
            region=None,
            age_class="39",
            sex=Sex.FEMALE,
        ),
    ]
    produce_results(settings, results)
    wait_until(lambda: stored_results(settings) == len(results), what="results stored")

    first = export(settings, datetime.now(UTC))
    folder = settings.opendata_path
    assert (first.first_day, first.data_cut_off) == (date(2022, 1, 3), date(2022, 1, 10))

    dep = read_csv(folder / "sp-pos-quot-dep.csv")
    assert len(dep) == 104 * 8 * 11
    assert nonzero(dep, "dep", ("P", "T")) == {
        ("75", jour(0), "29"): (1, 1),
        ("75", jour(0), "0"): (1, 1),
        ("2A", jour(0), "89"): (0, 1),
        ("2A", jour(0), "0"): (0, 1),
        ("971", jour(1), "09"): (1, 1),
        ("971", jour(1), "0"): (1, 1),
        ("13", jour(7), "0"): (0, 1),
        ("978", jour(5), "39"): (1, 1),
        ("978", jour(5), "0"): (1, 1),
    }
    sexed = ("P_f", "P_h", "P", "T_f", "T_h", "T")
    reg = read_csv(folder / "sp-pos-quot-reg.csv")
    assert nonzero(reg, "reg", sexed) == {
        ("11", jour(0), "29"): (1, 0, 1, 1, 0, 1),
        ("11", jour(0), "0"): (1, 0, 1, 1, 0, 1),
        ("94", jour(0), "89"): (0, 0, 0, 0, 1, 1),
        ("94", jour(0), "0"): (0, 0, 0, 0, 1, 1),
        ("01", jour(1), "09"): (0, 0, 1, 0, 0, 1),
        ("01", jour(1), "0"): (0, 0, 1, 0, 0, 1),
        ("93", jour(7), "0"): (0, 0, 0, 1, 0, 1),
    }
    fra = read_csv(folder / "sp-pos-quot-fra.csv")
    assert nonzero(fra, "fra", sexed) == {
        ("FR", jour(0), "29"): (1, 0, 1, 1, 0, 1),
        ("FR", jour(0), "89"): (0, 0, 0, 0, 1, 1),
        ("FR", jour(0), "0"): (1, 0, 1, 1, 1, 2),
        ("FR", jour(1), "09"): (0, 0, 1, 0, 0, 1),
        ("FR", jour(1), "0"): (0, 0, 1, 0, 0, 1),
        ("FR", jour(2), "49"): (0, 1, 1, 0, 1, 1),
        ("FR", jour(2), "0"): (0, 1, 1, 0, 1, 1),
        ("FR", jour(5), "39"): (1, 0, 1, 1, 0, 1),
        ("FR", jour(5), "0"): (1, 0, 1, 1, 0, 1),
        ("FR", jour(7), "0"): (0, 0, 0, 1, 0, 1),
    }
    sliding = read_csv(folder / "sp-pos-7j-dep.csv")
    assert len(sliding) == 104 * 2 * 11  # complete windows end on days 6 and 7
    row_978 = next(r for r in sliding if (r["dep"], r["jour"], r["cl_age90"]) == ("978", jour(6), "0"))
    assert (row_978["P7"], row_978["T7"], row_978["pop"]) == ("1", "1", "35334")
    assert (row_978["tx_incid"], row_978["tx_pos"]) == (f"{100000 / 35334:.2f}", "100.00")

    # what a reuser's script does with these files works unchanged
    national = {r["jour"]: int(r["P"]) for r in reuser_all_ages(folder / "sp-pos-quot-fra.csv")}
    assert sum(national.values()) == 4
    departments = reuser_all_ages(folder / "sp-pos-quot-dep.csv")
    assert {r["dep"] for r in departments} >= {"01", "2A", "971", "978"}
    incidence = {
        r["dep"]: 100000 * int(r["P"]) / float(r["pop"]) for r in departments if r["jour"] == jour(5)
    }
    assert incidence["978"] == pytest.approx(100000 / 35334)

    # a late result for a past day changes that day in the next publication
    late = make_result(collected_at=at(1), department="75", region="11", age_class="29", sex=Sex.MALE)
    produce_results(settings, [late])
    wait_until(lambda: stored_results(settings) == len(results) + 1, what="late result stored")
    second = export(settings, datetime.now(UTC) + timedelta(minutes=1))
    assert second.stamp != first.stamp
    dep_after = nonzero(read_csv(folder / "sp-pos-quot-dep.csv"), "dep", ("P", "T"))
    assert dep_after[("75", jour(1), "29")] == (1, 1) and dep_after[("75", jour(1), "0")] == (1, 1)
    assert len(dep_after) == 9 + 2
    # the first publication is still there, unchanged
    old_dep = nonzero(read_csv(folder / f"sp-pos-quot-dep-{first.stamp}.csv"), "dep", ("P", "T"))
    assert ("75", jour(1), "29") not in old_dep

    # no person-level value in any cell of any published file
    everything = [*results, late]
    personal = {
        value
        for r in everything
        for value in (r.patient_pseudonym, r.result_id, r.specimen_id, r.message_control_id)
        if value
    }
    for path in folder.iterdir():
        if path.name.startswith("."):
            continue
        text = path.read_text(encoding="utf-8")
        assert not any(value in text for value in personal), path.name
        if path.suffix == ".csv":
            with path.open(encoding="utf-8", newline="") as handle:
                for row in csv.reader(handle, delimiter=";"):
                    assert personal.isdisjoint(row)
                    assert all(len(cell) <= 16 for cell in row)


def test_http_etag_conditional_get_and_content_types(worker: Settings) -> None:
    settings = worker
    produce_results(settings, [make_result(collected_at=at(0), department="2B", region="94", age_class="69")])
    wait_until(lambda: stored_results(settings) == 1, what="result stored")
    export(settings, datetime.now(UTC) - timedelta(minutes=1))
    folder = settings.opendata_path
    index = json.loads((folder / INDEX_NAME).read_text())
    # as received, not gzip (TestClient asks for gzip by default: that answer has the weak ETag W/"sha256")
    client = TestClient(build_app(settings), headers={"Accept-Encoding": "identity"})

    for entry in index["files"]:
        for name in (entry["name"], entry["latest"]):
            response = client.get(f"/{name}")
            assert response.status_code == 200
            assert response.headers["content-type"] == "text/csv; charset=utf-8"
            assert response.headers["etag"] == f'"{entry["sha256"]}"'
            assert response.content == (folder / name).read_bytes()
            again = client.get(f"/{name}", headers={"If-None-Match": response.headers["etag"]})
            assert again.status_code == 304 and again.content == b""
            assert again.headers["etag"] == response.headers["etag"]

    response = client.get("/index.json")
    assert response.headers["content-type"] == "application/json" and response.json() == index
    head = client.head("/sp-pos-quot-dep.csv")
    assert head.status_code == 200 and head.content == b""
    assert int(head.headers["content-length"]) == index["files"][0]["bytes"]

    for path in (
        "/nope.csv",
        "/..%2Flabflow.env",
        "/%2e%2e%2Findex.json",
        "/.publish.lock",
        "/..%2F..%2F..%2Fetc%2Fpasswd",
        "/sub/index.json",
        "/index.json%00.csv",
    ):
        response = client.get(path)
        assert response.status_code == 404, path
        assert response.headers["content-type"] == "application/json"

    # a new publication: the stable name now has another ETag, the old one no longer matches
    old = client.get("/sp-pos-quot-fra.csv").headers["etag"]
    produce_results(settings, [make_result(collected_at=at(1), department="2B", region="94", age_class="69")])
    wait_until(lambda: stored_results(settings) == 2, what="second result stored")
    export(settings, datetime.now(UTC))
    fresh = client.get("/sp-pos-quot-fra.csv", headers={"If-None-Match": old})
    assert fresh.status_code == 200 and fresh.headers["etag"] != old

    assert client.get("/readyz").status_code == 200
    metrics = client.get("/metrics").text
    age = next(
        line for line in metrics.splitlines() if line.startswith("labflow_opendata_publication_age_seconds ")
    )
    assert 0 <= float(age.split()[1]) < 60


def test_the_service_publishes_at_start_and_serves(fresh_settings: Settings, tmp_path: Path) -> None:
    port = free_port()
    folder = tmp_path / "published"
    env = settings_env(fresh_settings, LABFLOW_OPENDATA_DIR=str(folder), LABFLOW_OPENDATA_PORT=str(port))
    publish = subprocess.run(
        [sys.executable, "-m", "services.cli", "opendata", "publish"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert publish.returncode == 0, publish.stderr
    assert "sp-pos-quot-dep-" in publish.stdout and (folder / INDEX_NAME).exists()

    service = ServiceProcess("opendata", env, tmp_path)
    try:
        base = f"http://127.0.0.1:{port}"
        wait_until(lambda: http_status(f"{base}/readyz") == 200, timeout_s=30, what=service.log())
        with urllib.request.urlopen(f"{base}/sp-pos-quot-reg.csv", timeout=5) as response:
            assert response.read().decode().startswith("reg;jour;P_f;P_h;P;T_f;T_h;T;cl_age90;pop\n")
        assert http_status(f"{base}/healthz") == 200
        assert len(list(folder.glob("sp-pos-quot-dep-*.csv"))) >= 1
        with urllib.request.urlopen(f"{base}/", timeout=5) as response:  # the landing page, no longer a 404
            assert response.headers["Content-Type"] == "text/html; charset=utf-8"
            page = response.read().decode()
        assert 'href="sp-pos-7j-dep.csv"' in page and 'href="datapackage.json"' in page
    finally:
        service.stop()


def test_a_real_publication_is_a_valid_data_package_with_its_changelog_and_landing_page(
    worker: Settings,
) -> None:
    """The real exporter on a database filled through the real worker: Frictionless validates the
    publication; a late result for a past day shows in the next publication's changelog."""
    from frictionless import validate

    from services.opendata import kit

    settings = worker
    results = [
        make_result(collected_at=at(day), department=dep, region=reg, age_class=age, sex=sex,
                    outcome=Outcome.POSITIVE if day % 3 == 0 else Outcome.NEGATIVE)
        for day, (dep, reg, age, sex) in enumerate(
            [("75", "11", "29", Sex.FEMALE), ("2A", "94", "89", Sex.MALE), ("971", "01", "09", Sex.UNKNOWN),
             ("13", "93", "49", Sex.FEMALE), ("978", None, "39", Sex.MALE), ("59", "32", "69", Sex.FEMALE),
             ("75", "11", "90", Sex.MALE), ("69", "84", "19", Sex.FEMALE), ("33", "75", "59", Sex.MALE)]
        )
    ]
    produce_results(settings, results)
    wait_until(lambda: stored_results(settings) == len(results), what="results stored")
    first = export(settings, datetime.now(UTC) - timedelta(minutes=2))
    folder = settings.opendata_path
    report = validate(str(folder / kit.DATAPACKAGE_NAME))
    assert report.valid, report.flatten(["resourceName", "rowNumber", "fieldName", "type", "note"])[:10]
    package = json.loads((folder / kit.DATAPACKAGE_NAME).read_text())
    assert [r["path"] for r in package["resources"]] == [f.name for f in first.files]
    assert first.changes is None

    # a late positive collected on day 1 in Lyon: a corrected day in the next publication
    produce_results(settings, [make_result(collected_at=at(1), department="69", region="84", age_class="39")])
    wait_until(lambda: stored_results(settings) == len(results) + 1, what="late result stored")
    second = export(settings, datetime.now(UTC))
    assert second.changes is not None and second.changes["previous"] == first.stamp
    [day] = second.changes["corrected_days"]
    assert day["jour"] == jour(1) and day["fra"] == {"P": [0, 1], "T": [1, 2]}
    assert day["departments"] == {"69": {"P": [0, 1], "T": [0, 1]}}
    assert validate(str(folder / kit.DATAPACKAGE_NAME)).valid

    client = TestClient(build_app(settings))
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    for f in second.files:
        assert f.sha256 in page.text and f'href="{f.latest}"' in page.text
    assert jour(1) in page.text and "Archive: publications kept (2)" in page.text
    changelog = client.get("/changelog.json", headers={"Accept-Encoding": "gzip"})
    assert changelog.headers["content-encoding"] == "gzip"
    assert changelog.json()["publications"][0]["corrected_days"][0]["jour"] == jour(1)
