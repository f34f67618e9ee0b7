"""The publication kit written next to the SI-DEP files: what a reuser needs to use them unaided.

- a Table Schema per file (`<file>.schema.json`) and a Frictionless Data Package (`datapackage.json`:
  path, format, encoding, `;` dialect, schema, sha256 hash and bytes of every file);
- `README.md`: the data dictionary of every file, the counting rule, the update schedule, which days
  are still provisional, the licence and what changed since the previous publication;
- `LICENCE.txt`: Licence Ouverte / Etalab 2.0;
- `changelog.json`: per publication, the past `jour` values whose figures changed since the previous
  publication (late and corrected results), and by how much.

Everything here is pure: the column definitions are the one source of the schemas and the README.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, time
from pathlib import Path
from typing import Any

from services.core.domain.indicators import CL_AGE90

LICENCE_NAME = "Licence Ouverte / Open Licence version 2.0 (Etalab 2.0)"
LICENCE_ID = "etalab-2.0"
LICENCE_URL = "https://www.etalab.gouv.fr/licence-ouverte-open-licence/"
LICENCE_TEXT_URL = "https://www.etalab.gouv.fr/wp-content/uploads/2017/04/ETALAB-Licence-Ouverte-v2.0.pdf"
DATAPACKAGE_NAME = "datapackage.json"
README_NAME = "README.md"
LICENCE_FILE = "LICENCE.txt"
CHANGELOG_NAME = "changelog.json"
CHANGELOG_KEEP = 400
"""Publications described in `changelog.json` (older entries are dropped)."""
PROVISIONAL_DAYS = 7
"""Days before the data cut-off still expected to change much (late results, corrections)."""
DEP_PATTERN = r"^(0[1-9]|[1-8][0-9]|9[0-5]|2A|2B|97[1-8])$"


@dataclass(frozen=True, slots=True)
class Column:
    name: str
    type: str
    title: str
    description: str
    constraints: Mapping[str, Any] | None = None


_COUNT = {"minimum": 0}
_COLUMNS: dict[str, Column] = {
    c.name: c
    for c in (
        Column("dep", "string", "Department",
               "Department of residence of the person tested: INSEE code as a string (`01` … `95`, `2A`, "
               "`2B`, `971` … `976`, `975`, `977`, `978`).", {"required": True, "pattern": DEP_PATTERN}),
        Column("reg", "string", "Region",
               "Region of residence: INSEE region code as a string (`01` … `06`, `11` … `94`). 975, 977 and "
               "978 belong to no region.", {"required": True, "pattern": r"^\d{2}$"}),
        Column("fra", "string", "France", "Always `FR` (the whole country, residence unknown included).",
               {"required": True, "enum": ["FR"]}),
        Column("jour", "date", "Collection day",
               "Day the specimen was collected (ISO 8601 `YYYY-MM-DD`, in the residence department's time "
               "zone), not the day the result arrived.", {"required": True}),
        Column("P", "integer", "Positive people",
               "People newly positive that day (RT-PCR or antigen), after person deduplication (see the "
               "counting rule).", _COUNT),
        Column("T", "integer", "People tested",
               "People tested that day (RT-PCR or antigen), after person deduplication; includes P.", _COUNT),
        Column("P_f", "integer", "Positive women", "P for women.", _COUNT),
        Column("P_h", "integer", "Positive men", "P for men.", _COUNT),
        Column("T_f", "integer", "Women tested", "T for women.", _COUNT),
        Column("T_h", "integer", "Men tested", "T for men.", _COUNT),
        Column("cl_age90", "string", "Age class",
               "`0` all ages; `09` 0–9 years, `19` 10–19, … `89` 80–89, `90` 90 and over (age at "
               "collection). People of unknown age count only in `0`.",
               {"required": True, "enum": list(CL_AGE90)}),
        Column("pop", "number", "Population",
               "Reference population of the geography and age class (Santé publique France's; summed for "
               "regions and France).", {"required": True, "minimum": 0}),
        Column("P7", "integer", "Positive people, 7 days",
               "Sum of P over the 7 days ending on `jour`.", _COUNT),
        Column("T7", "integer", "People tested, 7 days",
               "Sum of T over the 7 days ending on `jour`.", _COUNT),
        Column("tx_incid", "number", "Incidence rate, 7 days",
               "100000 × P7 / pop, 2 decimals: new positive people per 100,000 inhabitants over 7 days.",
               {"minimum": 0}),
        Column("tx_pos", "number", "Positivity rate, 7 days",
               "100 × P7 / T7, 2 decimals (empty when T7 = 0).", {"minimum": 0, "maximum": 100}),
    )
}


@dataclass(frozen=True, slots=True)
class FileSpec:
    base: str
    title: str
    description: str
    columns: tuple[str, ...]

    @property
    def schema_name(self) -> str:
        return f"{self.base}.schema.json"


FILE_SPECS: dict[str, FileSpec] = {
    s.base: s
    for s in (
        FileSpec("sp-pos-quot-dep", "Daily tests and positives per department",
                 "Per department of residence, collection day and age class: people tested (T) and newly "
                 "positive (P).", ("dep", "jour", "P", "T", "cl_age90", "pop")),
        FileSpec("sp-pos-quot-reg", "Daily tests and positives per region, by sex",
                 "Per region of residence, collection day and age class: P and T, for women (`_f`), men "
                 "(`_h`) and everyone (people of unknown sex count only in P and T).",
                 ("reg", "jour", "P_f", "P_h", "P", "T_f", "T_h", "T", "cl_age90", "pop")),
        FileSpec("sp-pos-quot-fra", "Daily tests and positives for France, by sex",
                 "For France (people of unknown residence included), per collection day and age class: P "
                 "and T for women, men and everyone.",
                 ("fra", "jour", "P_f", "P_h", "P", "T_f", "T_h", "T", "cl_age90", "pop")),
        FileSpec("sp-pos-7j-dep", "7-day incidence and positivity per department",
                 "Per department, day and age class: sums over the 7 days ending on `jour`, incidence and "
                 "positivity rates. Rows start on the 7th day of the history (first complete window).",
                 ("dep", "jour", "P7", "T7", "cl_age90", "pop", "tx_incid", "tx_pos")),
    )
}


def table_schema(spec: FileSpec) -> dict[str, Any]:
    """Frictionless Table Schema of one file."""
    fields = []
    for name in spec.columns:
        column = _COLUMNS[name]
        field: dict[str, Any] = {
            "name": name, "type": column.type, "title": column.title, "description": column.description,
        }
        if column.type == "date":
            field["format"] = "%Y-%m-%d"
        if column.constraints:
            field["constraints"] = dict(column.constraints)
        fields.append(field)
    return {
        "$schema": "https://frictionlessdata.io/schemas/table-schema.json",
        "fields": fields,
        # masked small counts (and a positivity without tests) are empty cells
        "missingValues": [""],
        "primaryKey": [spec.columns[0], "jour", "cl_age90"],
    }


@dataclass(frozen=True, slots=True)
class KitFile:
    """One published CSV as the kit describes it."""

    base: str
    name: str
    latest: str
    rows: int
    bytes: int
    sha256: str


def datapackage(
    files: Sequence[KitFile], *, stamp: str, generated_at: datetime, first_day: date | None,
    data_cut_off: date | None,
) -> dict[str, Any]:
    """Frictionless Data Package of one publication: its timestamped (immutable) files, so a download
    of the package and its files matches its hashes even while a newer publication replaces the
    stable names."""
    resources = []
    for f in files:
        spec = FILE_SPECS[f.base]
        resources.append({
            "name": f.base,
            "title": spec.title,
            "description": f"{spec.description} Stable name of the latest version: `{f.latest}`.",
            "path": f.name,
            "profile": "tabular-data-resource",
            "format": "csv",
            "mediatype": "text/csv",
            "encoding": "utf-8",
            "dialect": {"delimiter": ";", "header": True, "lineTerminator": "\n", "quoteChar": '"',
                        "doubleQuote": True},
            "schema": spec.schema_name,
            "hash": f"sha256:{f.sha256}",
            "bytes": f.bytes,
        })
    return {
        "profile": "tabular-data-package",
        "name": "labflow-sp-pos",
        "title": "SI-DEP: people tested and positive for SARS-CoV-2 (LabFlow publication)",
        "description": (
            "Daily people tested and newly positive for SARS-CoV-2 (RT-PCR and antigen tests) per "
            "department, region and France, by collection day, age class and sex, in the format of Santé "
            "publique France's SI-DEP open-data files. See README.md for the counting rule."
        ),
        "version": stamp,
        "created": generated_at.isoformat().replace("+00:00", "Z"),
        "temporalCoverage": {
            "start": first_day.isoformat() if first_day else None,
            "end": data_cut_off.isoformat() if data_cut_off else None,
        },
        "licenses": [{"name": LICENCE_ID, "title": LICENCE_NAME, "path": LICENCE_URL}],
        "keywords": ["covid-19", "sars-cov-2", "si-dep", "tests", "incidence", "positivity"],
        "resources": resources,
    }


LICENCE = f"""{LICENCE_NAME}
{"=" * len(LICENCE_NAME)}

Official text: {LICENCE_URL}
(PDF: {LICENCE_TEXT_URL}). Licence reference of French public-sector open data (décret n° 2017-638 du
27 avril 2017), compatible with CC BY 4.0, the Open Government Licence v3.0 and ODC-BY.

This is a faithful summary; the official text above prevails.

The "Reuser" is free to reuse the "Information" made available by the "Producer" (here, the files of
this folder), worldwide, for an unlimited period, free of charge:
  - to reproduce, copy, publish and transmit it;
  - to disseminate and redistribute it;
  - to adapt, modify, extract and transform it, in particular to create "Derived Information";
  - to exploit it commercially, for example by combining it with other information or by including
    it in a product or application.

Provided that the Reuser attributes the source: at least the name of the Producer and the date of
the Information's last update (for example with a link to this publication or to its `index.json`).
The Reuser may not suggest that the Producer took part in or endorses the reuse.

The Information is made available as it is, without other guarantees than those the law provides.
The Producer does not guarantee that it is free of errors or irregularities; it is not liable for
any loss or damage that its reuse may cause. The reuse of personal data the Information would
contain is subject to the GDPR and the French Data Protection Act: these files carry none (aggregate
counts only; see README.md).

Attribution for these files: "LabFlow, SI-DEP open data, publication <YYYY-MM-DD-HHhMM>".
"""


def _column_table(spec: FileSpec) -> str:
    rows = ["| column | type | definition |", "|---|---|---|"]
    for name in spec.columns:
        column = _COLUMNS[name]
        rows.append(f"| `{name}` | {column.type} | {column.description} |")
    return "\n".join(rows)


def _changes_text(entry: Mapping[str, Any] | None, limit: int = 15) -> str:
    if entry is None:
        return "First publication of this folder: nothing to compare with."
    days = entry.get("corrected_days", [])
    if not days:
        return f"No past day changed since the previous publication ({entry.get('previous')})."
    lines = [f"{len(days)} past day(s) changed since the previous publication ({entry.get('previous')}); "
             "France, all ages (P, T before → after):", ""]
    for day in days[:limit]:
        fra = day.get("fra") or {}
        p, t = fra.get("P", [None, None]), fra.get("T", [None, None])
        lines.append(f"- {day['jour']}: P {p[0]} → {p[1]}, T {t[0]} → {t[1]}; "
                     f"{day['departments_changed']} department(s) changed")
    if len(days) > limit:
        lines.append(f"- … and {len(days) - limit} more in `{CHANGELOG_NAME}`")
    return "\n".join(lines)


def readme(
    files: Sequence[KitFile], *, stamp: str, generated_at: datetime, first_day: date | None,
    data_cut_off: date | None, publish_at: time, keep_days: int, threshold: int,
    threshold_departments: bool, changes: Mapping[str, Any] | None,
) -> str:
    """README.md of the publication: data dictionary, counting rule, schedule, licence, changes."""
    cut_off = data_cut_off.isoformat() if data_cut_off else "none (no data yet)"
    provisional = (f"the {PROVISIONAL_DAYS} days up to the data cut-off ({cut_off})"
                   if data_cut_off else "none")
    if threshold > 0:
        levels = "the department files and " if threshold_departments else ""
        masking = (f"Counts from 1 to {threshold - 1} are written as an empty cell (0 stays 0) in "
                   f"{levels}any file finer than the department, and a rate computed from a masked count "
                   "is empty too. Regions and France are never masked.")
    else:
        masking = "No small-count masking is applied to these files (department is the finest level)."
    parts = [
        "# SI-DEP open data: people tested and positive for SARS-CoV-2",
        "",
        f"Publication **{stamp}** (generated {generated_at.isoformat().replace('+00:00', 'Z')}), "
        f"collection days **{first_day.isoformat() if first_day else '—'} → {cut_off}**.",
        "",
        "Files in the format of Santé publique France's SI-DEP open data (`sp-pos-quot-*`, "
        "`sp-pos-7j-dep`): existing scripts load them unchanged. Aggregate counts only: no person-level "
        "data.",
        "",
        "## Files",
        "",
        "| file (latest, stable name) | this publication | rows | bytes | sha256 |",
        "|---|---|---|---|---|",
        *(f"| `{f.latest}` | `{f.name}` | {f.rows} | {f.bytes} | `{f.sha256}` |" for f in files),
        "",
        "Also here: `index.json` (manifest: files, rows, sizes, SHA-256, data cut-off, generation time), "
        f"`{DATAPACKAGE_NAME}` (Frictionless Data Package), a Table Schema per file (`*.schema.json`), "
        f"`{CHANGELOG_NAME}` (corrected days per publication), `{LICENCE_FILE}`, and the timestamped "
        "files of earlier publications.",
        "",
        "Format: UTF-8, `;` separator, LF line ends, a header row, ISO 8601 days, department and region "
        "codes as strings (`01`, `2A`, `971`), `cl_age90` zero-padded. One row per geography × day × age "
        "class, zeros included, from the first collection day with data to the data cut-off.",
        "",
    ]
    for f in files:
        spec = FILE_SPECS[f.base]
        parts += [f"### `{f.latest}` — {spec.title}", "", spec.description, "",
                  _column_table(spec), "",
                  f"Primary key: `{spec.columns[0]}`, `jour`, `cl_age90`. Table Schema: "
                  f"`{spec.schema_name}`.", ""]
    parts += [
        "## Counting rule (Santé publique France's person deduplication)",
        "",
        "- Only virological tests count: RT-PCR (and other nucleic acid amplification tests) and antigen "
        "tests; serology does not. Cancelled results do not count; a corrected result replaces the "
        "original.",
        "- People, not tests: a person is identified by a pseudonym of their national health identifier "
        "(INS), else of their identity traits. All of a person's tests of one collection day make one "
        "*person-day*, positive if any test is positive, else negative.",
        "- A person-day less than 60 days (1 to 60) after one of the person's positive person-days is "
        "*covered*: it counts in neither P nor T. An uncovered positive person-day counts in P and T, an "
        "uncovered negative one in T.",
        "- `jour` is the specimen collection day. People whose department of residence is unknown count "
        "only in the France file; people of unknown age only in the all-ages (`0`) rows; people of "
        "unknown sex only in P and T (not `_f`/`_h`).",
        "- A result that arrives late, or a correction, changes the day its specimen was collected: every "
        "publication carries the whole history, and past days can change (see below).",
        f"- {masking}",
        "",
        "## Update schedule and provisional days",
        "",
        f"- Published every day at {publish_at.strftime('%H:%M')} (Europe/Paris), and on demand. The "
        "data cut-off is the last collection day with data before the publication day (which is still "
        "incomplete).",
        f"- Provisional: {provisional}. Labs transmit within 24 h, but late results and corrections keep "
        "arriving for some days: the latest days are revised upwards in the following publications. "
        "Older days rarely change.",
        f"- Earlier publications stay here under their timestamped names for {keep_days} days "
        "(`sp-pos-quot-dep-YYYY-MM-DD-HHhMM.csv`, Paris time, with their manifest "
        "`index-YYYY-MM-DD-HHhMM.json`); the latest one is never removed.",
        "",
        "## What changed since the previous publication",
        "",
        _changes_text(changes),
        "",
        f"`{CHANGELOG_NAME}` keeps this per publication: each past `jour` whose figures changed, the France "
        "all-ages P and T before and after, the number of department rows changed and the departments' "
        "differences (all-ages rows of `sp-pos-quot-dep`).",
        "",
        "## Licence",
        "",
        f"{LICENCE_NAME}: {LICENCE_URL} (summary in `{LICENCE_FILE}`). Attribute the source as "
        f"\"LabFlow, SI-DEP open data, publication {stamp}\".",
        "",
    ]
    return "\n".join(parts)


# --- corrected days -------------------------------------------------------------------------------

Counts = dict[tuple[str, str], tuple[str, str]]
"""(code, jour) → (P, T) as written (an empty string is a masked count), all-ages rows only."""


def read_all_ages(path: Path) -> Counts:
    """The all-ages (`cl_age90` = 0) P and T of a published `sp-pos-quot-*` file."""
    counts: Counts = {}
    with path.open(encoding="utf-8", newline="") as handle:
        reader = csv.reader(handle, delimiter=";")
        header = next(reader, None)
        if header is None:
            return counts
        code_i, jour_i, p_i, t_i, age_i = (header.index(c) for c in (header[0], "jour", "P", "T", "cl_age90"))
        for row in reader:
            if row[age_i] == "0":
                counts[(row[code_i], row[jour_i])] = (row[p_i], row[t_i])
    return counts


def _number(value: str) -> int | None:
    return int(value) if value else None


def _delta(before: tuple[str, str], after: tuple[str, str]) -> dict[str, list[int | None]]:
    return {"P": [_number(before[0]), _number(after[0])], "T": [_number(before[1]), _number(after[1])]}


def corrected_days(
    previous: Mapping[str, Counts], current: Mapping[str, Counts], previous_cut_off: str | None,
) -> list[dict[str, Any]]:
    """Past days (up to the previous publication's cut-off) whose all-ages figures changed.

    `previous` / `current`: per file base (`sp-pos-quot-dep`, `-reg`, `-fra`), the all-ages counts.
    A day that the previous publication did not have (a new day after its cut-off) is not a correction;
    a day it had that is now gone (all its results cancelled) is one, with zeros after.
    """
    by_day: dict[str, dict[str, Any]] = {}
    zero = ("0", "0")
    for base in ("sp-pos-quot-fra", "sp-pos-quot-reg", "sp-pos-quot-dep"):
        old, new = previous.get(base, {}), current.get(base, {})
        for key in old.keys() | new.keys():
            code, jour = key
            if previous_cut_off is None or jour > previous_cut_off:
                continue
            before, after = old.get(key, zero), new.get(key, zero)
            if before == after:
                continue
            day = by_day.setdefault(jour, {"jour": jour, "fra": None, "regions": {}, "departments": {}})
            if base == "sp-pos-quot-fra":
                day["fra"] = _delta(before, after)
            elif base == "sp-pos-quot-reg":
                day["regions"][code] = _delta(before, after)
            else:
                day["departments"][code] = _delta(before, after)
    days = []
    for jour in sorted(by_day):
        day = by_day[jour]
        day["departments"] = dict(sorted(day["departments"].items()))
        day["regions"] = dict(sorted(day["regions"].items()))
        day["departments_changed"] = len(day["departments"])
        days.append(day)
    return days


def changelog_entry(
    stamp: str, previous_stamp: str | None, days: list[dict[str, Any]] | None,
) -> dict[str, Any] | None:
    if previous_stamp is None or days is None:
        return None
    return {"publication": stamp, "previous": previous_stamp, "corrected_days": days}


def _compose_pair(
    old: Mapping[str, list[int | None]] | None, new: Mapping[str, list[int | None]] | None
) -> dict[str, list[int | None]] | None:
    if old is None or new is None:
        return dict(new or old or {}) or None
    pair = {k: [old[k][0], new[k][1]] for k in ("P", "T")}
    return None if all(b == a for b, a in pair.values()) else pair


def _compose_map(old: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, Any]:
    composed = {code: _compose_pair(old.get(code), new.get(code)) for code in sorted(old.keys() | new.keys())}
    return {code: pair for code, pair in composed.items() if pair is not None}


def compose_entries(earlier: Mapping[str, Any], later: Mapping[str, Any]) -> dict[str, Any]:
    """Two publications under one stamp (the same minute): the second replaced the first's files, so its
    changes are told from the publication before the first — before from `earlier`, after from `later`."""
    old = {d["jour"]: d for d in earlier["corrected_days"]}
    new = {d["jour"]: d for d in later["corrected_days"]}
    days = []
    for jour in sorted(old.keys() | new.keys()):
        o = old.get(jour, {"fra": None, "regions": {}, "departments": {}})
        n = new.get(jour, {"fra": None, "regions": {}, "departments": {}})
        day = {
            "jour": jour,
            "fra": _compose_pair(o["fra"], n["fra"]),
            "regions": _compose_map(o["regions"], n["regions"]),
            "departments": _compose_map(o["departments"], n["departments"]),
        }
        if day["fra"] is None and not day["regions"] and not day["departments"]:
            continue  # changed, then changed back
        day["departments_changed"] = len(day["departments"])
        days.append(day)
    return {"publication": later["publication"], "previous": earlier["previous"], "corrected_days": days}


def updated_changelog(document: Mapping[str, Any] | None, entry: Mapping[str, Any] | None) -> dict[str, Any]:
    """`changelog.json`: newest publication first, at most `CHANGELOG_KEEP` entries."""
    entries: list[Any] = list((document or {}).get("publications", []))
    if entry is not None:
        entries = [dict(entry), *(e for e in entries if e.get("publication") != entry["publication"])]
    return {
        "description": (
            "Per publication, the past collection days (jour) whose all-ages figures changed since the "
            "previous publication (late or corrected results): P and T [before, after] for France, and "
            "for each region and department that changed. Empty cells (masked counts) are null."
        ),
        "publications": entries[:CHANGELOG_KEEP],
    }


def dumps(document: Any) -> bytes:
    return (json.dumps(document, indent=2, ensure_ascii=False) + "\n").encode()
