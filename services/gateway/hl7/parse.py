"""A fast ER7 (pipe-delimited HL7 v2) parser.

Driven by the message's own MSH-1 (field separator) and MSH-2 (component, repetition, escape and
subcomponent characters). Splitting is lazy: segments are cut on CR / LF / CRLF once, a segment is
split into fields on first access, and repetitions / components / subcomponents are cut with plain
`str.split` only for the values asked for. Escape sequences are decoded on leaf values only. A reader
of several values takes them in one call (`read`, `repetitions_components`): the normalizer reads
about fifty values per message, and a call per value was its largest cost.

Field numbering is HL7's: `segment.raw(n)` is field n. For MSH, field 1 is the field separator
itself and field 2 the encoding characters, so MSH-10 is the message control id.
"""

from __future__ import annotations

import itertools
import operator
from collections.abc import Callable, Sequence
from dataclasses import dataclass

__all__ = ["Encoding", "Message", "ParseError", "ReadPlan", "Segment", "parse_message", "unescape"]


class ParseError(ValueError):
    """The input is not an HL7 v2 ER7 message (empty, no MSH first, bad encoding characters…)."""

    def __init__(self, text: str, segment: str | None = None, field: int | None = None) -> None:
        super().__init__(text)
        self.text = text
        self.segment = segment
        self.field = field


@dataclass(frozen=True, slots=True)
class Encoding:
    """The delimiters of one message (MSH-1 and MSH-2)."""

    field: str = "|"
    component: str = "^"
    repetition: str = "~"
    escape: str = "\\"
    subcomponent: str = "&"

    @property
    def characters(self) -> str:
        """MSH-2 as written in a message using these delimiters."""
        return self.component + self.repetition + self.escape + self.subcomponent


DEFAULT_ENCODING = Encoding()


def _decode_hex(hexa: str) -> str | None:
    try:
        data = bytes.fromhex(hexa)
    except ValueError:
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("latin-1")


def _decode_sequence(seq: str, enc: Encoding) -> str | None:
    """The text an escape sequence (without its delimiters) stands for; None if it is not one."""
    if len(seq) == 1:
        if seq == "F":
            return enc.field
        if seq == "S":
            return enc.component
        if seq == "T":
            return enc.subcomponent
        if seq == "R":
            return enc.repetition
        if seq == "E":
            return enc.escape
        # start / end of highlighting: formatting only
        return "" if seq in ("H", "N") else None
    if seq[0] == "X" and len(seq) % 2 == 1:
        return _decode_hex(seq[1:])
    if seq == ".br" or seq.startswith(".sp"):
        return "\n"
    return None


def unescape(value: str, enc: Encoding = DEFAULT_ENCODING) -> str:
    """Decode the escape sequences of one leaf value; unknown or unterminated sequences stay as sent."""
    esc = enc.escape
    if esc not in value:
        return value
    parts = value.split(esc)
    # after split, odd indexes are sequences when every escape is closed
    out = [parts[0]]
    last = len(parts) - 1
    i = 1
    while i <= last:
        if i == last:
            out.append(esc + parts[i])
            break
        seq = parts[i]
        decoded = _decode_sequence(seq, enc) if seq else None
        out.append(esc + seq + esc if decoded is None else decoded)
        out.append(parts[i + 1])
        i += 2
    return "".join(out)


class ReadPlan:
    """Which values a reader takes from a segment: (field, component) pairs, in the order `read`
    returns them. Made once per reader (a module constant), not per message."""

    __slots__ = ("fields",)

    def __init__(self, *wanted: tuple[int, int]) -> None:
        self.fields: list[tuple[int, Callable[[list[str]], Sequence[str]], list[str]]] = []
        """Per run of one field in `wanted`: its number, what takes its components, and the ""s that
        pad its components up to the last one taken."""
        for n, same_field in itertools.groupby(wanted, key=lambda pair: pair[0]):
            indexes = [c - 1 for _, c in same_field]
            # one index: a slice, for a list of one (itemgetter of one index gives the item itself)
            first = indexes[0]
            one = slice(first, first + 1)
            take = operator.itemgetter(*indexes) if len(indexes) > 1 else operator.itemgetter(one)
            self.fields.append((n, take, [""] * (max(indexes) + 1)))


class Segment:
    """One segment: its name and its fields, split on first access."""

    __slots__ = ("_fields", "_last_components", "_last_n", "_last_rep", "enc", "line", "name")

    def __init__(self, name: str, line: str, enc: Encoding) -> None:
        self.name = name
        self.line = line
        self.enc = enc
        self._fields: list[str] | None = None
        self._last_n = -1
        self._last_rep = -1
        self._last_components: list[str] | None = None

    def __repr__(self) -> str:
        return f"Segment({self.line!r})"

    @property
    def fields(self) -> list[str]:
        """Raw (escaped) fields; index n is field n (index 0 is the segment name)."""
        fields = self._fields
        if fields is None:
            fields = self.line.split(self.enc.field)
            if self.name == "MSH":
                fields.insert(1, self.enc.field)
            self._fields = fields
        return fields

    def raw(self, n: int) -> str:
        """Field n exactly as sent: escaped, all repetitions; "" when absent."""
        fields = self.fields
        return fields[n] if n < len(fields) else ""

    def repetitions(self, n: int) -> list[str]:
        """The raw (escaped) repetitions of field n; [] when the field is empty."""
        value = self.raw(n)
        if not value:
            return []
        if self.name == "MSH" and n <= 2:
            return [value]
        return value.split(self.enc.repetition)

    def _components(self, n: int, rep: int) -> list[str] | None:
        """Raw components of repetition `rep` of field n; the last one asked for is remembered,
        as callers read several components of one field in a row."""
        if n == self._last_n and rep == self._last_rep:
            return self._last_components
        fields = self._fields if self._fields is not None else self.fields
        components: list[str] | None = None
        if n < len(fields):
            value = fields[n]
            if value:
                enc = self.enc
                if enc.repetition in value:
                    parts = value.split(enc.repetition)
                    value = parts[rep] if rep < len(parts) else ""
                elif rep:
                    value = ""
                if value:
                    components = value.split(enc.component)
        self._last_n = n
        self._last_rep = rep
        self._last_components = components
        return components

    def subcomponent(self, n: int, c: int, s: int, rep: int = 0) -> str:
        """Unescaped leaf value n.c.s of repetition `rep` (0-based); "" when absent."""
        if n <= 2 and self.name == "MSH":
            return self.raw(n) if c == 1 and s == 1 and rep == 0 else ""
        components = self._components(n, rep)
        if components is None or c > len(components):
            return ""
        value = components[c - 1]
        enc = self.enc
        if enc.subcomponent in value:
            parts = value.split(enc.subcomponent)
            if s > len(parts):
                return ""
            value = parts[s - 1]
        elif s != 1:
            return ""
        return unescape(value, enc) if enc.escape in value else value

    def component(self, n: int, c: int, rep: int = 0) -> str:
        """Unescaped component n.c (its first subcomponent) of repetition `rep`."""
        if n <= 2 and self.name == "MSH":
            return self.raw(n) if c == 1 and rep == 0 else ""
        if n == self._last_n and rep == self._last_rep:
            components = self._last_components
        else:
            components = self._components(n, rep)
        if components is None or c > len(components):
            return ""
        value = components[c - 1]
        enc = self.enc
        if enc.subcomponent in value:
            value = value.split(enc.subcomponent, 1)[0]
        return unescape(value, enc) if enc.escape in value else value

    def field(self, n: int, rep: int = 0) -> str:
        """Unescaped value of a simple field: n.1.1 of repetition `rep`."""
        return self.component(n, 1, rep)

    def read(self, plan: ReadPlan) -> list[str]:
        """`component(n, c)` (first repetition) for each (n, c) the plan names, in its order: one call
        for a reader of several values of a segment. Fields past MSH-2 only."""
        fields = self._fields if self._fields is not None else self.fields
        count = len(fields)
        enc = self.enc
        repetition, component, subcomponent, escape = (
            enc.repetition, enc.component, enc.subcomponent, enc.escape
        )
        values: list[str] = []
        extend = values.extend
        for n, take, padding in plan.fields:
            value = fields[n] if n < count else ""
            if not value:
                extend(take(padding))
                continue
            if repetition in value:
                value = value.split(repetition, 1)[0]
            components = value.split(component)
            if subcomponent in value or escape in value:
                components = [unescape(c.split(subcomponent, 1)[0], enc) for c in components]
            if len(components) < len(padding):
                components += padding
            extend(take(components))
        return values

    def repetitions_components(self, n: int, count: int) -> list[list[str]]:
        """Each repetition of field n as its unescaped components (each its first subcomponent): at
        least `count` of them ("" when absent), so that item c - 1 of repetition `rep` is
        `component(n, c, rep)` for every c up to `count`; [] when the field is empty. Fields past
        MSH-2 only."""
        return [_leaves(value, count, self.enc) for value in self.repetitions(n)]


def _leaves(value: str, count: int, enc: Encoding) -> list[str]:
    """The first subcomponents of the components of one repetition, unescaped, at least `count`."""
    components = value.split(enc.component) if value else []
    if enc.subcomponent in value or enc.escape in value:
        sub = enc.subcomponent
        components = [unescape(c.split(sub, 1)[0], enc) for c in components]
    missing = count - len(components)
    if missing > 0:
        components += [""] * missing
    return components


class Message:
    """A parsed message: its segments in order, and the delimiters it declared."""

    __slots__ = ("charset", "enc", "segments")

    def __init__(self, segments: list[Segment], enc: Encoding, charset: str) -> None:
        self.segments = segments
        self.enc = enc
        self.charset = charset

    @property
    def msh(self) -> Segment:
        return self.segments[0]

    def get(self, name: str) -> Segment | None:
        """The first segment with this name."""
        for segment in self.segments:
            if segment.name == name:
                return segment
        return None

    def all(self, name: str) -> list[Segment]:
        """Every segment with this name, in order."""
        return [segment for segment in self.segments if segment.name == name]


def _decode(raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


def _encoding(text: str) -> Encoding:
    fs = text[3] if len(text) > 3 else ""
    if not fs or fs.isalnum() or not fs.isprintable() or fs.isspace():
        raise ParseError("MSH-1: invalid field separator", "MSH", 1)
    end = text.find(fs, 4)
    chars = text[4:] if end < 0 else text[4:end]
    # a fifth character (truncation, v2.7) is tolerated and ignored
    if len(chars) not in (4, 5) or len(set(chars + fs)) != len(chars) + 1:
        raise ParseError("MSH-2: invalid encoding characters", "MSH", 2)
    if any(ch.isalnum() or ch.isspace() or not ch.isprintable() for ch in chars):
        raise ParseError("MSH-2: invalid encoding characters", "MSH", 2)
    if chars == "^~\\&" and fs == "|":
        return DEFAULT_ENCODING
    return Encoding(fs, chars[0], chars[1], chars[2], chars[3])


def parse_message(raw: bytes | str) -> Message:
    """Parse one ER7 message. Bytes are decoded as UTF-8, falling back to latin-1."""
    text = _decode(raw) if isinstance(raw, bytes | bytearray) else raw
    text = text.lstrip("\ufeff \t\r\n")
    if not text:
        raise ParseError("empty message")
    if not text.startswith("MSH"):
        raise ParseError("not an HL7 v2 message: it does not start with an MSH segment")
    enc = _encoding(text)
    if "\n" in text:
        text = text.replace("\r\n", "\r").replace("\n", "\r")
    fs = enc.field
    segments: list[Segment] = []
    append = segments.append
    for line in text.split("\r"):
        if not line or line.isspace():
            continue
        name = line[:3]
        if len(name) != 3 or not name.isalnum() or (len(line) > 3 and line[3] != fs):
            raise ParseError(f"segment {len(segments) + 1}: {name!r} is not an HL7 segment name")
        append(Segment(name, line, enc))
    msh = segments[0]
    return Message(segments, enc, msh.field(18))
