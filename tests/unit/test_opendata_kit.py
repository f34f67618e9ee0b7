"""The publication kit (schemas, Data Package, README, licence, changelog, archive) and its HTTP side:
landing page, Last-Modified / If-Modified-Since, gzip."""

from __future__ import annotations

import csv
import gzip
import hashlib
import json
from datetime import UTC, date, datetime, timedelta
from email.utils import format_datetime, parsedate_to_datetime
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from frictionless import validate
from prometheus_client import CollectorRegistry

from services.core.config import Settings
from services.core.domain.indicators import CountRow, Geography, History, build_history
from services.core.reference import load_geography
from services.opendata import kit
from services.opendata.files import INDEX_NAME, publication_stamp, publish
from services.opendata.http import accepts_gzip, create_app
from tests.unit.test_opendata_files import counts_of_sample

REFERENCE = Settings().reference_dir
NOW = datetime(2024, 5, 1, 1, 0, tzinfo=UTC)
FIRST, LAST = date(2021, 8, 24), date(2021, 9, 13)


@pytest.fixture(scope="module")
def geography() -> Geography:
    return load_geography(REFERENCE)[0]


@pytest.fixture(scope="module")
def counts() -> list[CountRow]:
    return counts_of_sample()


def history(counts: list[CountRow], geography: Geography, last: date = LAST) -> History:
    return build_history(counts, geography, FIRST, last)


def test_the_publication_kit_is_a_valid_frictionless_data_package(
    tmp_path: Path, counts: list[CountRow], geography: Geography
) -> None:
    publication = publish(tmp_path, history(counts, geography), NOW, keep_days=90)
    package = json.loads((tmp_path / kit.DATAPACKAGE_NAME).read_text())
    assert package["licenses"][0]["name"] == "etalab-2.0"
    resources = {r["name"]: r for r in package["resources"]}
    assert list(resources) == ["sp-pos-quot-dep", "sp-pos-quot-reg", "sp-pos-quot-fra", "sp-pos-7j-dep"]
    for f in publication.files:
        r = resources[f.latest.removesuffix(".csv")]
        described = (r["path"], r["format"], r["encoding"], r["dialect"]["delimiter"])
        assert described == (f.name, "csv", "utf-8", ";")
        assert r["hash"] == f"sha256:{hashlib.sha256((tmp_path / f.name).read_bytes()).hexdigest()}"
        assert r["bytes"] == (tmp_path / f.name).stat().st_size
        schema = json.loads((tmp_path / r["schema"]).read_text())
        with (tmp_path / f.name).open(encoding="utf-8") as handle:
            assert [fd["name"] for fd in schema["fields"]] == next(csv.reader(handle, delimiter=";"))
    report = validate(str(tmp_path / kit.DATAPACKAGE_NAME))
    assert report.valid, report.flatten(["resourceName", "rowNumber", "fieldName", "type", "note"])[:10]

    # a file altered after publication no longer matches its package
    dep = tmp_path / publication.files[0].name
    dep.write_bytes(dep.read_bytes().replace(b";0;0;0;", b";0;1;0;", 1))
    broken = validate(str(tmp_path / kit.DATAPACKAGE_NAME))
    assert not broken.valid and "hash-count" in {e[0] for e in broken.flatten(["type"])}


def test_readme_documents_every_column_the_counting_rule_and_the_licence(
    tmp_path: Path, counts: list[CountRow], geography: Geography
) -> None:
    publish(tmp_path, history(counts, geography), NOW, keep_days=90, threshold=11, threshold_departments=True)
    readme = (tmp_path / kit.README_NAME).read_text()
    for spec in kit.FILE_SPECS.values():
        assert f"`{spec.base}.csv`" in readme and spec.schema_name in readme
        for column in spec.columns:
            assert f"| `{column}` |" in readme
    for needle in ("60 days", "person-day", "collection day", "03:00 (Europe/Paris)", "Provisional",
                   "2021-09-13", "Licence Ouverte", kit.LICENCE_URL, "Counts from 1 to 10",
                   "First publication", "for 90 days"):
        assert needle in readme, needle
    licence = (tmp_path / kit.LICENCE_FILE).read_text()
    assert "Licence Ouverte / Open Licence version 2.0" in licence and kit.LICENCE_URL in licence
    index = json.loads((tmp_path / INDEX_NAME).read_text())
    documents = {d["name"]: d for d in index["documents"]}
    assert set(documents) >= {kit.README_NAME, kit.LICENCE_FILE, kit.DATAPACKAGE_NAME, kit.CHANGELOG_NAME,
                              "sp-pos-quot-dep.schema.json"}
    for name, d in documents.items():
        assert d["sha256"] == hashlib.sha256((tmp_path / name).read_bytes()).hexdigest()


def test_changelog_names_the_corrected_days_and_by_how_much(
    tmp_path: Path, counts: list[CountRow], geography: Geography
) -> None:
    first = publish(tmp_path, history(counts, geography), NOW, keep_days=90)
    assert first.changes is None
    # next day: two late positives collected on 2021-09-10 in Paris (20-29), one cancelled test in 2A
    # on 2021-08-30, and a new day after the previous cut-off (not a correction)
    late = [
        *counts,
        (date(2021, 9, 10), "75", "29", "F", 2, 2),
        (date(2021, 8, 30), "2A", "49", "U", 0, -1),
        (date(2021, 9, 14), "75", "29", "F", 5, 9),
    ]
    second = publish(tmp_path, history(late, geography, date(2021, 9, 14)), NOW + timedelta(days=1),
                     keep_days=90)
    assert second.changes is not None and second.changes["previous"] == first.stamp
    days = {d["jour"]: d for d in second.changes["corrected_days"]}
    assert sorted(days) == ["2021-08-30", "2021-09-10"]
    sep10 = days["2021-09-10"]
    p_before, p_after = sep10["fra"]["P"]
    paris_before, paris_after = sep10["departments"]["75"]["P"]
    assert p_after - p_before == 2 and paris_after - paris_before == 2
    assert list(sep10["departments"]) == ["75"] and list(sep10["regions"]) == ["11"]
    aug30 = days["2021-08-30"]
    assert aug30["departments"]["2A"]["T"][0] - aug30["departments"]["2A"]["T"][1] == 1
    assert aug30["fra"]["P"][0] == aug30["fra"]["P"][1]

    changelog = json.loads((tmp_path / kit.CHANGELOG_NAME).read_text())
    assert [e["publication"] for e in changelog["publications"]] == [second.stamp]
    assert json.loads((tmp_path / INDEX_NAME).read_text())["corrected_days"] == ["2021-08-30", "2021-09-10"]
    readme = (tmp_path / kit.README_NAME).read_text()
    assert "2 past day(s) changed" in readme and f"- 2021-09-10: P {p_before} → {p_after}" in readme

    third = publish(tmp_path, history(late, geography, date(2021, 9, 14)), NOW + timedelta(days=2),
                    keep_days=90)
    assert third.changes is not None and third.changes["corrected_days"] == []
    changelog = json.loads((tmp_path / kit.CHANGELOG_NAME).read_text())
    assert [e["publication"] for e in changelog["publications"]] == [third.stamp, second.stamp]


def test_archive_keeps_daily_publications_for_the_configured_days(
    tmp_path: Path, counts: list[CountRow], geography: Geography
) -> None:
    assert Settings.model_fields["opendata_keep_days"].default == 90  # the default archive (was 7 days)
    h = history(counts, geography)
    for days_ago in (120, 95, 89, 30, 1):
        publish(tmp_path, h, NOW - timedelta(days=days_ago), keep_days=1000)
    latest = publish(tmp_path, h, NOW, keep_days=90)
    expired = {publication_stamp(NOW - timedelta(days=d)) for d in (120, 95)}
    kept = {publication_stamp(NOW - timedelta(days=d)) for d in (89, 30, 1)} | {latest.stamp}
    assert {name.rsplit("-", 4)[0] for name in latest.removed} == {"sp-pos-quot-dep", "sp-pos-quot-reg",
                                                                   "sp-pos-quot-fra", "sp-pos-7j-dep",
                                                                   "index"}
    assert len(latest.removed) == 2 * 5
    for stamp in expired:
        assert not list(tmp_path.glob(f"*{stamp}*"))
    for stamp in kept:
        assert (tmp_path / f"index-{stamp}.json").is_file()
        assert len(list(tmp_path.glob(f"sp-pos-*-{stamp}.csv"))) == 4


@pytest.fixture
def served(tmp_path: Path, counts: list[CountRow], geography: Geography) -> tuple[TestClient, Path]:
    publish(tmp_path, history(counts, geography), NOW - timedelta(days=1), keep_days=90)
    publish(tmp_path, history(counts, geography), NOW, keep_days=90)
    return TestClient(create_app(tmp_path, CollectorRegistry())), tmp_path


def test_landing_page_lists_files_sizes_dates_and_checksums(served: tuple[TestClient, Path]) -> None:
    client, folder = served
    response = client.get("/")
    assert response.status_code == 200 and response.headers["content-type"] == "text/html; charset=utf-8"
    page = response.text
    index = json.loads((folder / INDEX_NAME).read_text())
    for entry in index["files"]:
        assert f'href="{entry["latest"]}"' in page and entry["sha256"] in page
        assert f"{entry['bytes']:,} bytes" in page or f"{entry['bytes']} bytes" in page
    for d in index["documents"]:
        assert f'href="{d["name"]}"' in page and d["sha256"] in page
    assert "Archive: publications kept (2)" in page
    assert publication_stamp(NOW - timedelta(days=1)) in page and "Licence Ouverte" in page
    assert "data cut-off" in page and "2021-09-13" in page
    modified = datetime.fromtimestamp(int((folder / "sp-pos-quot-fra.csv").stat().st_mtime), UTC)
    assert modified.strftime("%Y-%m-%d %H:%M:%S UTC") in page
    # every link on the page answers
    for name in ("README.md", "LICENCE.txt", "datapackage.json", "changelog.json",
                 "sp-pos-7j-dep.schema.json", f"index-{publication_stamp(NOW)}.json"):
        got = client.get(f"/{name}")
        assert got.status_code == 200 and got.content == (folder / name).read_bytes(), name
    assert client.get("/README.md").headers["content-type"] == "text/markdown; charset=utf-8"
    again = client.get("/", headers={"If-None-Match": response.headers["etag"]})
    assert again.status_code == 304


def test_last_modified_and_if_modified_since(served: tuple[TestClient, Path]) -> None:
    client, folder = served
    response = client.get("/sp-pos-quot-fra.csv")
    mtime = int((folder / "sp-pos-quot-fra.csv").stat().st_mtime)
    expected = format_datetime(datetime.fromtimestamp(mtime, UTC), usegmt=True)
    assert response.headers["last-modified"] == expected
    since = response.headers["last-modified"]
    assert client.get("/sp-pos-quot-fra.csv", headers={"If-Modified-Since": since}).status_code == 304
    later = format_datetime(parsedate_to_datetime(since) + timedelta(hours=1), usegmt=True)
    assert client.get("/sp-pos-quot-fra.csv", headers={"If-Modified-Since": later}).status_code == 304
    earlier = format_datetime(parsedate_to_datetime(since) - timedelta(seconds=1), usegmt=True)
    modified = client.get("/sp-pos-quot-fra.csv", headers={"If-Modified-Since": earlier})
    assert modified.status_code == 200 and modified.content == (folder / "sp-pos-quot-fra.csv").read_bytes()
    assert client.get("/sp-pos-quot-fra.csv", headers={"If-Modified-Since": "yesterday"}).status_code == 200
    # If-None-Match wins over If-Modified-Since
    stale = client.get("/sp-pos-quot-fra.csv", headers={"If-Modified-Since": later, "If-None-Match": '"x"'})
    assert stale.status_code == 200
    assert client.head("/index.json").headers["last-modified"]


def test_gzip_when_asked(served: tuple[TestClient, Path]) -> None:
    client, folder = served
    data = (folder / "sp-pos-quot-dep.csv").read_bytes()
    plain = client.get("/sp-pos-quot-dep.csv", headers={"Accept-Encoding": "identity"})
    assert "content-encoding" not in plain.headers and plain.headers["vary"] == "Accept-Encoding"
    assert plain.content == data and plain.headers["content-length"] == str(len(data))

    packed = client.get("/sp-pos-quot-dep.csv", headers={"Accept-Encoding": "gzip, deflate, br"})
    assert packed.status_code == 200
    assert packed.headers["content-encoding"] == "gzip" and packed.headers["vary"] == "Accept-Encoding"
    assert packed.content == data  # httpx decodes the gzip body
    raw = client.get("/sp-pos-quot-dep.csv", headers={"Accept-Encoding": "gzip"}).read()
    assert packed.headers["etag"] == f"W/{plain.headers['etag']}"
    again = client.get("/sp-pos-quot-dep.csv",
                       headers={"Accept-Encoding": "gzip", "If-None-Match": packed.headers["etag"]})
    assert again.status_code == 304 and again.headers["etag"] == packed.headers["etag"]
    assert raw == data
    head = client.head("/sp-pos-quot-dep.csv", headers={"Accept-Encoding": "gzip"})
    assert head.headers["content-encoding"] == "gzip" and "content-length" not in head.headers
    assert accepts_gzip("gzip;q=0.5") and accepts_gzip("*") and accepts_gzip("br, GZIP")
    assert not accepts_gzip("gzip;q=0") and not accepts_gzip("identity") and not accepts_gzip(None)
    assert not accepts_gzip("*, gzip;q=0")


def test_gzip_body_on_the_wire(served: tuple[TestClient, Path]) -> None:
    client, folder = served
    with client.stream("GET", "/sp-pos-quot-reg.csv", headers={"Accept-Encoding": "gzip"}) as response:
        wire = b"".join(response.iter_raw())
    data = (folder / "sp-pos-quot-reg.csv").read_bytes()
    assert wire[:2] == b"\x1f\x8b" and gzip.decompress(wire) == data and len(wire) < len(data) / 4


def test_two_publications_in_one_minute_tell_their_changes_from_the_one_before(
    tmp_path: Path, counts: list[CountRow], geography: Geography
) -> None:
    first = publish(tmp_path, history(counts, geography), NOW, keep_days=90)
    one = [*counts, (date(2021, 9, 10), "75", "29", "F", 1, 1), (date(2021, 9, 1), "13", "39", "M", 0, 1)]
    publish(tmp_path, history(one, geography), NOW + timedelta(days=1), keep_days=90)
    # the same minute: the 13 test is cancelled again, one more positive in 2A
    two = [*counts, (date(2021, 9, 10), "75", "29", "F", 1, 1), (date(2021, 9, 5), "2A", "49", "F", 1, 1)]
    again = publish(tmp_path, history(two, geography), NOW + timedelta(days=1, seconds=20), keep_days=90)
    assert again.changes is not None and again.changes["previous"] == first.stamp
    days = {d["jour"]: d for d in again.changes["corrected_days"]}
    assert sorted(days) == ["2021-09-05", "2021-09-10"]  # 2021-09-01 changed, then changed back
    assert list(days["2021-09-10"]["departments"]) == ["75"]
    assert list(days["2021-09-05"]["departments"]) == ["2A"]
    p_before, p_after = days["2021-09-05"]["fra"]["P"]
    assert p_after == p_before + 1
    changelog = json.loads((tmp_path / kit.CHANGELOG_NAME).read_text())
    assert [e["publication"] for e in changelog["publications"]] == [again.stamp]
