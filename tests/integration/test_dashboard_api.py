"""Dashboard API end to end: results through the real worker → aggregates → API, compared with the
open-data files published from the same database."""

from __future__ import annotations

import csv
import io
import threading
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr

from labflow_testkit.infrastructure import isolated_settings
from labflow_testkit.processes import wait_until
from labflow_testkit.results import make_result
from services.core.config import Settings
from services.core.db.engine import libpq_url, make_engine
from services.core.domain.model import LabResult, Outcome, Sex, TestKind
from services.dashboard.app import build_app
from services.dashboard.queries import refresh_rollups
from services.opendata.export import export
from services.worker.app import build_worker
from tests.conftest import Infrastructure
from tests.support import produce_results

pytestmark = pytest.mark.integration
DAY0 = datetime(2022, 1, 3, 9, 0, tzinfo=UTC)
TOKEN = "integration-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def at(days: int, hours: float = 0) -> datetime:
    return DAY0 + timedelta(days=days, hours=hours)


def jour(days: int) -> str:
    return (DAY0.date() + timedelta(days=days)).isoformat()


def stored_results(settings: Settings) -> int:
    with psycopg.connect(libpq_url(settings.require_database())) as conn:
        row = conn.execute("SELECT count(*) FROM results").fetchone()
    return 0 if row is None else int(row[0])


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle, delimiter=";"))


def lab_result(lab: str, days: int, delay_h: float, **overrides: object) -> LabResult:
    collected = at(days)
    return make_result(
        sending_facility=lab,
        collected_at=collected,
        received_at=collected + timedelta(hours=delay_h),
        **overrides,
    )


def traffic() -> list[LabResult]:
    """Several departments, regions, ages, sexes and kinds over 10 days, and two labs with known delays."""
    results = [
        lab_result("LAB-A", 0, 2, department="75", region="11", age_class="29", sex=Sex.FEMALE),
        lab_result(
            "LAB-A",
            0,
            5,
            department="75",
            region="11",
            age_class="49",
            sex=Sex.MALE,
            outcome=Outcome.NEGATIVE,
        ),
        lab_result(
            "LAB-A",
            0,
            30,
            department="92",
            region="11",
            age_class="29",
            sex=Sex.FEMALE,
            loinc="94558-4",
            test_kind=TestKind.ANTIGEN,
        ),
        lab_result("LAB-A", 2, 10, department="2A", region="94", age_class="89", sex=Sex.MALE),
        lab_result(
            "LAB-B", 0, 50, department=None, region=None, postal_code=None, age_class="49", sex=Sex.MALE
        ),
    ]
    for i in range(10):
        results.append(
            make_result(
                collected_at=at(i),
                department="75",
                region="11",
                age_class="29",
                sex=Sex.FEMALE if i % 2 else Sex.MALE,
                outcome=Outcome.POSITIVE if i % 3 == 0 else Outcome.NEGATIVE,
                received_at=at(i, 20),
            )
        )
        results.append(
            make_result(
                collected_at=at(i),
                department="13",
                region="93",
                age_class="69",
                sex=Sex.UNKNOWN,
                outcome=Outcome.NEGATIVE,
                received_at=at(i, 20),
                loinc="94558-4",
                test_kind=TestKind.ANTIGEN,
            )
        )
    # unknown age class: all-ages only; serology never counts
    results.append(
        make_result(
            collected_at=at(4),
            department="75",
            region="11",
            age_class=None,
            birth_year=None,
            received_at=at(4, 20),
        )
    )
    results.append(
        make_result(
            collected_at=at(5),
            department="75",
            region="11",
            loinc="94762-2",
            test_kind=TestKind.SEROLOGY,
            received_at=at(5, 20),
        )
    )
    return results


@pytest.fixture(scope="module")
def filled(
    infrastructure: Infrastructure, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Settings, TestClient, Path]]:
    """One database filled by the real worker, published as open data, and the dashboard over it."""
    with isolated_settings(infrastructure.kafka_bootstrap, infrastructure.database_url) as base:
        folder = tmp_path_factory.mktemp("opendata")
        settings = base.model_copy(update={"opendata_dir": folder, "dashboard_tokens": SecretStr(TOKEN)})
        running = build_worker(settings)
        thread = threading.Thread(target=running.run, daemon=True)
        thread.start()
        try:
            results = traffic()
            produce_results(settings, results)
            wait_until(lambda: stored_results(settings) == len(results), what="results stored")
        finally:
            running.stop()
            thread.join(30)
        engine = make_engine(settings.require_database())
        assert refresh_rollups(engine)
        export(settings, datetime.now(UTC))
        client = TestClient(build_app(settings, engine, clock=lambda: at(30)))
        yield settings, client, folder
        engine.dispose()


def get(client: TestClient, path: str, **params: str) -> Any:
    response = client.get(path, params=params, headers=AUTH)
    assert response.status_code == 200, response.text
    return response.json()


def by_day(body: Any) -> dict[str, Any]:
    return {d["day"]: d for d in body["days"]}


def test_series_match_the_open_data_files(filled: tuple[Settings, TestClient, Path]) -> None:
    _, client, folder = filled
    window = {"from": jour(0), "to": jour(9)}
    dep_rows = read_csv(folder / "sp-pos-quot-dep.csv")
    for dep in ("75", "13", "2A", "92"):
        for age in ("0", "29", "49", "69"):
            days = by_day(get(client, "/api/v1/indicators", level="dep", code=dep, age=age, **window))
            expected = {
                r["jour"]: (int(r["P"]), int(r["T"]))
                for r in dep_rows
                if r["dep"] == dep and r["cl_age90"] == age
            }
            assert {d: (v["p"], v["t"]) for d, v in days.items()} == expected, (dep, age)

    for level, code, name in (
        ("reg", "11", "sp-pos-quot-reg.csv"),
        ("reg", "93", "sp-pos-quot-reg.csv"),
        ("fra", "FR", "sp-pos-quot-fra.csv"),
    ):
        rows = [r for r in read_csv(folder / name) if r[level] == code]
        for age in ("0", "29", "49"):
            for sex, p_col, t_col in (("all", "P", "T"), ("F", "P_f", "T_f"), ("M", "P_h", "T_h")):
                days = by_day(
                    get(client, "/api/v1/indicators", level=level, code=code, age=age, sex=sex, **window)
                )
                expected = {r["jour"]: (int(r[p_col]), int(r[t_col])) for r in rows if r["cl_age90"] == age}
                assert {d: (v["p"], v["t"]) for d, v in days.items()} == expected, (level, code, age, sex)

    # France counts the unknown department (LAB-B's) and the unknown age class
    fra = by_day(get(client, "/api/v1/indicators", level="fra", **window))
    assert fra[jour(0)]["t"] == 6 and fra[jour(4)]["t"] == 3

    # 7-day sums, incidence and positivity: the sp-pos-7j-dep file, digit for digit
    sliding = read_csv(folder / "sp-pos-7j-dep.csv")
    assert sliding
    for row in sliding:
        if row["dep"] not in ("75", "13", "2A") or row["cl_age90"] not in ("0", "29"):
            continue
        day = by_day(
            get(
                client,
                "/api/v1/indicators",
                level="dep",
                code=row["dep"],
                age=row["cl_age90"],
                **{"from": row["jour"], "to": row["jour"]},
            )
        )[row["jour"]]
        assert (day["p7"], day["t7"]) == (int(row["P7"]), int(row["T7"]))
        assert f"{day['incidence']:.2f}" == row["tx_incid"]
        assert (f"{day['positivity']:.2f}" if day["positivity"] is not None else "") == row["tx_pos"]


def test_map_gives_each_department_the_7_day_file_values(filled: tuple[Settings, TestClient, Path]) -> None:
    _, client, folder = filled
    body = get(client, "/api/v1/map", day=jour(9))
    departments = {d["department"]: d for d in body["departments"]}
    assert len(departments) == 104
    expected = {
        r["dep"]: r
        for r in read_csv(folder / "sp-pos-7j-dep.csv")
        if r["jour"] == jour(9) and r["cl_age90"] == "0"
    }
    for dep, row in expected.items():
        d = departments[dep]
        assert (d["p7"], d["t7"]) == (int(row["P7"]), int(row["T7"])), dep
        assert f"{d['incidence']:.2f}" == row["tx_incid"], dep
        assert (f"{d['positivity']:.2f}" if d["positivity"] is not None else "") == row["tx_pos"], dep
    # week on week: the incidence 7 days before, as the department's own series gives it
    series = by_day(
        get(client, "/api/v1/indicators", level="dep", code="75", **{"from": jour(2), "to": jour(9)})
    )
    assert departments["75"]["incidence_previous_week"] == series[jour(2)]["incidence"]
    csv_text = client.get("/api/v1/map", params={"day": jour(9), "format": "csv"}, headers=AUTH).text
    assert csv_text.splitlines()[0] == (
        "department;name;region;region_name;p7;t7;incidence;positivity;incidence_previous_week;"
        "incidence_change_pct;small_count"
    )
    assert len(csv_text.splitlines()) == 105


def test_lab_reporting_delays_and_silent_labs(filled: tuple[Settings, TestClient, Path]) -> None:
    _, client, _ = filled
    body = get(client, "/api/v1/labs/reporting", **{"from": jour(0), "to": jour(2)})
    days = {(r["lab"], r["day"]): r for r in body["days"]}
    a0 = days[("LAB-A", jour(0))]
    assert (a0["results"], a0["positives"], a0["median_delay_hours"], a0["p90_delay_hours"]) == (2, 1, 2, 5)
    # the 30 h one was received the next day
    assert (days[("LAB-A", jour(1))]["results"], days[("LAB-A", jour(1))]["median_delay_hours"]) == (1, 30)
    period = {r["lab"]: r for r in body["period"]}
    assert (period["LAB-A"]["median_delay_hours"], period["LAB-A"]["p90_delay_hours"]) == (5, 30)
    assert period["LAB-B"]["late"] and not period["LAB-A"]["late"]
    # LAB-A and LAB-B last received on day 2: judged at the end of day 4 they are silent, LAB-TEST
    # (received every day) is not; at the end of day 2 nobody is
    later = get(client, "/api/v1/labs/reporting", **{"from": jour(3), "to": jour(4)})
    silent = {s["lab"]: s for s in later["silent"]}
    assert set(silent) == {"LAB-A", "LAB-B"}
    assert silent["LAB-B"]["last_reception_day"] == jour(2)
    assert silent["LAB-B"]["silent_hours_at_least"] == 48
    assert body["silent"] == []
    day3 = get(client, "/api/v1/labs/reporting", **{"from": jour(3), "to": jour(3)})["silent"]
    assert {(s["lab"], s["silent_hours_at_least"]) for s in day3} == {("LAB-A", 24), ("LAB-B", 24)}
    csv_text = client.get(
        "/api/v1/labs/reporting",
        headers=AUTH,
        params={"from": jour(3), "to": jour(4), "view": "silent", "format": "csv"},
    ).text
    rows = list(csv.DictReader(io.StringIO(csv_text), delimiter=";"))
    assert {r["lab"] for r in rows} >= {"LAB-B"}


def test_every_endpoint_answers_csv(filled: tuple[Settings, TestClient, Path]) -> None:
    _, client, _ = filled
    response = client.get(
        "/api/v1/indicators",
        headers=AUTH,
        params={"level": "reg", "code": "11", "from": jour(0), "to": jour(9), "format": "csv"},
    )
    assert response.status_code == 200 and response.headers["content-type"] == "text/csv; charset=utf-8"
    assert "attachment" in response.headers["content-disposition"]
    rows = list(csv.DictReader(io.StringIO(response.text), delimiter=";"))
    assert len(rows) == 10 and rows[0]["day"] == jour(0)
    assert set(rows[0]) == {"day", "p", "t", "p7", "t7", "incidence", "positivity", "provisional"}
    # the clock is 30 days after the data: nothing is provisional any more
    assert {r["provisional"] for r in rows} == {"0"}


@pytest.mark.parametrize(
    ("params", "reason"),
    [
        ({"level": "city", "from": "2022-01-01", "to": "2022-01-02"}, "level"),
        ({"level": "dep", "code": "99", "from": "2022-01-01", "to": "2022-01-02"}, "unknown dep code"),
        ({"level": "fra", "from": "2022-13-01", "to": "2022-01-02"}, "date"),
        ({"level": "fra", "from": "2022-01-05", "to": "2022-01-02"}, "is after"),
        ({"level": "fra", "from": "2022-01-01", "to": "2022-01-02", "age": "42"}, "age class"),
        ({"level": "fra", "from": "2022-01-01", "to": "2022-01-02", "sex": "X"}, "sex"),
        ({"level": "fra", "from": "2022-01-01", "to": "2022-01-02", "kind": "pcr"}, "test kind"),
    ],
)
def test_invalid_input_is_a_422_with_a_reason(
    filled: tuple[Settings, TestClient, Path], params: dict[str, str], reason: str
) -> None:
    _, client, _ = filled
    response = client.get("/api/v1/indicators", params=params, headers=AUTH)
    assert response.status_code == 422
    assert reason in str(response.json()["detail"])


def test_labs_period_is_bounded_and_access_is_required(filled: tuple[Settings, TestClient, Path]) -> None:
    _, client, _ = filled
    too_long = client.get(
        "/api/v1/labs/reporting", params={"from": "2022-01-01", "to": "2022-03-01"}, headers=AUTH
    )
    assert too_long.status_code == 422 and "at most 14 days" in too_long.json()["detail"]
    for path in (
        "/api/v1/indicators?level=fra&from=2022-01-01&to=2022-01-02",
        "/api/v1/map?day=2022-01-01",
        "/api/v1/labs/reporting",
        "/api/v1/meta",
    ):
        assert client.get(path).status_code == 401
        assert client.get(path, headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert client.get("/healthz").status_code == 200
    assert client.get("/readyz").status_code == 200
    assert "labflow_dashboard_request_seconds" in client.get("/metrics").text
    meta = get(client, "/api/v1/meta")
    assert (meta["first_day"], meta["last_day"]) == (jour(0), jour(9))
    assert date.fromisoformat(str(meta["last_day"])) == DAY0.date() + timedelta(days=9)


def test_names_not_codes(filled: tuple[Settings, TestClient, Path]) -> None:
    """Department names from INSEE's geographic code (vendored at build), region names, the page's rules."""
    _, client, _ = filled
    meta = get(client, "/api/v1/meta")
    departments = {d["code"]: d for d in meta["departments"]}
    assert len(departments) == 104
    assert departments["69"]["name"] == "Rhône" and departments["2A"]["name"] == "Corse-du-Sud"
    assert departments["971"]["name"] == "Guadeloupe" and departments["978"]["name"] == "Saint-Martin"
    assert all(d["name"] != d["code"] for d in meta["departments"]), "every department has a name"
    assert {r["code"]: r["name"] for r in meta["regions"]}["84"] == "Auvergne-Rhône-Alpes"
    assert meta["rules"] == {
        "provisional_days": 3, "small_count_p7": 20, "incidence_thresholds": [10, 50, 150, 250, 500, 1000],
        "late_median_hours": 24, "max_age_weeks": 26,
    }
    body = get(client, "/api/v1/map", day=jour(9))
    paris = next(d for d in body["departments"] if d["department"] == "75")
    assert (paris["name"], paris["region"], paris["region_name"]) == ("Paris", "11", "Île-de-France")
    # fewer than 20 positives over 7 days: flagged, whatever the rate
    assert all(d["small_count"] == (d["p7"] < 20) for d in body["departments"])
    assert paris["small_count"] and paris["incidence"] is not None
    saint_martin = next(d for d in body["departments"] if d["department"] == "978")
    assert saint_martin["region"] is None and saint_martin["region_name"] is None


def test_lab_names_from_the_registry(filled: tuple[Settings, TestClient, Path]) -> None:
    settings, client, _ = filled
    with psycopg.connect(libpq_url(settings.require_database())) as conn:
        conn.execute(
            "INSERT INTO labs (lab_id, name) VALUES ('LAB-A', 'Laboratoire Alpha Biologie') "
            "ON CONFLICT (lab_id) DO NOTHING"
        )
    body = get(client, "/api/v1/labs/reporting", **{"from": jour(0), "to": jour(2)})
    period = {r["lab"]: r for r in body["period"]}
    assert period["LAB-A"]["name"] == "Laboratoire Alpha Biologie"
    assert period["LAB-B"]["name"] is None  # not in the registry: the page shows its id
    assert {r["name"] for r in body["days"] if r["lab"] == "LAB-A"} == {"Laboratoire Alpha Biologie"}
    later = get(client, "/api/v1/labs/reporting", **{"from": jour(3), "to": jour(4)})
    assert {s["lab"]: s["name"] for s in later["silent"]}["LAB-A"] == "Laboratoire Alpha Biologie"
    csv_text = client.get(
        "/api/v1/labs/reporting", headers=AUTH, params={"from": jour(0), "to": jour(2), "view": "period",
                                                        "format": "csv"},
    ).text
    assert csv_text.splitlines()[0].startswith("lab;name;day;results;positives;")
    assert "LAB-A;Laboratoire Alpha Biologie;" in csv_text


def test_age_week_heat_map(filled: tuple[Settings, TestClient, Path]) -> None:
    """Blocks of 7 days ending on `to`: the last one is the 7-day file's P7, T7 and rates per age class."""
    _, client, folder = filled
    body = get(client, "/api/v1/ages", level="dep", code="75", to=jour(9), weeks="2")
    cells = {(c["first_day"], c["age_class"]): c for c in body["cells"]}
    assert len(body["cells"]) == 2 * 10
    assert {c["last_day"] for c in body["cells"]} == {jour(2), jour(9)}
    sliding = {(r["cl_age90"]): r for r in read_csv(folder / "sp-pos-7j-dep.csv")
               if r["dep"] == "75" and r["jour"] == jour(9)}
    for age in ("29", "49", "89"):
        cell, row = cells[(jour(3), age)], sliding[age]
        assert (cell["p"], cell["t"]) == (int(row["P7"]), int(row["T7"])), age
        assert f"{cell['incidence']:.2f}" == row["tx_incid"], age
        assert (f"{cell['positivity']:.2f}" if cell["positivity"] is not None else "") == row["tx_pos"], age
    daily = [r for r in read_csv(folder / "sp-pos-quot-dep.csv")
             if r["dep"] == "75" and r["cl_age90"] == "29" and jour(-4) <= r["jour"] <= jour(2)]
    assert cells[(jour(-4), "29")]["p"] == sum(int(r["P"]) for r in daily)
    fra = get(client, "/api/v1/ages", level="fra", to=jour(9), weeks="1", sex="F")
    assert all(c["incidence"] is None for c in fra["cells"])  # no population by sex
    csv_text = client.get("/api/v1/ages", headers=AUTH, params={"level": "reg", "code": "11", "to": jour(9),
                                                                "format": "csv"}).text
    assert csv_text.splitlines()[0] == "first_day;last_day;age_class;p;t;incidence;positivity;provisional"
    assert len(csv_text.splitlines()) == 1 + 12 * 10
    for bad, reason in (({"weeks": "0"}, "weeks"), ({"weeks": "27"}, "weeks"), ({"code": "99"}, "unknown")):
        response = client.get("/api/v1/ages", headers=AUTH,
                              params={"level": "dep", "code": "75", "to": jour(9), **bad})
        assert response.status_code == 422 and reason in response.json()["detail"]


def test_the_last_three_collection_days_are_provisional(filled: tuple[Settings, TestClient, Path]) -> None:
    settings, _, _ = filled
    engine = make_engine(settings.require_database())
    try:
        client = TestClient(build_app(settings, engine, clock=lambda: at(9, 3)))  # "today" is day 9
        days = get(client, "/api/v1/indicators", level="fra", **{"from": jour(0), "to": jour(9)})["days"]
        assert [d["day"] for d in days if d["provisional"]] == [jour(7), jour(8), jour(9)]
        ages = get(client, "/api/v1/ages", level="fra", to=jour(9), weeks="2")["cells"]
        assert {(c["last_day"], c["provisional"]) for c in ages} == {(jour(2), False), (jour(9), True)}
        assert get(client, "/api/v1/meta")["today"] == jour(9)
    finally:
        engine.dispose()


def test_lab_names_need_only_a_column_grant(filled: tuple[Settings, TestClient, Path]) -> None:
    """The dashboard reads `labs (lab_id, name)` only; a role without that grant still gets the report
    (ids instead of names), one with `GRANT SELECT (lab_id, name)` gets the names."""
    import uuid

    from services.dashboard.queries import lab_report

    settings, _, _ = filled
    url = libpq_url(settings.require_database())
    role = f"dashboard_probe_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"CREATE ROLE {role} NOLOGIN")
        conn.execute(f"GRANT SELECT ON lab_daily, lab_delays TO {role}")
        conn.execute("INSERT INTO labs (lab_id, name) VALUES ('LAB-B', 'Laboratoire Bêta') "
                     "ON CONFLICT (lab_id) DO NOTHING")
    try:
        def names() -> dict[str, str | None]:
            with psycopg.connect(url) as conn:
                conn.execute(f"SET ROLE {role}")
                report = lab_report(conn, DAY0.date(), DAY0.date() + timedelta(days=2), at(30))
            return {r.lab: r.name for r in report.period}

        assert names()["LAB-B"] is None
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(f"GRANT SELECT (lab_id, name) ON labs TO {role}")
        assert names()["LAB-B"] == "Laboratoire Bêta"
    finally:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(f"REVOKE ALL ON lab_daily, lab_delays, labs FROM {role}")
            conn.execute(f"DROP ROLE {role}")
