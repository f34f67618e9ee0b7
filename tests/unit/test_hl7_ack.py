from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from hl7apy.consts import VALIDATION_LEVEL
from hl7apy.parser import parse_message as hl7apy_parse
from hypothesis import given
from hypothesis import strategies as st
from nacl.public import PrivateKey

from services.core.domain.model import Transport
from services.gateway.hl7.ack import ack_wanted, build_ack, escape
from services.gateway.hl7.normalize import Issue, Normalized, normalize_header, normalize_oru
from services.gateway.hl7.parse import Encoding, parse_message
from services.gateway.identity import IdentityProtector

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "hl7"
NOW = datetime(2024, 1, 16, 9, 30, tzinfo=UTC)
PROTECTOR = IdentityProtector(b"0123456789abcdef", bytes(PrivateKey.generate().public_key))


def normalized(name: str) -> Normalized:
    raw = (FIXTURES / name).read_bytes()
    return normalize_oru(raw, received_at=NOW, transport=Transport.MLLP, protector=PROTECTOR, now=NOW)


def ack_for(name: str) -> bytes:
    n = normalized(name)
    return build_ack(n.header, n.ack_code, n.issues, now=NOW, control_id="ACK1")


def test_aa() -> None:
    ack = ack_for("ok_v251.hl7")
    assert ack == (
        b"MSH|^~\\&|LABFLOW|LABFLOW|LIS|LABO-AJACCIO^123456789^FINESS|20240116093000+0000||ACK^R01^ACK|ACK1|P|2.5.1\r"
        b"MSA|AA|OK251\r"
    )


def test_ae_v251_err_segment() -> None:
    message = parse_message(ack_for("ae_bad_ins_key.hl7"))
    msa, err = message.get("MSA"), message.get("ERR")
    assert msa is not None and err is not None
    assert (msa.field(1), msa.field(2)) == ("AE", "AEINS")
    assert [err.component(2, i) for i in (1, 2, 3, 5)] == ["PID", "1", "3", "1"]
    assert [err.component(3, i) for i in (1, 2, 3)] == ["102", "Data type error", "HL70357"]
    assert err.field(4) == "E"
    assert err.field(8) == "PID-3: INS key 42 does not match matricule (expected 89)"


def test_err_text_is_escaped() -> None:
    issue = Issue("OBX", 2, 5, None, "103", "E", "OBX-5: result value 'A|B^C&D~E\\F' cannot be interpreted")
    header = normalized("ok_v251.hl7").header
    ack = build_ack(header, "AE", [issue], now=NOW, control_id="A")
    err = parse_message(ack).get("ERR")
    assert err is not None and err.field(8) == issue.text
    assert err.raw(2) == "OBX^2^5"


def test_v231_err_layout() -> None:
    assert parse_message(ack_for("ok_v231.hl7")).msh.field(12) == "2.3.1"
    n = normalized("ok_v231.hl7")
    issue = Issue("OBX", 1, 3, 1, "103", "E", "OBX-3: unknown LOINC code 12345-6")
    ack = parse_message(build_ack(n.header, "AE", [issue], now=NOW, control_id="A"))
    err, msa = ack.get("ERR"), ack.get("MSA")
    assert err is not None and msa is not None
    assert err.raw(1) == "OBX^1^3^103&OBX-3: unknown LOINC code 12345-6&HL70357"
    assert msa.field(3) == "OBX-3: unknown LOINC code 12345-6"


def test_ar_without_header() -> None:
    n = normalized("ar_not_hl7.hl7")
    ack = build_ack(n.header, n.ack_code, n.issues, now=NOW, control_id="X")
    message = parse_message(ack)
    msa, err = message.get("MSA"), message.get("ERR")
    assert msa is not None and err is not None
    assert msa.field(1) == "AR" and msa.field(2) == ""
    assert message.msh.field(12) == "2.5.1"
    assert err.raw(2) == "" and err.component(3, 1) == "100"


def test_ar_version_22_answers_in_its_version() -> None:
    message = parse_message(ack_for("ar_version_22.hl7"))
    err = message.get("ERR")
    assert message.msh.field(12) == "2.2"
    assert err is not None and err.raw(1).startswith("MSH^1^12^203&")


def test_own_delimiters() -> None:
    raw = (FIXTURES / "ok_v251.hl7").read_bytes().replace(b"|", b"#").replace(b"MSH#^~\\&#", b"MSH#!@%$#")
    raw = raw.replace(b"^", b"!").replace(b"&", b"$")
    header = normalize_header(raw)
    assert header is not None and header.control_id == "OK251"
    issue = Issue("PID", 1, 8, None, "103", "E", "a#b!c")
    ack = build_ack(header, "AE", [issue], now=NOW, control_id="A").decode()
    assert ack.startswith("MSH#!@%$#LABFLOW#LABFLOW#LIS#LABO-AJACCIO!123456789!FINESS#")
    assert "#a%F%b%S%c\r" in ack
    assert parse_message(ack).enc == Encoding("#", "!", "@", "%", "$")


def test_ack_parses_with_hl7apy() -> None:
    for name in ("ok_v251.hl7", "ae_bad_ins_key.hl7", "ok_v231.hl7"):
        message = hl7apy_parse(
            ack_for(name).decode(), find_groups=False, validation_level=VALIDATION_LEVEL.TOLERANT
        )
        assert message.msa.msa_1.to_er7() in ("AA", "AE")


def test_escape() -> None:
    assert escape("a|b^c~d\\e&f\r\ng") == "a\\F\\b\\S\\c\\R\\d\\E\\e\\T\\f\\.br\\g"


def _escaped_one_delimiter_at_a_time(text: str, enc: Encoding) -> str:
    """HL7 v2 §2.7 read literally: the escape character first, then each delimiter, then line ends."""
    e = enc.escape
    out = text.replace(e, f"{e}E{e}")
    delimiters = ((enc.field, "F"), (enc.component, "S"), (enc.repetition, "R"), (enc.subcomponent, "T"))
    for char, code in delimiters:
        out = out.replace(char, f"{e}{code}{e}")
    return out.replace("\r\n", "\n").replace("\r", "\n").replace("\n", f"{e}.br{e}")


@given(
    text=st.text(alphabet=st.sampled_from("ab é|^~\\&#$*!\r\n"), max_size=30),
    delimiters=st.permutations("|^~\\&#$*!").map(lambda p: Encoding(*p[:5])),
)
def test_escape_agrees_with_escaping_one_delimiter_at_a_time(text: str, delimiters: Encoding) -> None:
    for enc in (Encoding(), delimiters):
        assert escape(text, enc) == _escaped_one_delimiter_at_a_time(text, enc)


@pytest.mark.parametrize(
    ("accept", "application", "code", "wanted"),
    [
        ("", "", "AA", True),
        ("", "", "AE", True),
        ("AL", "NE", "AA", True),
        ("NE", "NE", "AE", False),
        ("NE", "AL", "AA", True),
        ("ER", "NE", "AA", False),
        ("ER", "NE", "AE", True),
        ("NE", "SU", "AA", True),
        ("NE", "SU", "AR", False),
        ("NE", "", "AA", True),
    ],
)
def test_ack_wanted(accept: str, application: str, code: str, wanted: bool) -> None:
    header = normalize_header(f"MSH|^~\\&|A|B|C|D|20240101||ORU^R01|1|P|2.5.1|||{accept}|{application}")
    assert ack_wanted(header, code) is wanted
    assert ack_wanted(None, code) is True


@pytest.mark.parametrize("fixture", ["ok_v251.hl7", "ok_v231.hl7"])
def test_a_lab_tells_send_again_from_fix_it_in_both_err_layouts(fixture: str) -> None:
    """What the simulator (a LIS) reads from an ACK: a 207-only AE asks for the same message again,
    a content AE is to be fixed — in the 2.5 (ERR-3) and the 2.3.1 (ERR-1) layouts alike."""
    from services.gateway.intake import TRANSIENT
    from services.simulator.client import Ack

    header = normalized(fixture).header
    content = Issue("OBX", 1, 3, 1, "103", "E", "OBX-3: unknown LOINC code 12345-6")
    again = Ack.parse(build_ack(header, "AE", [TRANSIENT], now=NOW, control_id="A"))
    fix = Ack.parse(build_ack(header, "AE", [content, TRANSIENT], now=NOW, control_id="A"))
    assert (again.error_codes, again.send_again) == (["207"], True)
    assert (fix.error_codes, fix.send_again) == (["103", "207"], False)
    assert not Ack.parse(ack_for(fixture)).send_again  # AA
