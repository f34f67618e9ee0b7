"""The SI-DEP files (SPEC §7): CSV lines, atomic publication, `index.json`, retention.

Formats follow Santé publique France's published files exactly: `;` separator, LF line ends, ISO days,
department and region codes as strings, `cl_age90` zero-padded, populations printed with 15 significant
digits as SpF's files print them (`162421`, `5712.98144471701`).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import tempfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, replace
from datetime import UTC, date, datetime, timedelta
from datetime import time as clock_time
from pathlib import Path
from typing import Any

from services.core.domain.indicators import (
    CL_AGE90,
    WINDOW_DAYS,
    History,
    Level,
    is_small_count,
    sliding_indicators,
)
from services.core.domain.model import PARIS
from services.opendata import kit

INDEX_NAME = "index.json"
LOCK_NAME = ".publish.lock"
DEP_COLUMNS = ("dep", "jour", "P", "T", "cl_age90", "pop")
REG_COLUMNS = ("reg", "jour", "P_f", "P_h", "P", "T_f", "T_h", "T", "cl_age90", "pop")
FRA_COLUMNS = ("fra", "jour", "P_f", "P_h", "P", "T_f", "T_h", "T", "cl_age90", "pop")
SLIDING_COLUMNS = ("dep", "jour", "P7", "T7", "cl_age90", "pop", "tx_incid", "tx_pos")
_STAMP_FORMAT = "%Y-%m-%d-%Hh%M"
_TIMESTAMPED = re.compile(
    r"^(sp-pos-(?:quot|7j)-(?:dep|reg|fra)|index)-(\d{4}-\d{2}-\d{2}-\d{2}h\d{2})\.(?:csv|json)$"
)
DEFAULT_PUBLISH_AT = clock_time(3, 0)


def format_population(value: float) -> str:
    return f"{value:.15g}"


def _count(threshold: int) -> Callable[[int], str]:
    if threshold <= 0:
        return str
    return lambda value: "" if is_small_count(value, threshold) else str(value)


def department_lines(history: History, threshold: int = 0) -> Iterator[str]:
    """`sp-pos-quot-dep`, one chunk per department; counts 1..threshold-1 are left empty."""
    yield ";".join(DEP_COLUMNS) + "\n"
    days = [d.isoformat() for d in history.days()]
    level = history.departments
    cell = _count(threshold)
    for dep in level.codes:
        columns = [(age, format_population(level.population[(dep, age)]), level.series[(dep, age)])
                   for age in CL_AGE90]
        yield "".join(
            f"{dep};{day};{cell(s.p[i])};{cell(s.t[i])};{age};{pop}\n"
            for i, day in enumerate(days)
            for age, pop, s in columns
        )


def _sexed_lines(columns: tuple[str, ...], level: Level, history: History) -> Iterator[str]:
    yield ";".join(columns) + "\n"
    days = [d.isoformat() for d in history.days()]
    for code in level.codes:
        per_age = [(age, format_population(level.population[(code, age)]), level.series[(code, age)])
                   for age in CL_AGE90]
        yield "".join(
            f"{code};{day};{s.p_f[i]};{s.p_h[i]};{s.p[i]};{s.t_f[i]};{s.t_h[i]};{s.t[i]};{age};{pop}\n"
            for i, day in enumerate(days)
            for age, pop, s in per_age
        )


def region_lines(history: History) -> Iterator[str]:
    return _sexed_lines(REG_COLUMNS, history.regions, history)


def france_lines(history: History) -> Iterator[str]:
    return _sexed_lines(FRA_COLUMNS, history.france, history)


def _rate(value: float | None) -> str:
    return "" if value is None else f"{value:.2f}"


def sliding_lines(history: History, threshold: int = 0) -> Iterator[str]:
    """7-day sliding sums and rates per department, from the first day with a complete window."""
    yield ";".join(SLIDING_COLUMNS) + "\n"
    days = [d.isoformat() for d in history.days()]
    level = history.departments
    cell = _count(threshold)
    for dep in level.codes:
        per_age = []
        for age in CL_AGE90:
            population = level.population[(dep, age)]
            per_age.append((age, format_population(population),
                            sliding_indicators(level.series[(dep, age)], population)))
        lines = []
        for i in range(WINDOW_DAYS - 1, len(days)):
            day = days[i]
            for age, pop, s in per_age:
                p, t = s.p[i], s.t[i]
                p_masked = is_small_count(p, threshold)
                t_masked = is_small_count(t, threshold)
                incid = "" if p_masked else _rate(s.incidence[i])
                pos = "" if p_masked or t_masked else _rate(s.positivity[i])
                lines.append(f"{dep};{day};{cell(p)};{cell(t)};{age};{pop};{incid};{pos}\n")
        yield "".join(lines)


@dataclass(frozen=True, slots=True)
class PublishedFile:
    name: str
    latest: str
    rows: int
    bytes: int
    sha256: str


@dataclass(frozen=True, slots=True)
class PublishedDocument:
    """A file of the publication kit (schema, Data Package, README, licence, changelog)."""

    name: str
    bytes: int
    sha256: str


@dataclass(frozen=True, slots=True)
class Publication:
    stamp: str
    generated_at: datetime
    first_day: date | None
    data_cut_off: date | None
    files: tuple[PublishedFile, ...]
    removed: tuple[str, ...]
    documents: tuple[PublishedDocument, ...] = ()
    changes: dict[str, Any] | None = None
    """This publication's changelog entry (corrected past days), None for a first publication."""

    @property
    def rows(self) -> int:
        return sum(f.rows for f in self.files)


def publication_stamp(at: datetime) -> str:
    """`YYYY-MM-DD-HHhMM` in Paris time, as in SpF's file names."""
    return at.astimezone(PARIS).strftime(_STAMP_FORMAT)


def _fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _replace_atomically(directory: Path, name: str, write: Callable[[Any], None]) -> None:
    """Write `name` through a temporary file of the same folder, then rename it over the old one."""
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, directory / name)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_csv(directory: Path, name: str, latest: str, chunks: Iterable[str]) -> PublishedFile:
    """Write `name` atomically, then point the stable `latest` name at the same bytes (hard link + rename)."""
    digest = hashlib.sha256()
    size = newlines = 0

    def write(handle: Any) -> None:
        nonlocal size, newlines
        for chunk in chunks:
            data = chunk.encode()
            digest.update(data)
            size += len(data)
            newlines += data.count(b"\n")
            handle.write(data)

    _replace_atomically(directory, name, write)
    tmp_latest = directory / f".{latest}.{os.getpid()}.link"
    with contextlib.suppress(FileNotFoundError):
        os.unlink(tmp_latest)
    os.link(directory / name, tmp_latest)
    os.replace(tmp_latest, directory / latest)
    return PublishedFile(name, latest, max(newlines - 1, 0), size, digest.hexdigest())


def index_document(publication: Publication, threshold: int, threshold_departments: bool) -> dict[str, Any]:
    return {
        "publication": publication.stamp,
        "generated_at": publication.generated_at.astimezone(UTC).isoformat().replace("+00:00", "Z"),
        "first_day": publication.first_day.isoformat() if publication.first_day else None,
        "data_cut_off": publication.data_cut_off.isoformat() if publication.data_cut_off else None,
        "small_count_threshold": {"threshold": threshold, "applied_to_departments": threshold_departments},
        "files": [asdict(f) for f in publication.files],
        "documents": [asdict(d) for d in publication.documents],
        "corrected_days": None if publication.changes is None else [
            d["jour"] for d in publication.changes["corrected_days"]
        ],
    }


def archived_index_name(stamp: str) -> str:
    return f"index-{stamp}.json"


def write_index(directory: Path, document: dict[str, Any], name: str = INDEX_NAME) -> None:
    data = (json.dumps(document, indent=2, ensure_ascii=False) + "\n").encode()
    _replace_atomically(directory, name, lambda handle: handle.write(data))


def read_index(directory: Path) -> dict[str, Any] | None:
    try:
        document: dict[str, Any] = json.loads((directory / INDEX_NAME).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    return document


def expired_files(names: Iterable[str], now: datetime, keep_days: int, keep: frozenset[str]) -> list[str]:
    """Timestamped files published more than `keep_days` days before `now` (never those in `keep`)."""
    horizon = now - timedelta(days=keep_days)
    expired = []
    for name in names:
        match = _TIMESTAMPED.match(name)
        if match is None or name in keep:
            continue
        stamp = datetime.strptime(match.group(2), _STAMP_FORMAT).replace(tzinfo=PARIS)
        if stamp < horizon:
            expired.append(name)
    return sorted(expired)


@contextlib.contextmanager
def publication_lock(directory: Path) -> Iterator[None]:
    """One publication at a time per folder (the daily service and `labflow opendata publish`)."""
    directory.mkdir(parents=True, exist_ok=True)
    with (directory / LOCK_NAME).open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            # temporary files of a publication that was killed half-way
            for stale in directory.glob(".*.tmp"):
                stale.unlink(missing_ok=True)
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _previous_counts(directory: Path, previous: dict[str, Any] | None) -> dict[str, kit.Counts] | None:
    """The all-ages counts of the previous publication's `sp-pos-quot-*` files, read before they are
    replaced (its timestamped file, else the stable name that still holds it)."""
    if previous is None or previous.get("data_cut_off") is None:
        return None
    counts: dict[str, kit.Counts] = {}
    for entry in previous.get("files", []):
        base = entry["latest"].removesuffix(".csv")
        if not base.startswith("sp-pos-quot-"):
            continue
        for name in (entry["name"], entry["latest"]):
            path = directory / name
            if path.is_file():
                counts[base] = kit.read_all_ages(path)
                break
    return counts


def _write_bytes(directory: Path, name: str, data: bytes) -> PublishedDocument:
    _replace_atomically(directory, name, lambda handle: handle.write(data))
    return PublishedDocument(name, len(data), hashlib.sha256(data).hexdigest())


def write_kit(
    directory: Path,
    publication: Publication,
    *,
    previous: dict[str, Any] | None,
    previous_counts: dict[str, kit.Counts] | None,
    keep_days: int,
    threshold: int,
    threshold_departments: bool,
    publish_at: clock_time,
) -> tuple[tuple[PublishedDocument, ...], dict[str, Any] | None]:
    """Schemas, Data Package, licence, changelog and README of `publication` (before `index.json`)."""
    kit_files = [
        kit.KitFile(f.latest.removesuffix(".csv"), f.name, f.latest, f.rows, f.bytes, f.sha256)
        for f in publication.files
    ]
    documents = [
        _write_bytes(directory, spec.schema_name, kit.dumps(kit.table_schema(spec)))
        for spec in kit.FILE_SPECS.values()
    ]
    stamp, generated_at = publication.stamp, publication.generated_at.astimezone(UTC)
    first_day, data_cut_off = publication.first_day, publication.data_cut_off
    package = kit.datapackage(kit_files, stamp=stamp, generated_at=generated_at, first_day=first_day,
                              data_cut_off=data_cut_off)
    documents.append(_write_bytes(directory, kit.DATAPACKAGE_NAME, kit.dumps(package)))
    documents.append(_write_bytes(directory, kit.LICENCE_FILE, kit.LICENCE.encode()))

    try:
        changelog = json.loads((directory / kit.CHANGELOG_NAME).read_text(encoding="utf-8"))
    except (FileNotFoundError, ValueError):
        changelog = None
    entry = None
    if previous_counts is not None and previous is not None:
        current = {f.base: kit.read_all_ages(directory / f.name)
                   for f in kit_files if f.base.startswith("sp-pos-quot-")}
        days = kit.corrected_days(previous_counts, current, previous.get("data_cut_off"))
        entry = kit.changelog_entry(publication.stamp, previous.get("publication"), days)
        same_stamp = [e for e in (changelog or {}).get("publications", []) if e.get("publication") == stamp]
        if entry is not None and previous.get("publication") == stamp and same_stamp:
            entry = kit.compose_entries(same_stamp[0], entry)
    documents.append(_write_bytes(directory, kit.CHANGELOG_NAME,
                                  kit.dumps(kit.updated_changelog(changelog, entry))))
    text = kit.readme(
        kit_files, stamp=stamp, generated_at=generated_at, first_day=first_day, data_cut_off=data_cut_off,
        publish_at=publish_at, keep_days=keep_days, threshold=threshold,
        threshold_departments=threshold_departments, changes=entry,
    )
    documents.append(_write_bytes(directory, kit.README_NAME, text.encode()))
    return tuple(documents), entry


def publish(
    directory: Path,
    history: History | None,
    generated_at: datetime,
    keep_days: int,
    threshold: int = 0,
    threshold_departments: bool = False,
    publish_at: clock_time = DEFAULT_PUBLISH_AT,
) -> Publication:
    """Write the four files (header only when there is no data yet), the publication kit (schemas,
    Data Package, licence, changelog, README), this publication's manifest, then `index.json`, then
    prune the publications older than `keep_days`."""
    stamp = publication_stamp(generated_at)
    dep_threshold = threshold if threshold_departments else 0
    outputs: list[tuple[str, Callable[[History], Iterator[str]], tuple[str, ...]]] = [
        ("sp-pos-quot-dep", lambda h: department_lines(h, dep_threshold), DEP_COLUMNS),
        ("sp-pos-quot-reg", region_lines, REG_COLUMNS),
        ("sp-pos-quot-fra", france_lines, FRA_COLUMNS),
        ("sp-pos-7j-dep", lambda h: sliding_lines(h, dep_threshold), SLIDING_COLUMNS),
    ]
    with publication_lock(directory):
        previous = read_index(directory)
        previous_counts = _previous_counts(directory, previous)
        files = []
        for base, lines, columns in outputs:
            chunks: Iterable[str] = lines(history) if history else [";".join(columns) + "\n"]
            files.append(write_csv(directory, f"{base}-{stamp}.csv", f"{base}.csv", chunks))
        _fsync_directory(directory)
        publication = Publication(
            stamp, generated_at,
            history.first_day if history else None, history.last_day if history else None,
            tuple(files), (),
        )
        documents, changes = write_kit(
            directory, publication, previous=previous, previous_counts=previous_counts,
            keep_days=keep_days, threshold=threshold, threshold_departments=threshold_departments,
            publish_at=publish_at,
        )
        publication = replace(publication, documents=documents, changes=changes)
        document = index_document(publication, threshold, threshold_departments)
        manifest = archived_index_name(stamp)
        write_index(directory, document, manifest)  # this publication's manifest, kept with its files
        write_index(directory, document)
        removed = expired_files(
            (p.name for p in directory.iterdir()), generated_at, keep_days,
            frozenset([*(f.name for f in files), manifest]),
        )
        for name in removed:
            (directory / name).unlink(missing_ok=True)
        _fsync_directory(directory)
    return replace(publication, removed=tuple(removed))
