from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.gateway.hl7.parse import Encoding, ParseError, ReadPlan, parse_message, unescape

MESSAGE = (
    "MSH|^~\\&|LIS|LAB^1.2.3^ISO|LABFLOW|LABFLOW|20240115103000+0100||ORU^R01^ORU_R01|CTRL1|P|2.5.1\r"
    "PID|1||P1^^^LAB^PI~279035121518989^^^ASIP&1.2.250.1.213.1.4.10&ISO^INS||D\\T\\A\\S\\B^Jean||19790301|M\r"
    "OBX|1|ST|94500-6^x^LN||POSITIF||||||F\r"
    "OBX|2|ST|94500-6^x^LN||NEGATIF||||||F\r"
)


def test_msh_numbering() -> None:
    msh = parse_message(MESSAGE).msh
    assert msh.field(1) == "|"
    assert msh.field(2) == "^~\\&"
    assert msh.field(10) == "CTRL1"
    assert msh.component(9, 2) == "R01"
    assert msh.component(4, 2) == "1.2.3"
    assert msh.raw(9) == "ORU^R01^ORU_R01"


def test_repetitions_components_subcomponents() -> None:
    pid = parse_message(MESSAGE).get("PID")
    assert pid is not None
    assert len(pid.repetitions(3)) == 2
    assert pid.component(3, 1, rep=1) == "279035121518989"
    assert pid.subcomponent(3, 4, 2, rep=1) == "1.2.250.1.213.1.4.10"
    assert pid.component(3, 5, rep=1) == "INS"
    assert pid.component(3, 5, rep=2) == ""
    assert pid.component(3, 9) == ""
    assert pid.field(40) == ""
    assert pid.component(5, 1) == "D&A^B"
    assert pid.repetitions(4) == []


def test_segments_get_all() -> None:
    message = parse_message(MESSAGE.encode())
    assert [s.name for s in message.segments] == ["MSH", "PID", "OBX", "OBX"]
    assert [s.field(5) for s in message.all("OBX")] == ["POSITIF", "NEGATIF"]
    assert message.get("SPM") is None


@pytest.mark.parametrize("end", ["\r", "\n", "\r\n"])
def test_segment_ends_and_trailing_blank_lines(end: str) -> None:
    text = MESSAGE.replace("\r", end) + end + end + "  " + end
    assert [s.name for s in parse_message(text).segments] == ["MSH", "PID", "OBX", "OBX"]


def test_own_encoding_characters() -> None:
    text = "MSH#!@%$#LIS#LAB#X#Y#20240101##ORU!R01#C1#P#2.5\rPID#1##A!B!C@D!E%F%G\r"
    message = parse_message(text)
    pid = message.get("PID")
    assert pid is not None
    assert message.enc == Encoding("#", "!", "@", "%", "$")
    assert message.msh.component(9, 2) == "R01"
    assert pid.component(3, 3) == "C"
    assert pid.component(3, 2, rep=1) == "E#G"  # %F% is the field separator


def test_unescape() -> None:
    enc = Encoding()
    assert unescape("a\\F\\b\\S\\c\\T\\d\\R\\e\\E\\f", enc) == "a|b^c&d~e\\f"
    assert unescape("line1\\.br\\line2", enc) == "line1\nline2"
    assert unescape("\\X41C3A9\\", enc) == "Aé"
    assert unescape("\\H\\bold\\N\\", enc) == "bold"
    assert unescape("a\\Zlocal\\b", enc) == "a\\Zlocal\\b"
    assert unescape("dangling\\", enc) == "dangling\\"


def test_latin1_fallback_and_charset() -> None:
    raw = "MSH|^~\\&|A|B|C|D|20240101||ORU^R01|1|P|2.5||||||8859/1\rPID|1||x||LEFÈVRE\r".encode("latin-1")
    message = parse_message(raw)
    assert message.charset == "8859/1"
    pid = message.get("PID")
    assert pid is not None and pid.component(5, 1) == "LEFÈVRE"


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        (b"", None),
        (b"\r\n\r\n", None),
        (b"PID|1||x\rMSH|^~\\&|A", None),
        (b"MSH|^~\\|A|B", 2),
        (b"MSH|^~^&|A|B", 2),
        (b"MSHA^~\\&|A|B", 1),
    ],
)
def test_not_hl7(raw: bytes, field: int | None) -> None:
    with pytest.raises(ParseError) as info:
        parse_message(raw)
    assert info.value.field == field


def test_bad_segment_name() -> None:
    with pytest.raises(ParseError):
        parse_message("MSH|^~\\&|A|B\rP!D|1\r")


# both encodings' delimiters, escape sequences of each, and text
TOKENS: tuple[str, ...] = ("|", "^", "~", "&", "#", "!", "*", "$", "%", "\\", "A", "BC", "1 ")
TOKENS += ("\\F\\", "\\T\\", "\\X41\\", "$S$", "$R$")
SEGMENT_TEXT = st.lists(st.sampled_from(TOKENS), max_size=30).map("".join)


@settings(max_examples=300)
@given(
    name=st.sampled_from(("MSH", "PID", "OBX")),
    text=SEGMENT_TEXT,
    delimiters=st.sampled_from(("|^~\\&", "#!*$%")),
    count=st.integers(0, 6),
)
def test_bulk_reads_are_each_component(name: str, text: str, delimiters: str, count: int) -> None:
    head = "MSH" + delimiters + delimiters[0]
    er7 = head + (text if name == "MSH" else f"\r{name}{delimiters[0]}{text}")
    segment = parse_message(er7).segments[-1]
    numbers = range(3 if name == "MSH" else 1, len(segment.fields) + 2)
    wanted = [(n, c) for n in numbers for c in range(1, count + 3)]
    assert segment.read(ReadPlan(*wanted)) == [segment.component(n, c) for n, c in wanted]
    shuffled = sorted(wanted, key=lambda pair: (pair[1] * 7919 + pair[0]) % 13)
    assert segment.read(ReadPlan(*shuffled)) == [segment.component(n, c) for n, c in shuffled]
    for n in numbers:
        repetitions = segment.repetitions_components(n, count)
        assert len(repetitions) == len(segment.repetitions(n))
        for rep, components in enumerate(repetitions):
            assert len(components) >= count
            for c in range(1, max(count, len(components)) + 2):
                assert (components[c - 1] if c <= len(components) else "") == segment.component(n, c, rep)
