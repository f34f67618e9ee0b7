"""The gateway's submission use cases and validation, against fakes at the ports: a publisher that
keeps what it is given (or fails), and a lab registry loaded from a list. The real-infrastructure
answers are in tests/e2e/test_http_intake.py and tests/e2e/test_validate_e2e.py."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Sequence
from datetime import date
from pathlib import Path

import pytest
from nacl.public import PrivateKey
from prometheus_client import REGISTRY
from typer.testing import CliRunner

from services.core.config import Topics
from services.core.domain.model import LabResult, Transport
from services.gateway import issue_catalogue as catalogue
from services.gateway.fhir_outcome import operation_outcome
from services.gateway.hl7 import normalize as normalize_module
from services.gateway.hl7.parse import parse_message
from services.gateway.identity import IdentityProtector
from services.gateway.intake import Intake
from services.gateway.labs import Lab, LabRegistry
from services.gateway.publish import DEFAULT_MAX_RECORD_BYTES, DeliveryFailed, Record
from services.gateway.sender import claims_other_lab
from services.gateway.submission import Submission, handle_csv, handle_fhir, handle_hl7
from services.gateway.validation import detect_format, validate

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
PROTECTOR = IdentityProtector(b"0123456789abcdef0123456789abcdef", bytes(PrivateKey.generate().public_key))
TOPICS = Topics("t.")
LAB = Lab("LABO-AJACCIO", "Ajaccio", "2A0000018", True, None, None)
OTHER = Lab("LAB-OTHER", "Other", None, True, None, None)
OK_HL7 = (FIXTURES / "hl7" / "ok_v251.hl7").read_bytes()
AE_HL7 = (FIXTURES / "hl7" / "ae_bad_ins_key.hl7").read_bytes()
OK_FHIR = (FIXTURES / "fhir" / "ok_two_observations.json").read_bytes()
BAD_FHIR = (FIXTURES / "fhir" / "ae_invalid_content.json").read_bytes()
CSV = (FIXTURES / "csv" / "ok_and_invalid_rows.csv").read_bytes()


class FakePublisher:
    max_record_bytes = DEFAULT_MAX_RECORD_BYTES

    def __init__(self, fail: Exception | None = None) -> None:
        self.records: list[Record] = []
        self.fail = fail

    def fits(self, record: Record) -> bool:
        return record.size() <= self.max_record_bytes

    async def publish(self, records: Sequence[Record]) -> None:
        if self.fail is not None:
            raise self.fail
        self.records += records


def registry(*labs: Lab) -> LabRegistry:
    found = LabRegistry(lambda: list(labs))
    found.install(labs)
    return found


def intake(publisher: FakePublisher, *labs: Lab) -> Intake:
    return Intake(publisher, TOPICS, PROTECTOR, registry(*labs) if labs else None)


def topics(publisher: FakePublisher) -> list[str]:
    names = {TOPICS.raw: "raw", TOPICS.rejected: "rejected", TOPICS.results: "results"}
    return sorted(names[r.topic] for r in publisher.records)


def answers(submission: Submission) -> list[tuple[str, str, list[tuple[str | None, str]]]]:
    return [
        (item.ref, item.ack_code, [(r.location, r.code) for r in item.reasons])
        for item in submission.response().items
    ]


def test_a_lab_sends_as_itself_by_its_lab_id_or_its_finess() -> None:
    assert not claims_other_lab(("LAB", "2A0000018"), ("LAB", None))
    assert not claims_other_lab(("LAB", "2A0000018"), ("LABO-AJACCIO", "2A0000018"))
    assert claims_other_lab(("LAB", None), ("LAB-B", "2A0000018"))
    assert not claims_other_lab(("LAB", None), ("", None))  # no sender named: refused for that instead


def test_an_hl7_batch_is_answered_per_message_and_only_accepted_results_are_published() -> None:
    publisher = FakePublisher()
    body = b"BHS|^~\\&\r" + OK_HL7 + AE_HL7 + b"BTS|3\r"
    submission = asyncio.run(handle_hl7(intake(publisher), LAB, body))
    assert [(ref, code) for ref, code, _ in answers(submission)] == [("message 1", "AA"), ("message 2", "AE")]
    assert answers(submission)[1][2] == [("PID-3.1", "102")]
    assert submission.warnings == ["BTS-1: batch 1 announces 3 messages, 2 were sent"]
    assert submission.status() == (200, None, None)
    assert topics(publisher) == ["raw", "raw", "rejected", "results"]


def test_an_hl7_message_from_another_lab_is_refused_and_the_submission_forbidden() -> None:
    submission = asyncio.run(handle_hl7(intake(FakePublisher()), OTHER, OK_HL7))
    ((_, code, reasons),) = answers(submission)
    assert (code, reasons[0][1]) == ("AR", "204")
    status, error, detail = submission.status()
    assert (status, error) == (403, "forbidden") and "message 1 is from 'LABO-AJACCIO'" in (detail or "")


def test_the_header_of_an_http_hl7_message_is_parsed_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """Before: the HTTP route parsed each message's MSH for the sender check, then the intake again."""
    calls = []

    def counting(text: str) -> object:
        calls.append(text[:3])
        return parse_message(text)

    monkeypatch.setattr(normalize_module, "parse_message", counting)
    asyncio.run(handle_hl7(intake(FakePublisher()), LAB, OK_HL7))
    assert calls == ["MSH"]


def test_a_registry_that_does_not_know_the_lab_refuses_it() -> None:
    submission = asyncio.run(handle_hl7(intake(FakePublisher(), OTHER), LAB, OK_HL7))
    ((_, code, reasons),) = answers(submission)
    assert (code, reasons) == ("AR", [("MSH-4.1", "204")])


def test_fhir_and_csv_items_are_located_in_their_own_terms() -> None:
    publisher = FakePublisher()
    fhir = asyncio.run(handle_fhir(intake(publisher), LAB, OK_FHIR))
    assert answers(fhir) == [("bundle", "AA", [])]
    csv = asyncio.run(handle_csv(intake(publisher), LAB, CSV))
    codes = [(ref, code) for ref, code, _ in answers(csv)]
    assert codes == [("row 1", "AA"), ("row 2", "AA"), ("row 3", "AE")]
    assert ("row 3, column ins", "102") in answers(csv)[2][2]


def test_each_reason_carries_the_catalogue_hint_also_in_the_fhir_operation_outcome() -> None:
    submission = asyncio.run(handle_fhir(intake(FakePublisher()), LAB, BAD_FHIR))
    reasons = submission.response().items[0].reasons
    ins = next(r for r in reasons if r.location == "Bundle.entry[0].resource.identifier")
    assert ins.hint == catalogue.INS_INVALID.hint
    outcome = operation_outcome(submission.response().model_dump(mode="json"), 200)
    (issue,) = [i for i in outcome["issue"] if i.get("expression") == [ins.location]]
    assert issue["diagnostics"] == catalogue.INS_INVALID.hint
    # an issue the catalogue has no hint for has none
    refused = asyncio.run(handle_fhir(intake(FakePublisher()), LAB, b"{not json"))
    assert refused.response().items[0].reasons[0].hint is None


@pytest.mark.parametrize(
    ("use_case", "body", "expected"),
    [
        (handle_fhir, b"{not json", (400, "malformed-json")),
        (handle_fhir, b'{"resourceType": "Patient"}', (422, "not-a-bundle")),
        (handle_csv, b"specimen_id,collected_at,loinc,result\n", (422, "no-rows")),
    ],
)
def test_an_unreadable_body_is_refused_whole_and_kept_on_the_rejected_topic(
    use_case: object, body: bytes, expected: tuple[int, str]
) -> None:
    publisher = FakePublisher()
    submission = asyncio.run(use_case(intake(publisher), LAB, body))  # type: ignore[operator]
    assert submission.status()[:2] == expected
    assert topics(publisher) == ["raw", "rejected"]


def test_when_the_bus_does_not_confirm_nothing_is_acknowledged() -> None:
    submission = asyncio.run(handle_csv(intake(FakePublisher(fail=DeliveryFailed("down"))), LAB, CSV))
    assert submission.status()[:2] == (503, "unavailable")


@pytest.mark.parametrize(
    ("kind", "body"),
    [("hl7", OK_HL7), ("hl7", AE_HL7), ("fhir", OK_FHIR), ("fhir", BAD_FHIR), ("fhir", b"[1"), ("csv", CSV)],
)
def test_validation_answers_what_intake_would_and_publishes_nothing(kind: str, body: bytes) -> None:
    use_case = {"hl7": handle_hl7, "fhir": handle_fhir, "csv": handle_csv}[kind]
    stored, validated = FakePublisher(), FakePublisher()
    submission = asyncio.run(use_case(intake(stored, LAB), LAB, body))
    validating = intake(validated, LAB).without_publishing()
    report = asyncio.run(validate(validating, LAB, body, detect_format(body)))
    assert report.format == kind
    assert validated.records == [] and stored.records != []
    assert report.intake_status == submission.status()[0]
    intake_items = [(i.ref, i.ack_code, [(r.location, r.code, r.text) for r in i.reasons])
                    for i in submission.response().items]
    validation_items = [(i.ref, i.ack_code, [(f.location, f.code, f.text) for f in i.issues])
                        for i in report.items]
    # the CSV rows' and refused bodies' control ids are made from the submission id: compare the rest
    assert validation_items == intake_items


def test_validation_previews_what_would_be_counted_without_identity() -> None:
    answered = REGISTRY.get_sample_value(
        "labflow_gateway_messages_total", {"lab": LAB.lab_id, "transport": "http-csv", "ack_code": "AA"}
    )
    report = asyncio.run(validate(intake(FakePublisher()).without_publishing(), LAB, CSV, "csv"))
    assert REGISTRY.get_sample_value(  # nor is it in the gateway's metrics
        "labflow_gateway_messages_total", {"lab": LAB.lab_id, "transport": "http-csv", "ack_code": "AA"}
    ) == answered
    counted = [c.model_dump(mode="json") for item in report.items for c in item.counted]
    assert counted[0] == {
        "test_kind": "rt-pcr", "outcome": "positive", "status": "F", "collection_day": "2024-01-10",
        "department": "75", "age_class": "49",
    }
    assert len(counted) == 2  # the rejected row counts nothing
    text = report.model_dump_json()
    for identity in ("DUPONT", "279035121518989", "1979", "0601020304", "Paris"):
        assert identity not in text


@pytest.mark.parametrize(
    ("name", "body", "content_type", "expected"),
    [
        (None, b"MSH|^~\\&|", None, "hl7"),
        (None, b"\xef\xbb\xbfFHS|^~\\&|", None, "hl7"),
        (None, b'  {"resourceType": "Bundle"}', None, "fhir"),
        (None, b"specimen_id;loinc", None, "csv"),
        ("results.csv", b"MSH|", None, "csv"),
        ("message.txt", b"MSH|", None, "hl7"),
        (None, b"MSH|", "application/fhir+json; charset=utf-8", "fhir"),
    ],
)
def test_formats_are_told_by_media_type_then_extension_then_content(
    name: str | None, body: bytes, content_type: str | None, expected: str
) -> None:
    assert detect_format(body, name=name, content_type=content_type) == expected


def test_the_cli_validates_files_offline(tmp_path: Path) -> None:
    """No Kafka, no PostgreSQL: the settings point at ports where nothing listens."""
    from services.cli import app

    bad = tmp_path / "bad.hl7"
    bad.write_bytes(AE_HL7)
    env = {"LABFLOW_KAFKA_BOOTSTRAP": "127.0.0.1:9", "LABFLOW_DATABASE_URL": "postgresql://x@127.0.0.1:9/x"}
    runner = CliRunner()
    ok = runner.invoke(app, ["validate", str(FIXTURES / "hl7" / "ok_v251.hl7"), "--lab", LAB.lab_id], env=env)
    assert ok.exit_code == 0, ok.output
    assert "intake would answer 200, accepted" in ok.output and "counted: rt-pcr positive" in ok.output

    ok_file = str(FIXTURES / "hl7" / "ok_v251.hl7")
    both = runner.invoke(app, ["validate", ok_file, str(bad), "--lab", LAB.lab_id, "--json"], env=env)
    assert both.exit_code == 1, both.output
    reports = json.loads(both.output)
    assert [r["items"][0]["ack_code"] for r in reports] == ["AA", "AE"]
    assert reports[1]["items"][0]["issues"][0] | {"hint": None} == {
        "location": "PID-3.1", "segment": "PID", "sequence": 1, "field": 3, "component": 1, "code": "102",
        "severity": "E", "text": "PID-3: INS key 42 does not match matricule (expected 89)", "hint": None,
    }
    assert "matricule" in reports[1]["items"][0]["issues"][0]["hint"]  # the issue catalogue's fix

    csv_as_other = runner.invoke(app, ["validate", str(FIXTURES / "csv" / "ok_and_invalid_rows.csv"),
                                       "--lab", "LAB-OTHER"], env=env)
    assert csv_as_other.exit_code == 1 and "row 3, column ins" in csv_as_other.output


def test_the_cli_reads_times_without_an_offset_in_the_lab_zone(tmp_path: Path) -> None:
    """SPEC §8.1 offline: a Réunion lab (its FINESS department, or --time-zone) previews the collection
    day it will be counted on."""
    from services.cli import app

    raw = OK_HL7
    for old, new in ((b"20240115080000+0100", b"20240115233000"), (b"20240115100000+0100", b"20240116080000"),
                     (b"20000^FRA", b"97400^FRA")):
        raw = raw.replace(old, new)
    local = tmp_path / "reunion.hl7"
    local.write_bytes(raw)
    env = {"LABFLOW_KAFKA_BOOTSTRAP": "127.0.0.1:9", "LABFLOW_DATABASE_URL": "postgresql://x@127.0.0.1:9/x"}

    def day(*options: str) -> str:
        args = ["validate", str(local), "--lab", LAB.lab_id, "--json", *options]
        run = CliRunner().invoke(app, args, env=env)
        assert run.exit_code == 0, run.output
        return str(json.loads(run.output)[0]["items"][0]["counted"][0]["collection_day"])

    assert day("--finess", "974000019") == "2024-01-15"
    assert day("--time-zone", "Indian/Reunion") == "2024-01-15"
    assert day() == "2024-01-16"  # read in Paris, 23:30 there is 02:30 on the 16th in Réunion


@pytest.mark.parametrize(
    "args",
    [["validate", "/nonexistent/file.hl7", "--lab", "LAB"], ["validate", "x.hl7", "--lab", "bad lab"],
     ["validate", "x.hl7", "--lab", "LAB", "--format", "xml"]],
)
def test_cli_operator_errors_exit_2_with_one_line(
    args: list[str], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from services.cli import main

    monkeypatch.setattr(sys, "argv", ["labflow", *args])
    with pytest.raises(SystemExit) as exit_info:
        main()
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("labflow: "), err


def test_a_reunion_lab_registered_in_its_zone_gets_its_local_collection_day() -> None:
    """SPEC §8.1 through the intake: the registry's time zone of the sending lab (MSH-4.1) is the one
    offset-less times are read in — 23:30 in Réunion is still 15 January there, not the 16th as in Paris."""
    raw = OK_HL7
    for old, new in ((b"20240115080000+0100", b"20240115233000"), (b"20240115100000+0100", b"20240116080000"),
                     (b"20000^FRA", b"97400^FRA")):
        raw = raw.replace(old, new)
    reunion = Lab("LABO-AJACCIO", "Saint-Denis", "974000019", True, None, None, time_zone="Indian/Reunion")

    def stored_day(*labs: Lab) -> date:
        publisher = FakePublisher()
        outcome = asyncio.run(intake(publisher, *labs).receive_hl7(raw, Transport.MLLP))
        assert outcome.ack_code == "AA", outcome.issues
        (record,) = [r for r in publisher.records if r.topic == TOPICS.results]
        return LabResult.model_validate_json(record.value).collection_day

    assert stored_day(reunion) == date(2024, 1, 15)
    assert stored_day(LAB) == date(2024, 1, 16)  # the same times read in Paris


def test_a_csv_row_without_an_offset_is_read_in_the_registered_lab_zone() -> None:
    """SPEC §8.1 for CSV (and FHIR, the same rows): the token's lab's zone, as for HL7."""
    body = (
        b"specimen_id;collected_at;result_at;loinc;result;ins;postal_code\n"
        b"TZ-1;2024-01-15 23:30;2024-01-16 08:00;94500-6;POSITIF;279035121518989;97400\n"
    )
    reunion = Lab("LABO-AJACCIO", "Saint-Denis", "974000019", True, None, None, time_zone="Indian/Reunion")

    def stored_day(lab: Lab) -> date:
        publisher = FakePublisher()
        submission = asyncio.run(handle_csv(intake(publisher, lab), lab, body))
        assert submission.status()[0] == 200, submission.response()
        (record,) = [r for r in publisher.records if r.topic == TOPICS.results]
        return LabResult.model_validate_json(record.value).collection_day

    assert stored_day(reunion) == date(2024, 1, 15)
    assert stored_day(LAB) == date(2024, 1, 16)
