"""What the store cannot carry is refused at the gateway, located, in HL7 v2, FHIR and CSV alike.

NUL and the other control characters, undecodable bytes and over-long values each get AE with an ERR
102 at the exact segment / field / repetition / component (or row and column, or FHIR path); what
HL7 allows (escape sequences, CRLF, accents, tabs, ISO 8859-1 when declared) is still accepted.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from nacl.public import PrivateKey

from services.core.config import Topics
from services.core.domain.limits import FINESS_MAX, POSTAL_CODE_MAX, TEXT_MAX
from services.core.domain.model import Transport
from services.core.domain.rejection import Rejection
from services.core.lab_tokens import hash_token, new_token
from services.gateway.csv_intake import CsvError, CsvRow, parse_csv
from services.gateway.fhir import read_bundle
from services.gateway.hl7.ack import build_ack
from services.gateway.hl7.normalize import Normalized, normalize_oru
from services.gateway.hl7.parse import parse_message
from services.gateway.http_api import SubmissionStore, create_app
from services.gateway.identity import IdentityProtector
from services.gateway.intake import Intake
from services.gateway.labs import Lab, LabRegistry
from services.gateway.publish import Record
from services.gateway.result_drafts import header_for, normalize_rows
from services.gateway.submission import SubmissionResponse

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
NOW = datetime(2024, 1, 16, tzinfo=UTC)
PROTECTOR = IdentityProtector(b"0123456789abcdef0123456789abcdef", bytes(PrivateKey.generate().public_key))
BASE = (FIXTURES / "hl7" / "ok_v251.hl7").read_bytes()
"""MSH … PID|1||P001^^^LAB^PI~<INS>…||DUPONT^Marie^^^^^L … ORC OBR OBX SPM|1|S0001&LAB||258500001^…"""


def normalize(raw: bytes) -> Normalized:
    return normalize_oru(raw, received_at=NOW, transport=Transport.MLLP, protector=PROTECTOR, now=NOW)


def edit(old: bytes, new: bytes, raw: bytes = BASE) -> bytes:
    assert raw.count(old) == 1, old
    return raw.replace(old, new)


Where = tuple[str, int, int | None, int | None, int | None]


def located(normalized: Normalized) -> list[tuple[Where, str]]:
    return [((i.segment, i.sequence, i.field, i.repetition, i.component), i.code) for i in normalized.issues]


def test_the_base_message_is_accepted() -> None:
    assert normalize(BASE).ack_code == "AA"


# -- HL7 v2: control characters -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("old", "new", "where"),
    [
        (b"S0001&LAB", b"S0\x0001&LAB", ("SPM", 1, 2, 1, 1)),  # the finding: NUL in the specimen id
        (b"DUPONT^Marie", b"DUPONT^Ma\x01rie", ("PID", 1, 5, 1, 2)),
        (b"^NET^Internet^marie@", b"^NET^Internet^ma\x1brie@", ("PID", 1, 13, 2, 4)),
        (b"|CMD1|F0001|94500-6", b"|CMD1|F\x0b0001|94500-6", ("OBR", 1, 3, 1, 1)),
        (b"||F|||20240115100000+0100\r", b"||F\x0c|||20240115100000+0100\r", ("OBX", 1, 11, 1, 1)),
        (b"|OK251|", b"|OK\x7f251|", ("MSH", 1, 10, 1, 1)),  # DEL
        (b"^^Ajaccio^^", "^^Ajacc\x85io^^".encode(), ("PID", 1, 11, 1, 3)),  # C1 (NEL) in UTF-8
        (b"PV1|1|O", b"PV1|1|O\x1c", ("PV1", 1, 2, 1, 1)),  # a field LabFlow does not even read
        (b"Detected^SCT", b"Detected^S\x00CT", ("OBX", 1, 5, 1, 3)),
    ],
)
def test_a_control_character_anywhere_is_ae_102_at_its_place(old: bytes, new: bytes, where: Where) -> None:
    normalized = normalize(edit(old, new))

    assert normalized.ack_code == "AE"
    assert located(normalized) == [(where, "102")]
    assert normalized.results == []
    (issue,) = normalized.issues
    assert "control character U+00" in issue.text
    assert issue.text.startswith(f"{where[0]}-{where[2]}.{where[4]}")


def test_the_ack_says_where_in_err_2_and_echoes_the_control_id() -> None:
    normalized = normalize(edit(b"S0001&LAB", b"S0\x0001&LAB"))
    ack = parse_message(build_ack(normalized.header, "AE", normalized.issues, now=NOW, control_id="A1"))

    msa, err = ack.get("MSA"), ack.get("ERR")
    assert msa is not None and err is not None
    assert (msa.field(1), msa.field(2)) == ("AE", "OK251")
    assert err.raw(2) == "SPM^1^2^1^1"
    assert (err.component(3, 1), err.component(3, 3), err.field(4)) == ("102", "HL70357", "E")
    assert "U+0000 (NUL) at character 3" in err.field(8)


def test_every_field_at_fault_is_reported_not_only_the_first() -> None:
    raw = edit(b"DUPONT^", b"DU\x00PONT^", edit(b"S0001&LAB", b"S0001\x02&LAB"))
    assert located(normalize(raw)) == [(("PID", 1, 5, 1, 1), "102"), (("SPM", 1, 2, 1, 1), "102")]


def test_a_control_character_in_the_header_is_not_echoed_by_the_ack() -> None:
    normalized = normalize(edit(b"|OK251|", b"|OK\x00251|"))
    assert normalized.header is not None and normalized.header.control_id == "OK\ufffd251"
    ack = build_ack(normalized.header, "AE", normalized.issues, now=NOW, control_id="A1")
    assert b"\x00" not in ack


def test_a_control_character_line_between_segments_is_refused() -> None:
    normalized = normalize(edit(b"\rPV1|1|O\r", b"\rPV1|1|O\r\x0c\r"))
    assert normalized.ack_code == "AE"
    assert "U+000C (FF) between segments" in normalized.issues[0].text


def test_a_control_character_as_a_delimiter_is_ar() -> None:
    normalized = normalize(BASE.replace(b"|", b"\x01"))
    assert normalized.ack_code == "AR"
    assert normalized.issues[0].field == 1


def test_a_segment_cut_by_a_stray_cr_is_ar_and_still_echoes_msh_10() -> None:
    normalized = normalize(edit(b"PV1|1|O", b"PV1|1|O\rP!D|x"))
    assert normalized.ack_code == "AR"
    assert normalized.header is not None and normalized.header.control_id == "OK251"


@pytest.mark.parametrize("escape", [b"\\X00\\", b"\\X1B\\", b"\\X7F\\", b"\\XC285\\"])
def test_an_escape_sequence_standing_for_a_control_character_is_refused(escape: bytes) -> None:
    normalized = normalize(edit(b"S0001&LAB", b"S0" + escape + b"001&LAB"))
    assert located(normalized) == [(("SPM", 1, 2, 1, 1), "102")]
    assert "escape sequence stands for U+00" in normalized.issues[0].text


def test_escape_sequences_crlf_accents_and_tabs_are_still_accepted() -> None:
    specimen = b"S\\F\\1\\S\\2\\T\\3\\R\\4\\E\\5\\X0D\\6\\.br\\7"
    raw = edit(b"S0001&LAB", specimen + b"&LAB")
    raw = edit(b"DUPONT^Marie", "DUPONT-LÉVÊQUE^Zoë\tAnaïs".encode(), raw)
    raw = raw.replace(b"\r", b"\r\n")
    normalized = normalize(raw)

    assert normalized.ack_code == "AA", normalized.issues
    assert {r.specimen_id for r in normalized.results} == {"S|1^2&3~4\\5\r6\n7"}


# -- HL7 v2: charsets ------------------------------------------------------------------------------


def test_a_byte_that_is_not_utf_8_is_refused_where_it_stands() -> None:
    normalized = normalize(edit(b"DUPONT^Marie", b"DUPONT^Ma\xefe"))
    assert located(normalized) == [(("PID", 1, 5, 1, 2), "102")]
    assert "byte 0xEF at character 3 is not valid UTF-8 (MSH-18 'UNICODE UTF-8')" in normalized.issues[0].text


def test_latin_1_without_msh_18_is_refused_not_guessed() -> None:
    raw = edit(b"UNICODE UTF-8", b"", edit(b"DUPONT", "LEFÈVRE".encode("latin-1")))
    normalized = normalize(raw)
    assert located(normalized) == [(("PID", 1, 5, 1, 1), "102")]
    assert "byte 0xC8 at character 4 is not valid UTF-8 (MSH-18 empty)" in normalized.issues[0].text


def test_iso_8859_1_is_accepted_when_msh_18_declares_it() -> None:
    raw = edit(b"UNICODE UTF-8", b"8859/1", edit(b"DUPONT", "LEFÈVRE".encode("latin-1")))
    assert normalize(raw).ack_code == "AA"
    # but its C1 range is control characters, e.g. Windows-1252 sent as ISO 8859-1
    normalized = normalize(edit(b"LEF", "LEF’".encode("cp1252"), raw))
    assert located(normalized) == [(("PID", 1, 5, 1, 1), "102")]
    assert "U+0092" in normalized.issues[0].text


def test_an_undecodable_byte_in_the_header_still_gets_a_readable_ack() -> None:
    normalized = normalize(edit(b"|OK251|", b"|OK\xff251|"))
    assert normalized.ack_code == "AE" and located(normalized) == [(("MSH", 1, 10, 1, 1), "102")]
    assert normalized.header is not None
    ack = build_ack(normalized.header, "AE", normalized.issues, now=NOW, control_id="A1")
    assert "OK\ufffd251" in ack.decode("utf-8")


# -- HL7 v2: lengths ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("old", "new", "where"),
    [
        (b"S0001&LAB", b"S" * (TEXT_MAX + 1) + b"&LAB", ("SPM", 1, 2, 1, 1)),
        (b"DUPONT^", b"D" * 5000 + b"^", ("PID", 1, 5, 1, 1)),
        (b"|OK251|", b"|" + b"C" * (TEXT_MAX + 1) + b"|", ("MSH", 1, 10, 1, 1)),
        (b"|CMD1|F0001|", b"|CMD1|" + b"F" * 300 + b"|", ("OBR", 1, 3, 1, 1)),
        (b"^^Ajaccio^^20000^", b"^^Ajaccio^^" + b"2" * (POSTAL_CODE_MAX + 1) + b"^", ("PID", 1, 11, 1, 5)),
        (b"^123456789^FINESS", b"^" + b"1" * (FINESS_MAX + 1) + b"^FINESS", ("MSH", 1, 4, 1, 2)),
        (b"+0100\rSPM", b"+0100|||||||||" + b"L" * 250 + b"\rSPM", ("OBX", 1, 23, 1, 1)),
    ],
)
def test_an_over_long_value_is_ae_102_at_its_place(old: bytes, new: bytes, where: Where) -> None:
    normalized = normalize(edit(old, new))
    assert normalized.ack_code == "AE"
    assert located(normalized) == [(where, "102")]
    assert "more than" in normalized.issues[0].text


def test_the_longest_values_the_store_carries_are_accepted() -> None:
    raw = edit(b"S0001&LAB", b"S" * TEXT_MAX + b"&LAB")
    raw = edit(b"DUPONT^", b"D" * TEXT_MAX + b"^", raw)
    raw = edit(b"^^Ajaccio^^20000^", b"^^Ajaccio^^75 001 12345^", raw)  # 10 without its spaces
    normalized = normalize(raw)
    assert normalized.ack_code == "AA", normalized.issues
    assert {r.specimen_id for r in normalized.results} == {"S" * TEXT_MAX}


def test_long_text_where_labflow_reads_no_value_is_not_a_length_error() -> None:
    raw = edit(b"PV1|1|O\r", b"PV1|1|O\rNTE|1||" + "é".encode() * 5000 + b"\r")
    assert normalize(raw).ack_code == "AA"


@pytest.mark.parametrize(
    ("old", "where"),
    [(b"|20240115080000+0100\r", ("SPM", 1, 17)), (b"|||20240115100000+0100\rSPM", ("OBX", 1, 14))],
)
@pytest.mark.parametrize("time", [b"00010101000000+2359", b"17991231", b"99991231235959-2359"])
def test_a_time_out_of_any_plausible_range_is_ae_not_an_exception(
    old: bytes, where: tuple[str, int, int], time: bytes
) -> None:
    normalized = normalize(edit(old, old[: old.index(b"2024")] + time + old[old.index(b"+0100") + 5 :]))
    assert normalized.ack_code == "AE"
    assert [(i.segment, i.sequence, i.field, i.code) for i in normalized.issues] == [(*where, "102")]


# -- FHIR ----------------------------------------------------------------------------------------


def fhir(edit_bundle: Any) -> tuple[Normalized, list[tuple[str, str]]]:
    bundle = json.loads((FIXTURES / "fhir" / "ok_two_observations.json").read_text())
    edit_bundle(bundle)
    content = read_bundle(json.loads(json.dumps(bundle)))
    normalized, rows = normalize_rows(
        content.rows,
        header_for("LAB-HTTP", "2A0000018", content.control_id),
        received_at=NOW,
        transport=Transport.HTTP_FHIR,
        protector=PROTECTOR,
        now=NOW,
    )
    return normalized, [(rows.locate(i), i.code) for i in normalized.issues]


def _resource(bundle: Any, index: int) -> Any:
    return bundle["entry"][index]["resource"]


@pytest.mark.parametrize(
    ("change", "where"),
    [
        (
            lambda b: _resource(b, 1)["accessionIdentifier"].update(value="FHIR\u0000SPEC"),
            "Bundle.entry[1].resource.accessionIdentifier",
        ),
        (
            lambda b: _resource(b, 0)["name"][0].update(family="DU\u001bPONT"),
            "Bundle.entry[0].resource.name.family",
        ),
        (
            lambda b: _resource(b, 0)["name"][0].update(given=["Ma\ud800rie"]),
            "Bundle.entry[0].resource.name.given",
        ),
        (
            lambda b: _resource(b, 0)["address"][0].update(postalCode="2" * 11),
            "Bundle.entry[0].resource.address.postalCode",
        ),
        (
            lambda b: _resource(b, 1)["accessionIdentifier"].update(value="S" * 5000),
            "Bundle.entry[1].resource.accessionIdentifier",
        ),
        (
            lambda b: _resource(b, 0)["identifier"][0].update(value="P\u0085X"),
            "Bundle.entry[0].resource.identifier",
        ),
    ],
)
def test_fhir_content_the_store_cannot_carry_is_located_by_its_path(change: Any, where: str) -> None:
    normalized, reasons = fhir(change)
    assert normalized.ack_code == "AE"
    assert reasons == [(where, "102")]


def test_fhir_multi_line_text_and_accents_are_accepted() -> None:
    def change(bundle: Any) -> None:
        _resource(bundle, 0)["address"][0]["line"] = ["12 rue de la Paix\r\nBâtiment B\tporte 3"]
        _resource(bundle, 0)["name"][0]["family"] = "N'GUYỄN"

    normalized, _ = fhir(change)
    assert normalized.ack_code == "AA", normalized.issues


# -- CSV -----------------------------------------------------------------------------------------

CSV_HEADER = (
    b"specimen_id,collected_at,loinc,result,ins,patient_id,birth_name,given_names,postal_code,street\n"
)
CSV_ROW = b"S-1,2024-01-10T08:15:00+01:00,94500-6,POSITIF,279035121518989,P-1,DUPONT,Marie,75011,1 rue X\n"


def csv_row(row: bytes) -> tuple[Normalized, list[tuple[str, str]]]:
    (parsed,) = parse_csv(CSV_HEADER + row)
    return csv_normalize(parsed)


def csv_normalize(row: CsvRow) -> tuple[Normalized, list[tuple[str, str]]]:
    normalized, content = normalize_rows(
        [row.row],
        header_for("LAB-CSV", None, f"C{row.number}"),
        received_at=NOW,
        transport=Transport.HTTP_CSV,
        protector=PROTECTOR,
        now=NOW,
    )
    return normalized, [(content.locate(i), i.code) for i in normalized.issues]


@pytest.mark.parametrize(
    ("old", "new", "column"),
    [
        (b"S-1", b"S\x00-1", "specimen_id"),  # the finding
        (b"DUPONT", b"DU\x07PONT", "birth_name"),
        (b"Marie", b"Ma\x7frie", "given_names"),
        (b"P-1", b"P\x1f-1", "patient_id"),
        (b"279035121518989", b"27903512151898\x009", "ins"),
        (b"1 rue X", "1 rue\u0090X".encode(), "street"),
        (b"S-1", b"S" * (TEXT_MAX + 1), "specimen_id"),
        (b"75011", b"7" * (POSTAL_CODE_MAX + 1), "postal_code"),
    ],
)
def test_a_csv_cell_the_store_cannot_carry_is_located_by_row_and_column(
    old: bytes, new: bytes, column: str
) -> None:
    normalized, reasons = csv_row(CSV_ROW.replace(old, new))
    assert normalized.ack_code == "AE"
    assert reasons == [(f"row 1, column {column}", "102")]


def test_fhir_and_csv_values_are_measured_as_the_lab_sent_them() -> None:
    """Not in an ER7 rendering of them (as before issue #13): `&` is one character, not `\\T\\`."""
    normalized, _ = csv_row(CSV_ROW.replace(b"S-1", b"&" * TEXT_MAX))
    assert normalized.ack_code == "AA", normalized.issues
    normalized, reasons = csv_row(CSV_ROW.replace(b"DUPONT", b"D&U^P\x07ONT"))
    assert reasons == [("row 1, column birth_name", "102")]
    assert [i.text for i in normalized.issues] == [
        "PID-5.1: control character U+0007 (BEL) at character 6 is not allowed"
    ]
    long_id = "|" * (TEXT_MAX + 1)
    normalized, reasons = fhir(lambda b: _resource(b, 1)["accessionIdentifier"].update(value=long_id))
    assert reasons == [("Bundle.entry[1].resource.accessionIdentifier", "102")]
    (issue,) = normalized.issues
    assert issue.text == "SPM-2.1: 200 characters, more than the 199 LabFlow stores"


def test_a_csv_byte_that_is_not_utf_8_is_named_with_its_row_and_column() -> None:
    with pytest.raises(CsvError, match=r"not UTF-8: byte 0xC9 at row 2, column birth_name \(character 3\)"):
        parse_csv(CSV_HEADER + CSV_ROW + CSV_ROW.replace(b"DUPONT", "DUÉPONT".encode("latin-1")))


def test_csv_quoted_line_ends_tabs_and_accents_are_accepted() -> None:
    normalized, _ = csv_row(CSV_ROW.replace(b"1 rue X", '"1 rue X\r\nBâtiment\tB"'.encode()))
    assert normalized.ack_code == "AA", normalized.issues


# -- through the HTTP intake: the answer per format, and the rejected topic -------------------------


class _Publisher:
    def __init__(self) -> None:
        self.records: list[Record] = []

    async def publish(self, records: Sequence[Record]) -> None:
        self.records += records


class _Submissions(SubmissionStore):
    def __init__(self) -> None:
        pass

    async def save(self, response: SubmissionResponse) -> None:
        pass


def test_each_http_format_answers_where_and_keeps_the_raw_payload_on_the_rejected_topic() -> None:
    token = new_token("LAB")
    lab = Lab("LAB", "Test lab", None, True, hash_token(token), None)
    publisher, topics = _Publisher(), Topics("t.")
    intake = Intake(publisher, topics, PROTECTOR)  # type: ignore[arg-type]
    app = create_app(intake, LabRegistry(lambda: [lab]), _Submissions(), max_body_bytes=1_000_000)
    hl7 = edit(b"LABO-AJACCIO^123456789^FINESS", b"LAB", edit(b"S0001&LAB", b"S0\x0001&LAB"))
    bundle = json.loads((FIXTURES / "fhir" / "ok_two_observations.json").read_text())
    bundle["identifier"]["value"] = "CTRL\u0000"
    del bundle["entry"][5]["resource"]["performer"]
    bodies = {
        "hl7": (hl7, "SPM-2.1"),
        "fhir": (json.dumps(bundle).encode(), "Bundle.identifier.value"),
        "csv": (CSV_HEADER + CSV_ROW.replace(b"S-1", b"S\x00-1"), "row 1, column specimen_id"),
    }
    with TestClient(app) as client:
        for kind, (body, where) in bodies.items():
            response = client.post(
                f"/v1/results/{kind}", content=body, headers={"Authorization": f"Bearer {token}"}
            )
            assert response.status_code == 200, response.text
            (item,) = response.json()["items"]
            assert (item["status"], item["ack_code"]) == ("rejected", "AE"), item
            assert [(r["location"], r["code"]) for r in item["reasons"]] == [(where, "102")]

    assert not [r for r in publisher.records if r.topic == topics.results]
    rejected = [
        Rejection.model_validate_json(r.value) for r in publisher.records if r.topic == topics.rejected
    ]
    assert [base64.b64decode(r.payload_base64) for r in rejected] == [body for body, _ in bodies.values()]
    assert all(r.reasons and r.reasons[0].code == "102" and r.ack_code == "AE" for r in rejected)
