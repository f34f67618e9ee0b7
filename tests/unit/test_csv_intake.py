"""CSV results → one result per row, checked as HL7 v2: the same normalized results and reasons."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from nacl.public import PrivateKey

from services.core.domain.model import Outcome, PseudonymBasis, ResultStatus, Transport
from services.gateway.csv_intake import COLUMNS, CsvError, CsvRow, parse_csv
from services.gateway.hl7.normalize import Normalized
from services.gateway.identity import IdentityProtector
from services.gateway.result_drafts import header_for, normalize_rows, to_dtm

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "csv"
NOW = datetime(2024, 1, 16, tzinfo=UTC)
PROTECTOR = IdentityProtector(b"0123456789abcdef0123456789abcdef", bytes(PrivateKey.generate().public_key))


def normalize(row: CsvRow) -> tuple[Normalized, list[tuple[str, str, str]]]:
    header = header_for("LAB-CSV", None, f"C{row.number}")
    normalized, content = normalize_rows([row.row], header, received_at=NOW, transport=Transport.HTTP_CSV,
                                         protector=PROTECTOR, now=NOW)
    return normalized, [(content.locate(i), i.code, i.text) for i in normalized.issues]


def test_each_row_is_one_result_with_the_hl7_rules() -> None:
    rows = parse_csv((FIXTURES / "ok_and_invalid_rows.csv").read_bytes())

    assert [r.number for r in rows] == [1, 2, 3]
    first, _ = normalize(rows[0])
    assert first.ack_code == "AA"
    (result,) = first.results
    assert (result.loinc, result.outcome, result.status, result.department) == (
        "94500-6", Outcome.POSITIVE, ResultStatus.FINAL, "75")
    assert result.collected_at == datetime(2024, 1, 10, 7, 15, tzinfo=UTC)
    assert result.patient_pseudonym == PROTECTOR.pseudonym_from_ins("279035121518989")
    assert (result.sending_facility, result.transport, result.specimen_id) == (
        "LAB-CSV", Transport.HTTP_CSV, "CSV-SPEC-0001")

    second, _ = normalize(rows[1])
    assert second.ack_code == "AA", second.issues
    (result,) = second.results
    # no INS: traits; a local text with an accent; status defaults to F; naive time is Europe/Paris
    assert (result.pseudonym_basis, result.outcome, result.status) == (
        PseudonymBasis.TRAITS, Outcome.NEGATIVE, ResultStatus.FINAL)
    assert result.collected_at == datetime(2024, 1, 10, 8, 30, tzinfo=UTC)
    assert result.department == "29"

    third, located = normalize(rows[2])
    assert third.ack_code == "AE"
    assert third.results == []
    assert ("row 3, column ins", "102", "PID-3: INS key 88 does not match matricule (expected 89)") in located
    assert ("row 3, column collected_at", "102", "SPM-17: invalid date/time") in located
    assert ("row 3, column result", "103", "OBX-5: result value 'PEUT-ETRE' cannot be interpreted") in located


def test_the_raw_of_a_row_is_the_header_and_that_row() -> None:
    body = (FIXTURES / "ok_and_invalid_rows.csv").read_bytes()
    rows = parse_csv(body)
    header, *lines = body.decode().splitlines(keepends=True)
    assert rows[1].raw == (header + lines[1]).encode()


def test_a_row_with_missing_values_is_refused_with_each_reason() -> None:
    rows = parse_csv(b"specimen_id,collected_at,loinc,result,birth_name\nS1,,,,X\n")
    normalized, located = normalize(rows[0])
    assert normalized.ack_code == "AE"
    codes = {(where, code) for where, code, _ in located}
    assert {("row 1, column collected_at", "101"), ("row 1, column loinc", "101"),
            ("row 1, column result", "101")} <= codes


def test_a_row_with_a_wrong_number_of_fields_is_refused() -> None:
    rows = parse_csv(b"specimen_id,collected_at,loinc,result\nS1,2024-01-10T08:00Z,94500-6,POSITIF,extra\n")
    ((issue, where),) = rows[0].issues
    assert where == "row 1" and "5 fields, the header has 4" in issue.text
    assert issue.is_error


@pytest.mark.parametrize(("body", "message"), [
    ((FIXTURES / "unknown_column.csv").read_bytes(), "unknown column(s) 'nom_patient'"),
    (b"specimen_id,loinc,result\nS1,94500-6,POSITIF\n", "required column(s) missing: collected_at"),
    (b"", "empty"),
    (b"specimen_id,collected_at,loinc,result\n", "no rows"),
    (b"specimen_id,collected_at,loinc,result,loinc\nS,1,2,3,4\n", "duplicated column(s) loinc"),
    (b"specimen_id,collected_at,loinc,result\n\xff\xfe,1,2,3\n", "not UTF-8"),
    (b'specimen_id,collected_at,loinc,result\n"S1,2,3\n', "line"),
])
def test_an_unusable_body_is_a_csv_error(body: bytes, message: str) -> None:
    with pytest.raises(CsvError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse_csv(body)


def test_the_header_is_case_insensitive_and_every_documented_column_is_accepted() -> None:
    header = ",".join(c.upper() for c in COLUMNS)
    rows = parse_csv(f"{header}\n{','.join('' for _ in COLUMNS)}x\n".encode())
    assert len(rows) == 1


@pytest.mark.parametrize(("value", "dtm"), [
    ("2024-01-10T08:15:00+01:00", "20240110081500+0100"),
    ("2024-01-10T08:15:00Z", "20240110081500+0000"),
    ("2024-01-10 08:15", "20240110081500"),
    ("2024-01-10", "20240110"),
    ("1980-05", "198005"),
    ("1980", "1980"),
    ("20240110081500+0100", "20240110081500+0100"),
    ("10/01/2024", "10/01/2024"),
])
def test_iso_dates_become_hl7_dtm_and_anything_else_is_passed_on(value: str, dtm: str) -> None:
    assert to_dtm(value) == dtm
