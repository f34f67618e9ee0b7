"""HL7 v2 batches: an optional FHS/BHS … BTS/FTS envelope around messages, split into messages.

Each message starts at an MSH segment and keeps its bytes (and segment ends) exactly as sent. Envelope
segments are not part of any message; their counts (BTS-1, FTS-1) are checked and a mismatch is a
warning (the messages present are complete in themselves). Anything that is neither envelope nor
inside a message becomes an item of its own, so the normalizer rejects it rather than it being lost.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

_LINE = re.compile(rb"[^\r\n]*(?:\r\n|\r|\n)?")
_ENVELOPE = frozenset({b"FHS", b"BHS", b"BTS", b"FTS"})


@dataclass(slots=True)
class Batch:
    messages: list[bytes] = field(default_factory=list)
    batches: int = 0
    """BHS segments seen (0 without an envelope)."""
    warnings: list[str] = field(default_factory=list)


def _count_field(line: bytes) -> int | None:
    """The first field (BTS-1 / FTS-1) of a trailer as a number, when sent."""
    text = line.rstrip(b"\r\n")
    separator = text[3:4] or b"|"
    parts = text.split(separator)
    value = parts[1].strip() if len(parts) > 1 else b""
    return int(value) if value.isdigit() else None


def split_batch(raw: bytes) -> Batch:
    batch = Batch()
    current: list[bytes] = []
    stray: list[bytes] = []
    in_batch = 0

    def close_message() -> None:
        if current:
            batch.messages.append(b"".join(current))
            current.clear()

    def close_stray() -> None:
        if stray:
            batch.messages.append(b"".join(stray))
            stray.clear()

    body = raw.removeprefix(b"\xef\xbb\xbf")
    for match in _LINE.finditer(body):
        line = match.group()
        if not line.strip():
            continue
        name = line.lstrip()[:3]
        if name in _ENVELOPE:
            close_message()
            close_stray()
            if name == b"BHS":
                batch.batches += 1
                in_batch = 0
            elif name == b"BTS":
                expected = _count_field(line)
                if expected is not None and expected != in_batch:
                    batch.warnings.append(
                        f"BTS-1: batch {batch.batches} announces {expected} messages, {in_batch} were sent"
                    )
            elif name == b"FTS":
                expected = _count_field(line)
                if expected is not None and expected != batch.batches:
                    batch.warnings.append(
                        f"FTS-1: file announces {expected} batches, {batch.batches} were sent"
                    )
        elif name == b"MSH":
            close_message()
            close_stray()
            current.append(line)
            in_batch += 1
        elif current:
            current.append(line)
        else:
            stray.append(line)
    close_message()
    close_stray()
    if not batch.messages:
        batch.messages.append(raw)  # empty or blank: one item, which the normalizer rejects
    return batch
