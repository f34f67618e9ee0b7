"""CSV results: one result per row, read into a `ResultRow` (`result_drafts`) with its row number.

Rows are checked by the rules HL7 messages go through (`result_drafts.normalize_rows`), and each
reason is located in the lab's own terms (`row 3, column ins`). Values are copied as sent: a date that
is not ISO 8601 (or HL7 DTM) reaches the checks unchanged and is reported there as an invalid date.

The CSV header (README § HTTP intake) names the columns, in any order, comma- or semicolon-separated,
UTF-8; `specimen_id`, `collected_at`, `loinc` and `result` are required columns.
"""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass, fields
from typing import Any

from services.gateway import issue_catalogue as catalogue
from services.gateway.issues import Issue
from services.gateway.result_drafts import ResultRow

COLUMNS: tuple[str, ...] = tuple(f.name for f in fields(ResultRow) if f.metadata.get("column", True))
REQUIRED_COLUMNS: tuple[str, ...] = ("specimen_id", "collected_at", "loinc", "result")
_UNDECODABLE = re.compile("[\udc80-\udcff]")


class CsvError(ValueError):
    """The body cannot be read as a results CSV at all (4xx); row problems are per-row issues."""


class NoRows(CsvError):
    """A readable header and nothing after it: nothing to process (422, not 400)."""


@dataclass(frozen=True, slots=True)
class CsvRow:
    number: int
    """1-based data row (the header is row 0)."""
    raw: bytes
    """The header line and this row's lines, as sent: what is kept on the raw and rejected topics."""
    row: ResultRow
    issues: list[tuple[Issue, str]]


def _check_decoded(text: str, where: str) -> None:
    undecodable = _UNDECODABLE.search(text)
    if undecodable is not None:
        byte = ord(undecodable.group()) - 0xDC00
        at = undecodable.start() + 1
        raise CsvError(f"the CSV is not UTF-8: byte 0x{byte:02X} {where} (character {at})")


def parse_csv(body: bytes) -> list[CsvRow]:
    """The rows of a results CSV; CsvError when the body or its header cannot be used at all."""
    utf8 = True
    try:
        text = body.decode("utf-8-sig")
    except UnicodeDecodeError:
        # read on to say where: an undecodable byte b is U+DC00+b in `text`
        text, utf8 = body.decode("utf-8-sig", "surrogateescape"), False
    lines = text.splitlines(keepends=True)
    if not lines or not lines[0].strip():
        raise CsvError("the CSV is empty: a header line is required")
    delimiter = ";" if lines[0].count(";") > lines[0].count(",") else ","
    reader = csv.reader(io.StringIO(text), delimiter=delimiter, strict=True)
    try:
        header = [name.strip().lower() for name in next(reader)]
        _check_decoded(",".join(header), "in the header line")
        unknown = [name for name in header if name not in COLUMNS]
        if unknown:
            raise CsvError(
                f"unknown column(s) {', '.join(repr(u[:30]) for u in unknown[:5])}; "
                f"the columns are {', '.join(COLUMNS)}"
            )
        duplicated = sorted({name for name in header if header.count(name) > 1})
        if duplicated:
            raise CsvError(f"duplicated column(s) {', '.join(duplicated)}")
        missing = [name for name in REQUIRED_COLUMNS if name not in header]
        if missing:
            raise CsvError(f"required column(s) missing: {', '.join(missing)}")
        header_raw = lines[0] if lines[0].endswith(("\n", "\r")) else lines[0] + "\n"
        rows: list[CsvRow] = []
        last_line = reader.line_num
        for values in reader:
            raw_text = header_raw + "".join(lines[last_line : reader.line_num])
            raw = raw_text.encode("utf-8", "surrogateescape")  # the bytes as sent
            last_line = reader.line_num
            if not any(v.strip() for v in values):
                continue
            number = len(rows) + 1
            if not utf8:
                for name, value in zip(header, values, strict=False):
                    _check_decoded(value, f"at row {number}, column {name}")
            issues: list[tuple[Issue, str]] = []
            if len(values) != len(header):
                text_ = f"row {number}: {len(values)} fields, the header has {len(header)}"
                issues.append((catalogue.CSV_FIELD_COUNT.unlocated(text_), f"row {number}"))
            cells: dict[str, Any] = {name: value.strip() for name, value in zip(header, values, strict=False)}
            if not cells.get("status"):
                cells.pop("status", None)
            rows.append(CsvRow(number, raw, ResultRow(**cells, where=f"row {number}"), issues))
    except csv.Error as exc:
        raise CsvError(f"line {reader.line_num}: {exc}") from exc
    if not rows:
        raise NoRows("the CSV has a header but no rows")
    return rows
