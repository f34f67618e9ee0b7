from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta, timezone, tzinfo
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from nacl.public import PrivateKey

from services.core.domain.model import (
    PARIS,
    LabResult,
    Outcome,
    PseudonymBasis,
    ResultStatus,
    Sex,
    TestKind,
    Transport,
)
from services.core.sealing import open_sealed
from services.gateway.hl7.datatypes import read_dtm_text
from services.gateway.hl7.normalize import Normalized, normalize_header, normalize_oru, parse_dtm
from services.gateway.identity import IdentityProtector
from tests.hl7_messages import oru_messages

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "hl7"
NOW = datetime(2024, 1, 16, tzinfo=UTC)
KEY = PrivateKey.generate()
PROTECTOR = IdentityProtector(b"0123456789abcdef0123456789abcdef", bytes(KEY.public_key))
INS = "279035121518989"


def normalize(raw: bytes, **kwargs: object) -> Normalized:
    return normalize_oru(
        raw,
        received_at=NOW,
        transport=Transport.MLLP,
        protector=PROTECTOR,
        now=NOW,
        **kwargs,  # type: ignore[arg-type]
    )


def fixture(name: str) -> Normalized:
    return normalize((FIXTURES / name).read_bytes())


def expected_codes() -> list[tuple[str, str]]:
    rows = re.findall(r"^\| (\S+\.hl7) \|.*\| (A[AER]) \|$", (FIXTURES / "README.md").read_text(), re.M)
    return [(name, code) for name, code in rows]


def test_readme_lists_every_fixture() -> None:
    assert sorted(name for name, _ in expected_codes()) == sorted(p.name for p in FIXTURES.glob("*.hl7"))


@pytest.mark.parametrize(("name", "code"), expected_codes())
def test_fixture_ack_code(name: str, code: str) -> None:
    result = fixture(name)
    assert result.ack_code == code, result.issues
    if code == "AA":
        assert result.results and not [i for i in result.issues if i.is_error]
    for issue in result.issues:
        assert INS not in issue.text and "DUPONT" not in issue.text and "1979" not in issue.text


UNSET = ("schema_version", "lab_mode")


def assert_as_validated(result: LabResult) -> None:
    """`result` is what pydantic's validation of its values gives: the normalizer builds results
    without validating them again (`normalize._checked_result`). It sets every field but the schema
    version and the lab mode (the intake's)."""
    given = {name: getattr(result, name) for name in LabResult.model_fields if name not in UNSET}
    validated = LabResult(**given)
    assert validated == result
    assert validated.model_fields_set == result.model_fields_set
    assert validated.model_dump_json() == result.model_dump_json()
    assert validated.model_dump() == result.model_dump()
    for name in LabResult.model_fields:
        assert type(getattr(validated, name)) is type(getattr(result, name)), name


@pytest.mark.parametrize(("name", "code"), expected_codes())
def test_fixture_results_are_as_validated(name: str, code: str) -> None:
    for result in fixture(name).results:
        assert_as_validated(result)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(oru_messages(labs=("LAB01", "LAB&1", "L^1", "LAB\\01"), without_ins=(0.0, 0.5, 1.0), names=True))
def test_results_are_as_validated(message: bytes) -> None:
    normalized = normalize(message)
    assert normalized.results
    for result in normalized.results:
        assert_as_validated(result)


def test_v251_values() -> None:
    result = fixture("ok_v251.hl7")
    header = result.header
    assert header is not None
    assert (header.version, header.control_id, header.message_type, header.trigger_event) == (
        "2.5.1",
        "OK251",
        "ORU",
        "R01",
    )
    assert (header.sending_application, header.sending_facility, header.lab_finess) == (
        "LIS",
        "LABO-AJACCIO",
        "123456789",
    )
    assert (header.accept_ack_type, header.application_ack_type) == ("AL", "NE")
    [r] = result.results
    assert r.patient_pseudonym == PROTECTOR.pseudonym_from_ins(INS)
    assert r.pseudonym_basis is PseudonymBasis.INS
    assert (r.sex, r.birth_year, r.age_class) == (Sex.FEMALE, 1979, "49")
    assert (r.postal_code, r.department, r.region) == ("20000", "2A", "94")
    assert (r.loinc, r.test_kind, r.outcome, r.status) == (
        "94500-6",
        TestKind.RT_PCR,
        Outcome.POSITIVE,
        ResultStatus.FINAL,
    )
    assert (r.specimen_id, r.specimen_type) == ("S0001", "258500001")
    assert r.collected_at == datetime(2024, 1, 15, 8, tzinfo=timezone(timedelta(hours=1)))
    assert r.result_at == datetime(2024, 1, 15, 10, tzinfo=timezone(timedelta(hours=1)))
    assert r.lab_finess == "123456789" and r.message_control_id == "OK251"
    identity = open_sealed(bytes(KEY), r.sealed_identity or "")
    assert identity["ins"] == INS
    assert identity["birth_name"] == "DUPONT" and identity["given_names"] == "Marie"
    assert identity["birth_date"] == "1979-03-01"
    assert identity["phone"] == "0601020304" and identity["email"] == "marie@example.fr"
    assert identity["address"]["city"] == "Ajaccio"


def test_v231_specimen_in_obr() -> None:
    [r] = fixture("ok_v231.hl7").results
    assert (r.specimen_id, r.specimen_type, r.department, r.outcome) == (
        "S2310",
        "258500001",
        "2B",
        Outcome.NEGATIVE,
    )


def test_result_id_is_stable_across_versions_of_a_result() -> None:
    final = fixture("ok_v251.hl7").results[0]
    corrected = fixture("ok_correction.hl7").results[0]
    cancelled = fixture("ok_cancellation.hl7").results[0]
    assert final.result_id == corrected.result_id == cancelled.result_id
    assert corrected.status is ResultStatus.CORRECTED and corrected.outcome is Outcome.NEGATIVE
    assert cancelled.status is ResultStatus.CANCELLED and cancelled.status.retracts


def test_two_patients_and_traits() -> None:
    first, second = fixture("ok_two_patients.hl7").results
    assert first.pseudonym_basis is PseudonymBasis.INS
    assert second.pseudonym_basis is PseudonymBasis.TRAITS
    assert second.patient_pseudonym == PROTECTOR.pseudonym_from_traits(
        "LEFEVRE", "noel", date(2010, 7, 4), "M"
    )
    assert (second.department, second.age_class, second.test_kind) == ("69", "19", TestKind.ANTIGEN)


def test_traits_pseudonym_first_given_name() -> None:
    [r] = fixture("ok_no_ins_traits.hl7").results
    assert r.patient_pseudonym == PROTECTOR.pseudonym_from_traits(
        "Lefevre", "MARIE-ELODIE", date(1979, 3, 1), "F"
    )
    assert open_sealed(bytes(KEY), r.sealed_identity or "")["ins"] is None


def test_escapes_are_decoded() -> None:
    [r] = fixture("ok_escapes.hl7").results
    identity = open_sealed(bytes(KEY), r.sealed_identity or "")
    assert identity["birth_name"] == "D'ALMEIDA&FILS"
    assert identity["given_names"] == "Anne^Sophie"
    assert identity["address"]["street"] == "3 rue |des| lilas\nbât B"
    assert r.department == "06"


def test_panel_and_values() -> None:
    results = fixture("ok_three_results.hl7").results
    assert [r.loinc for r in results] == ["94500-6", "94316-7", "94309-2"]
    assert {r.outcome for r in results} == {Outcome.POSITIVE}
    assert len({r.result_id for r in results}) == 3
    values = fixture("ok_snomed_and_text.hl7").results
    assert [r.outcome for r in values] == [Outcome.NEGATIVE] * 3


def test_ask_at_order_entry_is_not_a_result() -> None:
    result = fixture("ok_ask_at_order_entry.hl7")
    assert result.non_results == 2 and len(result.results) == 1


def test_crlf_and_overseas() -> None:
    [r] = fixture("ok_crlf.hl7").results
    assert (r.department, r.region) == ("971", "01")


@pytest.mark.parametrize(
    ("name", "location", "code", "text"),
    [
        (
            "ae_bad_ins_key.hl7",
            ("PID", 1, 3, 1),
            "102",
            "PID-3: INS key 42 does not match matricule (expected 89)",
        ),
        ("ae_unknown_loinc.hl7", ("OBX", 1, 3, 1), "103", "OBX-3: unknown LOINC code 12345-6"),
        (
            "ae_uninterpretable_value.hl7",
            ("OBX", 1, 5, None),
            "103",
            "OBX-5: result value 'MAYBE' cannot be interpreted",
        ),
        (
            "ae_collection_future.hl7",
            ("SPM", 1, 17, None),
            "102",
            "SPM-17: specimen collection time is in the future",
        ),
        (
            "ae_collection_after_result.hl7",
            ("SPM", 1, 17, None),
            "102",
            "SPM-17: specimen collection time is after the result time (OBR-22)",
        ),
        ("ae_no_obx.hl7", ("OBX", 1, None, None), "101", "message has no result (OBX)"),
        (
            "ae_bad_sex.hl7",
            ("PID", 1, 8, None),
            "103",
            "PID-8: unknown administrative sex code 'Z' (expected F, M, O, U, A or N)",
        ),
        ("ae_bad_date.hl7", ("OBR", 1, 7, 1), "102", "OBR-7: invalid date/time"),
        (
            "ar_adt_a01.hl7",
            ("MSH", 1, 9, 1),
            "200",
            "MSH-9: unsupported message type 'ADT^A01' (only ORU^R01)",
        ),
        (
            "ar_version_22.hl7",
            ("MSH", 1, 12, None),
            "203",
            "MSH-12: unsupported version '2.2' (2.3.1, 2.5 or 2.5.1)",
        ),
        (
            "ar_not_hl7.hl7",
            ("", 0, None, None),
            "100",
            "not an HL7 v2 message: it does not start with an MSH segment",
        ),
    ],
)
def test_rejections(
    name: str, location: tuple[str, int, int | None, int | None], code: str, text: str
) -> None:
    [issue] = fixture(name).issues
    assert (issue.segment, issue.sequence, issue.field, issue.component) == location
    assert (issue.code, issue.text) == (code, text)
    assert issue.reject is name.startswith("ar_")


def test_results_listed_but_message_refused_on_error() -> None:
    result = fixture("ae_bad_sex.hl7")
    assert result.ack_code == "AE" and len(result.results) == 1


def test_authenticated_lab() -> None:
    raw = (FIXTURES / "ok_v251.hl7").read_bytes()
    assert normalize(raw, authenticated_lab="LABO-AJACCIO").ack_code == "AA"
    assert normalize(raw, authenticated_lab="123456789").ack_code == "AA"
    [issue] = normalize(raw, authenticated_lab="OTHER").issues
    assert issue.reject and issue.code == "204" and issue.field == 4


def replace(name: str, old: str, new: str) -> bytes:
    raw = (FIXTURES / name).read_bytes()
    assert old.encode() in raw
    return raw.replace(old.encode(), new.encode())


@pytest.mark.parametrize(
    ("old", "new", "text"),
    [
        ("|19790301|", "|20300101|", "PID-7: birth date is in the future"),
        ("|19790301|", "|18800101|", "PID-7: birth date is more than 120 years ago"),
        ("|19790301|", "|1979-03|", "PID-7: invalid birth date"),
        ("||||||F|||", "||||||R|||", "OBX-11: unsupported result status 'R' (expected F, C, P, X, D or W)"),
        ("||||||F|||", "|||||||||", "OBX-11: result status missing"),
        ("260373001^Detected^SCT", "", "OBX-5: result value missing"),
        ("|94500-6^SARS-CoV-2^LN|", "||", "OBX-3: observation identifier (LOINC) missing"),
        ("|OK251|", "||", "MSH-10: message control id missing"),
        ("PID|1||", "OBX|9|ST|94500-6^x^LN||POSITIF||||||F\rPID|1||", "OBX without a preceding OBR"),
    ],
)
def test_other_errors(old: str, new: str, text: str) -> None:
    result = normalize(replace("ok_v251.hl7", old, new))
    assert result.ack_code == "AE"
    assert text in [issue.text for issue in result.issues]


def test_no_ins_requires_traits() -> None:
    raw = replace("ok_no_ins_traits.hl7", "LEFÈVRE^Marie-Élodie^^^^^L", "^^^^^^L")
    texts = [issue.text for issue in normalize(raw).issues]
    assert "PID-5: birth name required when no INS is sent" in texts
    assert "PID-5: given name required when no INS is sent" in texts


def test_sex_mapping_and_unknown_postal_code() -> None:
    [r] = normalize(
        replace("ok_v251.hl7", "|19790301|F|", "|19790301|O|").replace(b"20000^FRA", b"99000^FRA")
    ).results
    assert (r.sex, r.department, r.region, r.postal_code) == (Sex.UNKNOWN, None, None, "99000")
    [r] = normalize(replace("ok_v251.hl7", "20000^FRA", "20000^ITA")).results
    assert r.department is None


def test_obx_time_and_performing_lab() -> None:
    raw = replace(
        "ok_v251.hl7",
        "|20240115100000+0100\rSPM",
        "|20240115100000+0100|||||||||LAB-B^^^^^^^^^750000001\rSPM",
    )
    [r] = normalize(raw).results
    assert r.performing_lab == "750000001"
    assert r.observed_at == datetime(2024, 1, 15, 9, tzinfo=UTC)


def test_clock_skew_is_tolerated() -> None:
    raw = (FIXTURES / "ok_v251.hl7").read_bytes()
    now = datetime(2024, 1, 15, 9, 57, tzinfo=UTC)  # 10:57 Paris: result time 10:00, collection 08:00
    assert (
        normalize_oru(raw, received_at=now, transport=Transport.MLLP, protector=PROTECTOR, now=now).ack_code
        == "AA"
    )
    early = datetime(2024, 1, 15, 8, 50, tzinfo=UTC)
    result = normalize_oru(raw, received_at=early, transport=Transport.MLLP, protector=PROTECTOR, now=early)
    assert [i.text for i in result.issues] == ["OBR-22: result time is in the future"]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2024", datetime(2024, 1, 1, tzinfo=PARIS)),
        ("20240115", datetime(2024, 1, 15, tzinfo=PARIS)),
        ("202407151230", datetime(2024, 7, 15, 12, 30, tzinfo=PARIS)),
        ("20240115123045.5", datetime(2024, 1, 15, 12, 30, 45, 500000, tzinfo=PARIS)),
        ("20240115123045-0500", datetime(2024, 1, 15, 12, 30, 45, tzinfo=timezone(timedelta(hours=-5)))),
        ("20240115123045.1234+0000", datetime(2024, 1, 15, 12, 30, 45, 123400, tzinfo=UTC)),
    ],
)
def test_parse_dtm(value: str, expected: datetime) -> None:
    parsed = parse_dtm(value)
    assert parsed == expected and parsed.tzinfo is not None
    assert parsed.utcoffset() == expected.utcoffset()


@pytest.mark.parametrize(
    "value",
    [
        "2024-01-15",
        "20241301",
        "20240230",
        "202401151",
        "2024011512+01",
        "20240115.5",
        "20240115123045+2400",
        "２０２４",
    ],
)
def test_parse_dtm_rejects(value: str) -> None:
    with pytest.raises(ValueError):
        parse_dtm(value)


def _reading(read: Callable[[str, tzinfo], datetime], value: str) -> tuple[datetime, object] | str:
    try:
        parsed = read(value, PARIS)
    except ValueError:
        return "refused"
    return parsed, parsed.utcoffset()


def _two_digits(high: int) -> st.SearchStrategy[str]:
    return st.integers(0, high).map("{:02d}".format)


FULL_DTM = st.tuples(
    st.sampled_from(("1799", "1800", "2024", "9998", "9999", "0000")),
    _two_digits(13),  # month
    _two_digits(32),  # day
    _two_digits(24),  # hour
    _two_digits(60),  # minute
    _two_digits(61),  # second
    st.sampled_from("+-"),
    _two_digits(25),  # offset hours
    _two_digits(99),  # offset minutes
).map("".join)


@settings(max_examples=500)
@given(value=FULL_DTM | st.text(alphabet="0123456789+-.T:٣", min_size=17, max_size=21))
def test_parse_dtm_full_form_as_the_general_reading(value: str) -> None:
    # the full form with an offset is read by datetime.fromisoformat: the same datetimes, offsets and
    # refusals as the field-by-field reading of every form
    assert _reading(parse_dtm.__wrapped__, value) == _reading(read_dtm_text, value)


def test_normalize_header_from_truncated_head() -> None:
    raw = (FIXTURES / "ok_v251.hl7").read_bytes()[:200]
    header = normalize_header(raw)
    assert header is not None and header.control_id == "OK251"
    assert normalize_header(b"GET / HTTP/1.1\r\n") is None


def test_the_gateway_maps_regions_from_the_configured_reference_dir(tmp_path: Path) -> None:
    """LABFLOW_REFERENCE_DIR moves the gateway too, not only open data and the dashboard."""
    import shutil

    from services.core.config import Settings
    from services.gateway.bootstrap import build_intake

    default = fixture("ok_v251.hl7").results[0]
    assert default.department is not None and default.region is not None
    for name in ("departments.csv", "population_dep_age.csv", "regions.csv"):
        shutil.copy(Settings().reference_dir / name, tmp_path / name)
    departments = tmp_path / "departments.csv"
    lines = departments.read_text(encoding="utf-8").splitlines()
    header = lines[0].split(";")
    dep, reg = header.index("dep"), header.index("reg")
    edited = [lines[0]]
    for line in lines[1:]:
        cells = line.split(";")
        if cells[dep] == default.department:
            cells[reg] = "99"
        edited.append(";".join(cells))
    departments.write_text("\n".join(edited) + "\n", encoding="utf-8")

    settings = Settings(reference_dir=tmp_path, pseudonym_key="00" * 32,
                        tracing_public_key=bytes(KEY.public_key).hex())
    intake = build_intake(settings, publisher=None, labs=None)  # type: ignore[arg-type]
    moved = normalize((FIXTURES / "ok_v251.hl7").read_bytes(), department_region=intake.department_region)
    assert (moved.results[0].department, moved.results[0].region) == (default.department, "99")
