"""FHIR R4 Bundle → result rows → checked as HL7 v2: the same normalized results and reasons."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from nacl.public import PrivateKey

from services.core.domain.model import Outcome, PseudonymBasis, ResultStatus, TestKind, Transport
from services.gateway.fhir import BundleContent, FhirError, read_bundle
from services.gateway.hl7.normalize import Normalized
from services.gateway.identity import IdentityProtector
from services.gateway.result_drafts import RowContent, header_for, normalize_rows

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "fhir"
NOW = datetime(2024, 1, 16, tzinfo=UTC)
PROTECTOR = IdentityProtector(b"0123456789abcdef0123456789abcdef", bytes(PrivateKey.generate().public_key))


def load(name: str) -> Any:
    return json.loads((FIXTURES / name).read_text())


def convert(content: BundleContent, lab: str = "LAB-HTTP") -> tuple[RowContent, Normalized]:
    header = header_for(lab, "2A0000018", content.control_id or "X")
    normalized, rows = normalize_rows(content.rows, header, received_at=NOW, transport=Transport.HTTP_FHIR,
                                      protector=PROTECTOR, now=NOW)
    return rows, normalized


def test_a_valid_bundle_gives_one_result_per_observation() -> None:
    content = read_bundle(load("ok_two_observations.json"))

    assert content.control_id == "FHIR-CTRL-0001"
    assert content.performers == [("2A0000018",)]
    assert content.issues == []
    _, normalized = convert(content)
    assert normalized.ack_code == "AA", normalized.issues
    first, second = normalized.results
    assert (first.loinc, first.test_kind, first.outcome, first.status) == (
        "94500-6", TestKind.RT_PCR, Outcome.POSITIVE, ResultStatus.FINAL)
    assert (second.loinc, second.test_kind, second.outcome) == ("94558-4", TestKind.ANTIGEN, Outcome.NEGATIVE)
    assert first.specimen_id == second.specimen_id == "FHIR-SPEC-0001"
    assert first.specimen_type == "258500001"
    assert first.collected_at == datetime(2024, 1, 10, 7, 15, tzinfo=UTC)
    assert first.result_at == datetime(2024, 1, 10, 17, 5, tzinfo=UTC)
    assert first.observed_at == datetime(2024, 1, 10, 17, 0, tzinfo=UTC)
    assert (first.department, first.region, first.postal_code) == ("2A", "94", "20000")
    assert (first.sending_facility, first.lab_finess, first.transport) == (
        "LAB-HTTP", "2A0000018", Transport.HTTP_FHIR)
    # the same person as over HL7: the pseudonym is the INS's
    assert first.pseudonym_basis is PseudonymBasis.INS
    assert first.patient_pseudonym == PROTECTOR.pseudonym_from_ins("279035121518989")
    assert first.sealed_identity is not None


def test_invalid_content_is_refused_with_the_hl7_reasons_located_in_fhir_terms() -> None:
    content = read_bundle(load("ae_invalid_content.json"))
    converted, normalized = convert(content)

    assert normalized.ack_code == "AE"
    located = {(converted.locate(i), i.code, i.text) for i in normalized.issues}
    assert ("Bundle.entry[0].resource.identifier", "102",
            "PID-3: INS key 88 does not match matricule (expected 89)") in located
    assert ("Bundle.entry[1].resource.code", "103", "OBX-3: unknown LOINC code 12345-6") in located
    assert ("Bundle.entry[1].resource.valueString", "103",
            "OBX-5: result value 'PEUT-ETRE' cannot be interpreted") in located
    assert any(where == "Bundle.entry[3].resource.effectiveDateTime" and "after the result time" in text
               for where, _, text in located)
    before = {(where, issue.severity, issue.text) for issue, where in content.issues}
    missing = "Bundle.entry[3].resource.result[1]"
    assert (missing, "E", f"{missing}: the referenced Observation is not in the Bundle") in before
    assert ("Bundle.entry[2].resource", "W", "Bundle.entry[2].resource: Observation not listed in any "
            "DiagnosticReport.result: not read") in before


def test_a_bundle_without_report_is_an_error_not_a_silent_drop() -> None:
    observation = {"resource": {"resourceType": "Observation"}}
    content = read_bundle({"resourceType": "Bundle", "entry": [observation]})
    texts = [(issue.severity, issue.text) for issue, _ in content.issues]
    assert ("E", "Bundle.entry: the Bundle has no DiagnosticReport") in texts
    _, normalized = convert(content)
    assert normalized.ack_code == "AE"


@pytest.mark.parametrize("document", [{"resourceType": "Patient"}, [], "Bundle", {"resourceType": "Bundle",
                                                                                   "entry": {}}])
def test_what_is_not_a_bundle_is_refused(document: Any) -> None:
    with pytest.raises(FhirError):
        read_bundle(document)


def test_the_not_a_bundle_fixture() -> None:
    with pytest.raises(FhirError, match="not a FHIR Bundle"):
        read_bundle(load("not_a_bundle.json"))


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=12),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(
        st.sampled_from(["resourceType", "entry", "resource", "reference", "subject", "result", "code",
                         "coding", "system", "identifier", "value", "fullUrl", "id", "name", "specimen"]),
        children, max_size=5),
    max_leaves=30,
)


@settings(max_examples=300, deadline=None)
@given(entries=st.lists(json_values, max_size=6))
def test_reading_any_json_never_raises(entries: list[Any]) -> None:
    content = read_bundle({"resourceType": "Bundle", "entry": entries})
    convert(content)
