"""Our ER7 parser against hl7apy, field by field, on the fixtures and on generated messages.

hl7apy keeps values escaped and drops empty components; each of its leaves (field, component or
subcomponent, numbered from the element names) is unescaped here with an independent regex-based
decoder and compared with our leaf at the same position. Every position we see is also checked to
be absent in hl7apy only when our value is empty, so nothing is skipped silently.
"""

from __future__ import annotations

import random
import re
from datetime import date, datetime
from pathlib import Path

import pytest
from hl7apy.consts import VALIDATION_LEVEL
from hl7apy.parser import parse_message as hl7apy_parse
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.core.domain.model import PARIS
from services.gateway.hl7.parse import Segment, parse_message
from services.simulator.oru import Patient, build_oru_r01, random_order
from tests.hl7_messages import oru_messages

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "hl7"
COMPARED = ("MSH", "PID", "OBR", "OBX", "SPM")
_ESCAPE = re.compile(r"\\(F|S|T|R|E)\\")
_FORMATTING = re.compile(r"\\(X[0-9A-Fa-f]*|\.br)\\")
_SIMPLE = {"F": "|", "S": "^", "T": "&", "R": "~", "E": "\\"}


def _formatting(match: re.Match[str]) -> str:
    seq = match.group(1)
    return "\n" if seq == ".br" else bytes.fromhex(seq[1:]).decode("utf-8")


def reference_unescape(value: str) -> str:
    """Decode hl7apy's to_er7() of a leaf.

    hl7apy keeps `\\Xhh\\` and `\\.br\\` as literal text (to_er7 re-escapes them as
    `\\E\\Xhh\\E\\`): after decoding the delimiter escapes, those are decoded as the standard says.
    """
    text = _ESCAPE.sub(lambda match: _SIMPLE[match.group(1)], value)
    return _FORMATTING.sub(_formatting, text)


def _position(name: str, index: int) -> int:
    suffix = name.rsplit("_", 1)[-1]
    return int(suffix) if suffix.isdigit() else index + 1


Leaves = dict[tuple[str, int, int, int, int, int], str]


def hl7apy_leaves(er7: str) -> tuple[Leaves, dict[tuple[str, int], list[str]]]:
    """(segment, occurrence, field, repetition, component, subcomponent) → unescaped value, and the
    fields past the end of hl7apy's segment structure (it does not number them), raw, in order."""
    # hl7apy only knows CR segment ends
    cr_only = er7.replace("\r\n", "\r")
    message = hl7apy_parse(cr_only, find_groups=False, validation_level=VALIDATION_LEVEL.TOLERANT)
    leaves: Leaves = {}
    extras: dict[tuple[str, int], list[str]] = {}
    occurrences: dict[str, int] = {}
    for segment in message.children:
        if segment.name not in COMPARED:
            continue
        occurrence = occurrences[segment.name] = occurrences.get(segment.name, 0) + 1
        repetitions: dict[int, int] = {}
        for fld in segment.children:
            if fld.name is None:
                extras.setdefault((segment.name, occurrence), []).append(fld.to_er7())
                continue
            number = _position(fld.name, 0)
            rep = repetitions[number] = repetitions.get(number, -1) + 1
            key = (segment.name, occurrence, number, rep)
            if segment.name == "MSH" and number <= 2:
                leaves[(*key, 1, 1)] = fld.to_er7()
                continue
            for c_index, component in enumerate(fld.children):
                c = _position(component.name, c_index)
                subs = component.children
                if len(subs) > 1 or (subs and _position(subs[0].name, -1) > 0):
                    for s_index, sub in enumerate(subs):
                        leaves[(*key, c, _position(sub.name, s_index))] = reference_unescape(sub.to_er7())
                else:
                    leaves[(*key, c, 1)] = reference_unescape(component.to_er7())
    return leaves, extras


def our_leaves(er7: str) -> tuple[Leaves, dict[tuple[str, int], list[Segment]]]:
    leaves: Leaves = {}
    segments: dict[tuple[str, int], list[Segment]] = {}
    occurrences: dict[str, int] = {}
    message = parse_message(er7)
    enc = message.enc
    for segment in message.segments:
        if segment.name not in COMPARED:
            continue
        occurrence = occurrences[segment.name] = occurrences.get(segment.name, 0) + 1
        segments[(segment.name, occurrence)] = [segment]
        for number in range(1, len(segment.fields)):
            for rep, text in enumerate(segment.repetitions(number)):
                components = [text] if segment.name == "MSH" and number <= 2 else text.split(enc.component)
                for c, component in enumerate(components, start=1):
                    for s in range(1, len(component.split(enc.subcomponent)) + 1):
                        value = segment.subcomponent(number, c, s, rep)
                        if value:
                            leaves[(segment.name, occurrence, number, rep, c, s)] = value
    return leaves, segments


def assert_same(er7: str) -> None:
    (ours, segments), (theirs, extras) = our_leaves(er7), hl7apy_leaves(er7)
    for (name, occurrence), raw_fields in extras.items():
        last_named = max(key[2] for key in theirs if key[:2] == (name, occurrence))
        [segment] = segments[(name, occurrence)]
        assert [f for f in segment.fields[last_named + 1 :] if f] == raw_fields
        ours = {
            key: value for key, value in ours.items() if key[:2] != (name, occurrence) or key[2] <= last_named
        }
    assert ours == {key: value for key, value in theirs.items() if value}
    assert ours


@pytest.mark.parametrize(
    "path", [p for p in sorted(FIXTURES.glob("*.hl7")) if not p.name.startswith(("ar_", "ok_v231"))], ids=str
)
def test_fixtures(path: Path) -> None:
    assert_same(path.read_bytes().decode("utf-8"))


def test_v231_fixture() -> None:
    assert_same((FIXTURES / "ok_v231.hl7").read_bytes().decode("utf-8"))


NAME_TEXT = st.text(
    alphabet=st.sampled_from("ABCÉÈÎÔÜÇéèàçœ -'|^&~\\abcdefxyz0123"), min_size=1, max_size=20
).filter(lambda s: s.strip() and not s.startswith(" "))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(oru_messages(crlf=True))
def test_generated_messages(message: bytes) -> None:
    assert_same(message.decode())


@settings(max_examples=100, deadline=None)
@given(
    birth_name=NAME_TEXT, given_name=NAME_TEXT, phone=NAME_TEXT, version=st.sampled_from(("2.3.1", "2.5.1"))
)
def test_escape_worthy_names(birth_name: str, given_name: str, phone: str, version: str) -> None:
    rng = random.Random(0)
    patient = Patient(None, birth_name, given_name, date(1980, 2, 29), "F", "20000", phone)
    order = random_order(rng, datetime(2024, 1, 15, 10, tzinfo=PARIS))
    er7 = build_oru_r01("LAB&1", "C^1", [(patient, [order])], version=version).decode()
    assert_same(er7)
    pid = parse_message(er7).get("PID")
    assert pid is not None
    assert (pid.component(5, 1), pid.component(5, 2), pid.component(13, 1)) == (birth_name, given_name, phone)
    assert parse_message(er7).msh.field(10) == "C^1"
