"""The gateway's content screen: the bytes a lab sent → text the store can carry, or located findings.

Every payload passes here once, before it is normalized: HL7 v2 as sent (MLLP, HTTP, `screen`), and
the values of FHIR Bundles and CSV rows as the lab sent them (`screen_values`), each at the HL7
position it stands for, which the HTTP intake then locates in the lab's own terms. The rules and
limits themselves are in `services.core.domain.limits` (what the canonical model and PostgreSQL
carry); the policy:

- Decoding follows MSH-18 (HL7 table 0211, first repetition): `8859/1` … `8859/9` and `8859/15` are
  decoded in that ISO 8859 part; anything else (empty, `ASCII`, `UNICODE UTF-8`…) must be UTF-8,
  ASCII's superset. A byte that does not decode is refused where it stands: the gateway does not
  guess another charset, since a guessed charset changes names and so traits-based pseudonyms.
- `limits.FORBIDDEN_CHARACTERS` are refused anywhere in the message, in fields LabFlow reads or not
  (a NUL in an NTE says the sender is broken; nothing shows the rest is sound), and also where an
  `\\Xhh\\` escape stands for one. CR and LF only end segments (CR, CRLF or LF, as the parser reads
  them); `\\X0D\\`, `\\X0A\\` and `\\.br\\` put line ends in a value; tab is tolerated. A delimiter that
  is a control character is refused by the parser (AR: the message cannot be read).
- Lengths: each component (or subcomponent) of a field LabFlow reads (`READ_FIELDS`: what reaches
  the canonical result or the sealed identity) has at most `TEXT_MAX` characters as sent (a value
  is never longer decoded than sent); PID-11.5 at most `POSTAL_CODE_MAX` without its spaces, as it
  is stored; MSH-4.2 when MSH-4.3 is `FINESS` at most `FINESS_MAX`. Fields LabFlow does not read
  (OBX-5 text, NTE, Z-segments) stay in the raw message only, bounded by the message size limit.

FHIR and CSV values are text already (JSON, a UTF-8 CSV): the same characters and lengths are
refused, counted in the value as sent (`at character N` of the value, not of an ER7 rendering).

One finding per component at fault, located (segment, occurrence, field, repetition, component);
the normalizer answers AE with an ERR 102 (data type error) for each, like its other content errors.
Reason texts name positions and code points, never the value (it may be a name).

Speed (the hot path of every message): one `bytes.translate` for C0/DEL, `isascii`, a search for
`\\xc2` (C1 in UTF-8) and for `\\X`, and one length test per segment; fields are split and located only
once something was found.
"""

from __future__ import annotations

import codecs
import itertools
from collections.abc import Iterator
from dataclasses import dataclass

from services.core.domain.limits import (
    ALLOWED_CONTROLS,
    FINESS_MAX,
    FORBIDDEN_CHARACTERS,
    POSTAL_CODE_MAX,
    TEXT_MAX,
    describe_character,
)
from services.gateway.hl7.parse import Message, Segment, parse_message, unescape

__all__ = [
    "MAX_FINDINGS",
    "READ_FIELDS",
    "Decoded",
    "Finding",
    "Value",
    "clean",
    "clean_message",
    "declared_charset",
    "decode_payload",
    "screen",
    "screen_values",
]

READ_FIELDS: dict[str, frozenset[int]] = {
    "MSH": frozenset({3, 4, 5, 6, 10}),
    "PID": frozenset({3, 5, 11, 13, 23}),
    "OBR": frozenset({2, 3, 15}),
    "OBX": frozenset({15, 23}),
    "SPM": frozenset({2, 4}),
}
"""Fields whose components reach the canonical result or the sealed identity (see `normalize`)."""

MAX_FINDINGS = 20
"""A message is refused on the first; more are reported to save the lab round trips, up to this."""

_CODECS: dict[str, str] = {
    "8859/1": "latin-1",
    **{f"8859/{n}": f"iso8859-{n}" for n in range(2, 10)},
    "8859/15": "iso8859-15",
}
_REFUSED_BYTES = bytes(b for b in range(0x20) if chr(b) not in ALLOWED_CONTROLS) + b"\x7f"
_OTHER_BYTES = bytes(b for b in range(256) if b not in _REFUSED_BYTES)
_HANDLER = "labflow-undecodable"


def _undecodable(exc: UnicodeError) -> tuple[str, int]:
    """Decoding error handler: a surrogate written as UTF-8 (a FHIR `\\ud800` passed on) decodes to
    itself, any other byte b to U+DC00+b (as `surrogateescape`), for the screen to find and name."""
    assert isinstance(exc, UnicodeDecodeError)
    data, i = exc.object, exc.start
    if data[i] == 0xED and i + 2 < len(data) and 0xA0 <= data[i + 1] <= 0xBF and 0x80 <= data[i + 2] <= 0xBF:
        point = 0xD000 | (data[i + 1] & 0x3F) << 6 | data[i + 2] & 0x3F
        if not 0xDC80 <= point <= 0xDCFF:
            return chr(point), i + 3
    return chr(0xDC00 + data[i]), i + 1


codecs.register_error(_HANDLER, _undecodable)


@dataclass(frozen=True, slots=True)
class Decoded:
    text: str
    """The message as text; an undecodable byte b is there as U+DC00+b."""
    charset: str
    """MSH-18 as declared (upper case, "" when not sent), for the reason texts."""
    suspect: bool
    """A forbidden character or an undecodable byte is somewhere: `screen` locates it."""


@dataclass(frozen=True, slots=True)
class Finding:
    """One component at fault, located as an HL7 ERR-2 (ERL) is."""

    segment: str
    sequence: int
    field: int | None
    repetition: int | None
    component: int | None
    text: str


def declared_charset(raw: bytes) -> str:
    """MSH-18 (first repetition, first component) read from the bytes, upper case; "" when absent."""
    start = raw.find(b"MSH")
    if start < 0 or start > 16:
        return ""
    end = min((i for i in (raw.find(b"\r", start), raw.find(b"\n", start)) if i >= 0), default=len(raw))
    line = raw[start:end]
    if len(line) < 8:
        return ""
    fields = line.split(line[3:4])
    value = fields[17] if len(fields) > 17 else b""
    value = value.split(line[5:6])[0].split(line[4:5])[0]
    return value.strip().decode("ascii", "replace").upper()


def decode_payload(raw: bytes) -> Decoded:
    """The message's text in its declared charset (see the module docstring), and whether to look closer."""
    suspect = bool(raw.translate(None, _OTHER_BYTES))
    if raw.isascii():
        return Decoded(raw.decode("ascii"), "", suspect)
    charset = declared_charset(raw)
    codec = _CODECS.get(charset, "utf-8")
    try:
        text = raw.decode(codec)
    except UnicodeDecodeError:
        return Decoded(raw.decode(codec, _HANDLER), charset, True)
    if not suspect and (codec != "utf-8" or b"\xc2" in raw):
        suspect = FORBIDDEN_CHARACTERS.search(text) is not None
    return Decoded(text, charset, suspect)


def clean(text: str) -> str:
    """`text` with each forbidden character replaced by U+FFFD: what an ACK may echo of a refused message."""
    return FORBIDDEN_CHARACTERS.sub("\ufffd", text)


def _label(segment: str, field: int | None, repetition: int | None, component: int | None) -> str:
    label = segment if field is None else f"{segment}-{field}"
    if component is not None:
        label += f".{component}"
    return label + (f" (repetition {repetition})" if repetition and repetition > 1 else "")


def _character_problem(char: str, charset: str, where: str) -> str:
    point = ord(char)
    if 0xDC80 <= point <= 0xDCFF:
        declared = f"MSH-18 '{charset}'" if charset else "MSH-18 empty"
        expected = f"ISO {charset}" if charset in _CODECS else "UTF-8"
        return f"byte 0x{point - 0xDC00:02X}{where} is not valid {expected} ({declared})"
    if 0xD800 <= point <= 0xDFFF:
        return f"{describe_character(char)}{where} is a lone surrogate, not Unicode text"
    return f"control character {describe_character(char)}{where} is not allowed"


class _Screen:
    def __init__(self, message: Message, charset: str) -> None:
        self.message = message
        self.charset = charset
        self.findings: list[Finding] = []
        self._seen: set[tuple[int, int | None, int | None, int | None]] = set()
        self._sequences: list[int] | None = None

    def sequence(self, index: int) -> int:
        """Occurrence (1-based) of segment `index` among the segments of its name."""
        if self._sequences is None:
            counts: dict[str, int] = {}
            self._sequences = []
            for segment in self.message.segments:
                counts[segment.name] = counts.get(segment.name, 0) + 1
                self._sequences.append(counts[segment.name])
        return self._sequences[index]

    def add(
        self, index: int, field: int | None, repetition: int | None, component: int | None, problem: str
    ) -> None:
        key = (index, field, repetition, component)
        if key in self._seen or len(self.findings) >= MAX_FINDINGS:
            return
        self._seen.add(key)
        name = self.message.segments[index].name
        text = f"{_label(name, field, repetition, component)}: {problem}"
        self.findings.append(Finding(name, self.sequence(index), field, repetition, component, text))

    def characters(self) -> None:
        for index, segment in enumerate(self.message.segments):
            for match in FORBIDDEN_CHARACTERS.finditer(segment.line):
                field, repetition, component, position = _position(segment, match.start())
                problem = _character_problem(match.group(), self.charset, f" at character {position}")
                self.add(index, field, repetition, component, problem)

    def escapes(self) -> None:
        """Forbidden characters written as `\\Xhh\\` escapes, decoded as the parser does."""
        for index, segment in enumerate(self.message.segments):
            enc = segment.enc
            if enc.escape + "X" not in segment.line:
                continue
            for field, repetition, component, leaf in _leaves(segment):
                if enc.escape + "X" in leaf:
                    found = FORBIDDEN_CHARACTERS.search(unescape(leaf, enc))
                    if found is not None:
                        problem = f"an escape sequence stands for {describe_character(found.group())}"
                        self.add(index, field, repetition, component, f"{problem}, which is not allowed")

    def lengths(self) -> None:
        for index, segment in enumerate(self.message.segments):
            if segment.name == "PID":
                self.postal_codes(index, segment)
            elif segment.name == "MSH" and len(segment.raw(4)) > FINESS_MAX:
                finess = segment.component(4, 2)
                if len(finess) > FINESS_MAX and segment.component(4, 3).upper() == "FINESS":
                    self.add(index, 4, 1, 2, f"FINESS of {len(finess)} characters, more than {FINESS_MAX}")
            if len(segment.line) <= TEXT_MAX:
                continue
            read = READ_FIELDS.get(segment.name)
            if read is None:
                continue
            fields = segment.fields
            if max((len(fields[n]) for n in read if n < len(fields)), default=0) <= TEXT_MAX:
                continue
            for field, repetition, component, leaf in _leaves(segment, read):
                if len(leaf) > TEXT_MAX:
                    problem = f"{len(leaf)} characters, more than the {TEXT_MAX} LabFlow stores"
                    self.add(index, field, repetition, component, problem)

    def postal_codes(self, index: int, pid: Segment) -> None:
        if len(pid.raw(11)) <= POSTAL_CODE_MAX:
            return
        for rep in range(len(pid.repetitions(11))):
            stored = pid.component(11, 5, rep).replace(" ", "")
            if len(stored) > POSTAL_CODE_MAX:
                problem = f"postal code of {len(stored)} characters, more than {POSTAL_CODE_MAX}"
                self.add(index, 11, rep + 1, 5, problem)


def _position(segment: Segment, at: int) -> tuple[int, int | None, int | None, int]:
    """Field, repetition, component and 1-based character position in it, of index `at` of the line."""
    line, enc = segment.line, segment.enc
    start = line.rfind(enc.field, 0, at) + 1
    field = line.count(enc.field, 0, at)
    if segment.name == "MSH":
        field += 1
        if field <= 2:
            return field, None, None, at - start + 1
    value = line[start:at]
    repetition = value.count(enc.repetition) + 1
    value = value[value.rfind(enc.repetition) + 1 :]
    component = value.count(enc.component) + 1
    return field, repetition, component, len(value) - value.rfind(enc.component)


def _leaves(segment: Segment, only: frozenset[int] | None = None) -> Iterator[tuple[int, int, int, str]]:
    """(field, repetition, component, subcomponent text as sent) of the segment's fields past MSH-2."""
    enc = segment.enc
    for field, value in enumerate(segment.fields):
        if field == 0 or (segment.name == "MSH" and field <= 2) or (only is not None and field not in only):
            continue
        for repetition, rep_value in enumerate(value.split(enc.repetition), start=1):
            for component, comp_value in enumerate(rep_value.split(enc.component), start=1):
                for leaf in comp_value.split(enc.subcomponent):
                    yield field, repetition, component, leaf


def screen(message: Message, decoded: Decoded) -> list[Finding]:
    """What of `message` the store cannot carry (see the module docstring); [] on the happy path."""
    found = _Screen(message, decoded.charset)
    if decoded.suspect:
        found.characters()
        if not found.findings:
            # only in lines the parser skips as blank (e.g. a lone form feed between two segments)
            char = FORBIDDEN_CHARACTERS.search(decoded.text)
            problem = _character_problem(
                char.group() if char else "\x00", decoded.charset, " between segments"
            )
            found.add(0, None, None, None, problem)
    if message.enc.escape + "X" in decoded.text:
        found.escapes()
    found.lengths()
    return found.findings


def clean_message(message: Message) -> Message:
    """The MSH of a refused message with its forbidden characters replaced: what the ACK echoes."""
    return parse_message(clean(message.msh.line))


@dataclass(frozen=True, slots=True)
class Value:
    """One value of a FHIR Bundle or a CSV row, as sent, at the HL7 position it stands for."""

    segment: str
    sequence: int
    field: int
    repetition: int
    component: int
    text: str
    stored: bool
    """It reaches the canonical result or the sealed identity: its length is bounded (`READ_FIELDS`)."""


def _value_problem(char: str, where: str) -> str:
    if 0xD800 <= ord(char) <= 0xDFFF:
        return f"{describe_character(char)}{where} is a lone surrogate, not Unicode text"
    return f"control character {describe_character(char)}{where} is not allowed"


def screen_values(values: list[Value]) -> list[Finding]:
    """What of these values (in segment order) the store cannot carry; [] on the happy path. The
    rules and the order of the findings are `screen`'s: characters first, then lengths."""
    findings: list[Finding] = []
    seen: set[tuple[str, int, int, int, int]] = set()

    def add(value: Value, problem: str) -> None:
        key = (value.segment, value.sequence, value.field, value.repetition, value.component)
        if key in seen or len(findings) >= MAX_FINDINGS:
            return
        seen.add(key)
        label = _label(value.segment, value.field, value.repetition, value.component)
        findings.append(
            Finding(
                value.segment,
                value.sequence,
                value.field,
                value.repetition,
                value.component,
                f"{label}: {problem}",
            )
        )

    for value in values:
        found = FORBIDDEN_CHARACTERS.search(value.text)
        if found is not None:
            add(value, _value_problem(found.group(), f" at character {found.start() + 1}"))
    for _, segment in itertools.groupby(values, lambda v: (v.segment, v.sequence)):
        in_segment = list(segment)
        for value in in_segment:  # a PID's postal codes first, as `screen` measures them
            if (value.segment, value.field, value.component) == ("PID", 11, 5):
                stored = value.text.replace(" ", "")
                if len(stored) > POSTAL_CODE_MAX:
                    add(value, f"postal code of {len(stored)} characters, more than {POSTAL_CODE_MAX}")
        for value in in_segment:
            if value.stored and len(value.text) > TEXT_MAX:
                add(value, f"{len(value.text)} characters, more than the {TEXT_MAX} LabFlow stores")
    return findings
