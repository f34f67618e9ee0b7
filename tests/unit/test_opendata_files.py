"""File formats against SpF's published file, atomic publication, index.json, retention, schedule."""

from __future__ import annotations

import csv
import hashlib
import json
import os
from collections.abc import Iterator
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path

import pytest

from services.core.config import Settings
from services.core.domain.geography import AGE_CLASSES
from services.core.domain.indicators import CountRow, Geography, History, build_history
from services.core.domain.model import PARIS
from services.core.reference import load_geography
from services.opendata.app import next_run
from services.opendata.files import (
    INDEX_NAME,
    department_lines,
    expired_files,
    france_lines,
    publication_stamp,
    publish,
    region_lines,
    sliding_lines,
    write_csv,
)
from services.opendata.http import etag_matches

REFERENCE = Settings().reference_dir
SAMPLE = REFERENCE / "sp-pos-quot-dep.sample.csv"
NOW = datetime(2024, 5, 1, 1, 0, tzinfo=UTC)  # 03h00 in Paris


@pytest.fixture(scope="module")
def geography() -> Geography:
    return load_geography(REFERENCE)[0]


def sample_rows() -> list[dict[str, str]]:
    with SAMPLE.open(encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle, delimiter=";"))


def counts_of_sample() -> list[CountRow]:
    """The published sample as aggregate counts; what the all-ages row has beyond the classes has no age."""
    counts: list[CountRow] = []
    by_day: dict[tuple[str, str], dict[str, tuple[int, int]]] = {}
    for row in sample_rows():
        by_day.setdefault((row["dep"], row["jour"]), {})[row["cl_age90"]] = (int(row["P"]), int(row["T"]))
    for (dep, jour), classes in by_day.items():
        day = date.fromisoformat(jour)
        for age in AGE_CLASSES:
            counts.append((day, dep, age, "U", *classes[age]))
        p0, t0 = classes["0"]
        counts.append((day, dep, "", "U", p0 - sum(classes[a][0] for a in AGE_CLASSES),
                       t0 - sum(classes[a][1] for a in AGE_CLASSES)))
    return counts


@pytest.fixture(scope="module")
def sample_history(geography: Geography) -> History:
    return build_history(counts_of_sample(), geography, date(2021, 8, 24), date(2021, 9, 13))


def lines(chunks: Iterator[str]) -> list[str]:
    return "".join(chunks).splitlines(keepends=True)


def test_department_file_reproduces_the_published_sample_exactly(sample_history: History) -> None:
    published = SAMPLE.read_text(encoding="utf-8").splitlines(keepends=True)
    ours = lines(department_lines(sample_history))
    assert ours[0] == published[0] == "dep;jour;P;T;cl_age90;pop\n"
    sample_deps = {line.split(";", 1)[0] for line in published[1:]}
    # same rows, same order, same number formats (fractional populations of 978 included)
    assert [line for line in ours[1:] if line.split(";", 1)[0] in sample_deps] == published[1:]


def test_department_file_codes_and_classes(sample_history: History, geography: Geography) -> None:
    rows = list(csv.DictReader(lines(department_lines(sample_history)), delimiter=";"))
    assert len(rows) == 104 * 21 * 11
    assert [r["dep"] for r in rows[:: 21 * 11]] == list(geography.departments)
    assert {r["cl_age90"] for r in rows} == {r["cl_age90"] for r in sample_rows()}
    assert {r["dep"] for r in rows} >= {"01", "2A", "2B", "971", "975", "977", "978"}
    quiet = [r for r in rows if r["dep"] == "01"]
    assert {(r["P"], r["T"]) for r in quiet} == {("0", "0")} and quiet[10]["pop"] == "656955"


def test_region_and_france_files(sample_history: History) -> None:
    reg = list(csv.DictReader(lines(region_lines(sample_history)), delimiter=";"))
    assert list(reg[0]) == ["reg", "jour", "P_f", "P_h", "P", "T_f", "T_h", "T", "cl_age90", "pop"]
    assert len(reg) == 18 * 21 * 11 and reg[0]["reg"] == "01"
    corsica = {(r["jour"], r["cl_age90"]): r for r in reg if r["reg"] == "94"}
    first = corsica[("2021-08-24", "0")]
    assert (first["P"], first["T"], first["pop"]) == (str(59 + 63), str(3219 + 3075), str(162421 + 182258))
    assert (first["P_f"], first["P_h"]) == ("0", "0")  # the sample's counts carry no sex

    fra = list(csv.DictReader(lines(france_lines(sample_history)), delimiter=";"))
    assert list(fra[0]) == ["fra", "jour", "P_f", "P_h", "P", "T_f", "T_h", "T", "cl_age90", "pop"]
    assert {r["fra"] for r in fra} == {"FR"} and len(fra) == 21 * 11
    assert fra[10]["cl_age90"] == "0" and fra[10]["pop"] == "67114995"
    published_p = sum(int(r["P"]) for r in sample_rows()
                      if r["jour"] == "2021-08-24" and r["cl_age90"] == "0")
    assert fra[10]["P"] == str(published_p)


def test_sliding_file_by_hand(sample_history: History) -> None:
    rows = list(csv.DictReader(lines(sliding_lines(sample_history)), delimiter=";"))
    assert list(rows[0]) == ["dep", "jour", "P7", "T7", "cl_age90", "pop", "tx_incid", "tx_pos"]
    assert len(rows) == 104 * (21 - 6) * 11
    week = [r for r in sample_rows() if r["dep"] == "2A" and r["cl_age90"] == "0"][:7]
    p7, t7 = sum(int(r["P"]) for r in week), sum(int(r["T"]) for r in week)
    first = next(r for r in rows if r["dep"] == "2A" and r["cl_age90"] == "0")
    assert first["jour"] == "2021-08-30"  # the first complete 7-day window
    assert (first["P7"], first["T7"]) == (str(p7), str(t7))
    assert first["tx_incid"] == f"{100000 * p7 / 162421:.2f}"
    assert first["tx_pos"] == f"{100 * p7 / t7:.2f}"
    quiet = next(r for r in rows if r["dep"] == "01")
    assert (quiet["P7"], quiet["tx_incid"], quiet["tx_pos"]) == ("0", "0.00", "")


def test_small_counts_are_masked_in_department_files_only_when_asked(sample_history: History) -> None:
    masked = list(csv.DictReader(lines(department_lines(sample_history, threshold=11)), delimiter=";"))
    plain = list(csv.DictReader(lines(department_lines(sample_history)), delimiter=";"))
    for m, p in zip(masked, plain, strict=True):
        for column in ("P", "T"):
            assert m[column] == ("" if 1 <= int(p[column]) <= 10 else p[column])
    assert any(m["P"] == "" for m in masked)
    sliding = list(csv.DictReader(lines(sliding_lines(sample_history, threshold=11)), delimiter=";"))
    for row in sliding:
        if row["P7"] == "":
            assert row["tx_incid"] == row["tx_pos"] == ""


def test_publication_is_atomic_with_latest_names_and_checksums(
    tmp_path: Path, sample_history: History
) -> None:
    publication = publish(tmp_path, sample_history, NOW, keep_days=7)
    assert publication.stamp == "2024-05-01-03h00"
    names = sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith("."))
    assert names == sorted([
        INDEX_NAME,
        "index-2024-05-01-03h00.json",
        *(f"sp-pos-{k}-2024-05-01-03h00.csv" for k in ("quot-dep", "quot-reg", "quot-fra", "7j-dep")),
        *(f"sp-pos-{k}.csv" for k in ("quot-dep", "quot-reg", "quot-fra", "7j-dep")),
        *(f"sp-pos-{k}.schema.json" for k in ("quot-dep", "quot-reg", "quot-fra", "7j-dep")),
        "datapackage.json", "README.md", "LICENCE.txt", "changelog.json",
    ])
    assert not list(tmp_path.glob(".*.tmp"))
    index = json.loads((tmp_path / INDEX_NAME).read_text())
    assert index["generated_at"] == "2024-05-01T01:00:00Z"
    assert (index["first_day"], index["data_cut_off"]) == ("2021-08-24", "2021-09-13")
    assert len(index["files"]) == 4
    for entry in index["files"]:
        data = (tmp_path / entry["name"]).read_bytes()
        assert (tmp_path / entry["latest"]).read_bytes() == data
        assert entry["sha256"] == hashlib.sha256(data).hexdigest()
        assert entry["bytes"] == len(data) and entry["rows"] == data.count(b"\n") - 1
    assert index["files"][0]["rows"] == 104 * 21 * 11


def test_a_failed_write_leaves_the_previous_file_and_no_temporary(tmp_path: Path) -> None:
    write_csv(tmp_path, "a-1.csv", "a.csv", ["x;y\n", "1;2\n"])

    def broken() -> Iterator[str]:
        yield "x;y\n"
        raise RuntimeError("database went away")

    with pytest.raises(RuntimeError):
        write_csv(tmp_path, "a-1.csv", "a.csv", broken())
    assert (tmp_path / "a-1.csv").read_text() == (tmp_path / "a.csv").read_text() == "x;y\n1;2\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-1.csv", "a.csv"]


def test_a_new_publication_replaces_latest_and_retention_prunes(
    tmp_path: Path, sample_history: History
) -> None:
    old = NOW - timedelta(days=10)
    publish(tmp_path, None, old, keep_days=30)
    assert (tmp_path / "sp-pos-quot-dep.csv").read_text() == "dep;jour;P;T;cl_age90;pop\n"
    assert json.loads((tmp_path / INDEX_NAME).read_text())["data_cut_off"] is None
    publication = publish(tmp_path, sample_history, NOW, keep_days=7)
    assert sorted(publication.removed) == sorted([
        *(f"sp-pos-{k}-{publication_stamp(old)}.csv" for k in ("quot-dep", "quot-reg", "quot-fra", "7j-dep")),
        f"index-{publication_stamp(old)}.json",
    ])
    assert (tmp_path / "sp-pos-quot-dep.csv").stat().st_size > 500_000
    latest, stamped = tmp_path / "sp-pos-quot-dep.csv", tmp_path / "sp-pos-quot-dep-2024-05-01-03h00.csv"
    assert os.path.samefile(latest, stamped)


def test_expired_files() -> None:
    names = ["sp-pos-quot-dep-2024-04-20-03h00.csv", "sp-pos-7j-dep-2024-04-28-03h00.csv",
             "sp-pos-quot-dep.csv", "index.json", "notes-2020-01-01-03h00.csv",
             "sp-pos-quot-fra-2024-04-01-03h00.csv"]
    assert expired_files(names, NOW, 7, frozenset()) == [
        "sp-pos-quot-dep-2024-04-20-03h00.csv", "sp-pos-quot-fra-2024-04-01-03h00.csv"
    ]
    assert expired_files(names, NOW, 7, frozenset(names)) == []


def test_stamp_is_paris_time() -> None:
    assert publication_stamp(datetime(2024, 1, 15, 23, 5, tzinfo=UTC)) == "2024-01-16-00h05"


def test_next_run_follows_paris_time_across_dst() -> None:
    at = time(3, 0)
    assert next_run(datetime(2024, 5, 1, 0, 59, tzinfo=UTC), at) == datetime(2024, 5, 1, 3, 0, tzinfo=PARIS)
    assert next_run(datetime(2024, 5, 1, 1, 0, tzinfo=UTC), at) == datetime(2024, 5, 2, 3, 0, tzinfo=PARIS)
    # the night summer time begins: 03:00 CEST is 01:00 UTC
    due = next_run(datetime(2024, 3, 30, 12, 0, tzinfo=UTC), at)
    assert due.astimezone(UTC) == datetime(2024, 3, 31, 1, 0, tzinfo=UTC)
    due = next_run(datetime(2024, 10, 26, 12, 0, tzinfo=UTC), at)
    assert due.astimezone(UTC) == datetime(2024, 10, 27, 2, 0, tzinfo=UTC)


def test_if_none_match() -> None:
    assert etag_matches('"abc"', '"abc"')
    assert etag_matches('"x", W/"abc"', '"abc"')
    assert etag_matches("*", '"abc"')
    assert not etag_matches('"abd"', '"abc"') and not etag_matches(None, '"abc"')
