"""CSV results (one result per row) and the flat result row that FHIR Bundles are mapped to as well.

Both non-HL7 formats are written as an ORU^R01 (ER7) and go through `normalize_oru`, so a result is
validated by the same rules and refused for the same reasons (INS key, LOINC, value, dates…) whatever
its format; each reason is then located in the lab's own terms (`row 3, column ins`, or a FHIR path).
Values are copied as sent: a date that is not ISO 8601 (or HL7 DTM) reaches the normalizer unchanged
and is reported there as an invalid date.

The CSV header (README § HTTP intake) names the columns, in any order, comma- or semicolon-separated,
UTF-8; `specimen_id`, `collected_at`, `loinc` and `result` are required columns.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from datetime import date, datetime
from typing import Any

from services.core.domain.terminology import INS_NIR_OID
from services.gateway import issue_catalogue as catalogue
from services.gateway.hl7.ack import escape
from services.gateway.issues import Issue

SNOMED = "SCT"


@dataclass(frozen=True, slots=True)
class ResultRow:
    """One result, flat; "" means not sent. The field names are the CSV columns."""

    specimen_id: str = ""
    collected_at: str = ""
    loinc: str = ""
    result: str = ""
    """A SNOMED CT code (digits) or a result text such as POSITIF."""
    status: str = "F"
    result_at: str = ""
    observed_at: str = ""
    specimen_type: str = ""
    performing_lab: str = ""
    ins: str = ""
    patient_id: str = ""
    birth_name: str = ""
    given_names: str = ""
    birth_date: str = ""
    sex: str = ""
    birth_place: str = ""
    street: str = ""
    city: str = ""
    postal_code: str = ""
    country: str = ""
    phone: str = ""
    email: str = ""
    ins_oid: str = field(default=INS_NIR_OID, metadata={"column": False})
    where: str = field(default="", metadata={"column": False})
    """Where the row comes from (`row 3`, `Bundle.entry[2]`), to locate its problems."""
    paths: Mapping[str, str] = field(default_factory=dict, metadata={"column": False})
    """Per column, a precise location overriding `where` (FHIR element paths)."""


COLUMNS: tuple[str, ...] = tuple(f.name for f in fields(ResultRow) if f.metadata.get("column", True))
REQUIRED_COLUMNS: tuple[str, ...] = ("specimen_id", "collected_at", "loinc", "result")

# which row value an ER7 field of the written message came from: (segment, field, component) → column
_FIELD_COLUMNS: dict[tuple[str, int | None, int | None], str] = {
    ("PID", 3, None): "ins",
    ("PID", 5, None): "birth_name",
    ("PID", 5, 1): "birth_name",
    ("PID", 5, 2): "given_names",
    ("PID", 7, None): "birth_date",
    ("PID", 8, None): "sex",
    ("PID", 11, None): "postal_code",
    ("PID", 11, 1): "street",
    ("PID", 11, 3): "city",
    ("PID", 11, 5): "postal_code",
    ("PID", 11, 6): "country",
    ("PID", 13, 1): "phone",
    ("PID", 13, 4): "email",
    ("PID", 23, None): "birth_place",
    ("OBR", 3, None): "specimen_id",
    ("OBR", 7, None): "collected_at",
    ("OBR", 22, None): "result_at",
    ("OBX", 3, None): "loinc",
    ("OBX", 5, None): "result",
    ("OBX", 11, None): "status",
    ("OBX", 14, None): "observed_at",
    ("OBX", 23, None): "performing_lab",
    ("SPM", 2, None): "specimen_id",
    ("SPM", 4, None): "specimen_type",
    ("SPM", 17, None): "collected_at",
}
_SEXES = {"FEMALE": "F", "MALE": "M", "OTHER": "O", "UNKNOWN": "U"}
_PARTIAL_DATE = re.compile(r"^(\d{4})(?:-(\d{2}))?$")
_UNDECODABLE = re.compile("[\udc80-\udcff]")


class CsvError(ValueError):
    """The body cannot be read as a results CSV at all (4xx); row problems are per-row issues."""


class NoRows(CsvError):
    """A readable header and nothing after it: nothing to process (422, not 400)."""


@dataclass(frozen=True, slots=True)
class Converted:
    """An ORU^R01 written from rows, with the problems found before it (already located)."""

    er7: bytes
    rows: Sequence[ResultRow]
    origins: Mapping[tuple[str, int], int]
    """(segment, occurrence) → index of the row the segment was written from."""
    issues: list[tuple[Issue, str]] = field(default_factory=list)

    def locate(self, issue: Issue) -> str:
        """The lab's own location of an issue the normalizer found in the written message."""
        index = self.origins.get((issue.segment, issue.sequence))
        if index is None:
            return f"{issue.segment}-{issue.field}" if issue.field else issue.segment
        row = self.rows[index]
        column = _FIELD_COLUMNS.get((issue.segment, issue.field, issue.component)) or _FIELD_COLUMNS.get(
            (issue.segment, issue.field, None)
        )
        if (issue.segment, issue.field) == ("PID", 3) and issue.repetition:
            # PID-3 repeats: the lab's patient id first, then the INS (see `_pid`)
            identifiers = [c for c, v in (("patient_id", row.patient_id), ("ins", row.ins)) if v]
            column = identifiers[issue.repetition - 1] if issue.repetition <= len(identifiers) else column
        if column is None:
            return row.where
        return row.paths.get(column) or f"{row.where}, column {column}"


def to_dtm(value: str) -> str:
    """ISO 8601 date or date-time → HL7 DTM (the offset kept; none means Europe/Paris)."""
    value = value.strip()
    partial = _PARTIAL_DATE.match(value)
    if partial:
        return "".join(part for part in partial.groups() if part)
    try:
        if len(value) == 10:
            return date.fromisoformat(value).strftime("%Y%m%d")
        moment = datetime.fromisoformat(value)
    except ValueError:
        return value  # HL7 DTM already, or invalid: the normalizer decides and says which
    return moment.strftime("%Y%m%d%H%M%S") + moment.strftime("%z")


def _sex(value: str) -> str:
    upper = value.strip().upper()
    return _SEXES.get(upper, upper)


def _value(result: str) -> tuple[str, str]:
    """OBX-2 and OBX-5 for a result: a SNOMED CT code is coded (CWE), anything else text (ST)."""
    result = result.strip()
    if result.isdigit():
        return "CWE", f"{result}^^{SNOMED}"
    return "ST", escape(result)


def build_oru(
    lab_id: str,
    finess: str | None,
    control_id: str,
    rows: Sequence[ResultRow],
    *,
    sent_at: datetime,
    issues: list[tuple[Issue, str]] | None = None,
) -> Converted:
    """One ORU^R01 (2.5.1): one PID per patient, one OBR + SPM per specimen, one OBX per row."""
    e = escape
    facility = f"{e(lab_id)}^{e(finess)}^FINESS" if finess else e(lab_id)
    segments = [
        f"MSH|^~\\&|LABFLOW-HTTP|{facility}|LABFLOW|LABFLOW|{sent_at.strftime('%Y%m%d%H%M%S%z')}||"
        f"ORU^R01^ORU_R01|{e(control_id)}|P|2.5.1|||NE|NE||UNICODE UTF-8"
    ]
    origins: dict[tuple[str, int], int] = {}
    patients: dict[tuple[str, ...], dict[tuple[str, ...], list[int]]] = {}
    for index, row in enumerate(rows):
        patient = (row.ins, row.patient_id, row.birth_name, row.given_names, row.birth_date, row.sex)
        specimen = (row.specimen_id, row.collected_at, row.result_at, row.specimen_type)
        patients.setdefault(patient, {}).setdefault(specimen, []).append(index)
    counts = {"PID": 0, "OBR": 0, "OBX": 0}
    for orders in patients.values():
        first = rows[next(iter(orders.values()))[0]]
        counts["PID"] += 1
        origins[("PID", counts["PID"])] = next(iter(orders.values()))[0]
        segments.append(_pid(counts["PID"], first, lab_id))
        for members in orders.values():
            row = rows[members[0]]
            counts["OBR"] += 1
            origins[("OBR", counts["OBR"])] = origins[("SPM", counts["OBR"])] = members[0]
            specimen_id, collected = e(row.specimen_id), e(to_dtm(row.collected_at))
            result_at = e(to_dtm(row.result_at)) if row.result_at else ""
            segments.append("ORC|RE")
            # each value is written once, so each of its problems is reported once: the specimen id
            # to SPM-2 only (OBR-2/3 would repeat it), the collection time to SPM-17 only
            obr = ["OBR", str(counts["OBR"]), "", "", "", "", "", ""]
            obr += [""] * 14 + [result_at, "", "", "F"]
            segments.append("|".join(obr))
            for obx_index, member in enumerate(members, start=1):
                counts["OBX"] += 1
                origins[("OBX", counts["OBX"])] = member
                segments.append(_obx(obx_index, rows[member]))
            specimen_type = f"{e(row.specimen_type)}^^{SNOMED}" if row.specimen_type else ""
            spm = ["SPM", "1", f"{specimen_id}&{e(lab_id)}", "", specimen_type]
            spm += [""] * 12 + [collected]
            segments.append("|".join(spm))
    # a lone surrogate (a FHIR "\ud800") is passed on, for the content screen to refuse it where it is
    er7 = ("\r".join(segments) + "\r").encode("utf-8", "surrogatepass")
    return Converted(er7, rows, origins, list(issues or []))


def _pid(index: int, row: ResultRow, lab_id: str) -> str:
    e = escape
    ids = []
    if row.patient_id:
        ids.append(f"{e(row.patient_id)}^^^{e(lab_id)}^PI")
    if row.ins:
        ids.append(f"{e(row.ins)}^^^ASIP-SANTE-INS-NIR&{e(row.ins_oid)}&ISO^INS")
    address = ""
    if row.street or row.city or row.postal_code or row.country:
        address = f"{e(row.street)}^^{e(row.city)}^^{e(row.postal_code)}^{e(row.country)}^H"
    telecom = []
    if row.phone:
        telecom.append(f"{e(row.phone)}^PRN^PH")
    if row.email:
        telecom.append(f"^NET^Internet^{e(row.email)}")
    birth_date = e(to_dtm(row.birth_date)) if row.birth_date else ""
    pid = ["PID", str(index), "", "~".join(ids), "", f"{e(row.birth_name)}^{e(row.given_names)}^^^^^L"]
    pid += ["", birth_date, e(_sex(row.sex)), "", "", address, "", "~".join(telecom)]
    pid += [""] * 9 + [e(row.birth_place)]
    return "|".join(pid)


def _obx(index: int, row: ResultRow) -> str:
    e = escape
    value_type, value = _value(row.result)
    observed = e(to_dtm(row.observed_at)) if row.observed_at else ""
    obx = ["OBX", str(index), value_type, f"{e(row.loinc.strip())}^^LN", "", value, "", "", "", ""]
    obx += ["", e(row.status.strip().upper()), "", "", observed]
    if row.performing_lab:
        obx += [""] * 8 + [e(row.performing_lab)]
    return "|".join(obx)


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
