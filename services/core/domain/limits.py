"""What the store can carry: the maximum lengths and the characters of the canonical result's text.

One place for the limits the gateway enforces on every payload (HL7 v2, FHIR, CSV) and that
`LabResult` declares, so a value the gateway accepted always fits the topic contract and the
PostgreSQL columns (SPEC §9.1: what the store cannot carry is refused at the gateway, with where).

Lengths are in characters (code points), as PostgreSQL's `varchar(n)` counts them:

- `TEXT_MAX` (199) for every identifier, code and name the gateway reads: sending application and
  facility, message control id, specimen id and type, performing lab, and the identity traits sealed
  for contact tracing. 199 is HL7 v2.5.1's longest conformance length of those components (EI.1
  entity identifier, HD.2 universal id, XTN.4 e-mail), far under PostgreSQL's btree entry limit
  (~2,700 bytes; `lab_daily.lab` is a key) and it keeps one result record a few kilobytes at most.
- `POSTAL_CODE_MAX` (10): `results.postal_code` is `varchar(10)` (a French code has 5 digits).
- `FINESS_MAX` (16): `results.lab_finess` is `varchar(16)` (a FINESS number has 9 characters).

Characters: PostgreSQL `text` cannot hold NUL at all, and no other control character has a meaning
in a lab result. `ALLOWED_CONTROLS` are the only ones a value may carry: tab (free text sent by LIS;
harmless), and line feed / carriage return (HL7 segment ends, FHIR/CSV multi-line text; HL7 escapes
them as `\\.br\\` or `\\X0D\\`). Refused: the rest of C0 (U+0000–U+001F), DEL (U+007F), C1 (U+0080–U+009F:
in a name they are nearly always a charset mix-up, e.g. Windows-1252 sent as ISO 8859-1, and a
mis-decoded name would give the person another pseudonym), and lone surrogates (U+D800–U+DFFF: not
Unicode text; they are how undecodable bytes are carried until they are reported).
"""

from __future__ import annotations

import re
from typing import Final

TEXT_MAX: Final = 199
POSTAL_CODE_MAX: Final = 10
FINESS_MAX: Final = 16

ALLOWED_CONTROLS: Final = "\t\n\r"
FORBIDDEN_CHARACTERS: Final = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff]")
"""One character a value must not carry (see the module docstring)."""

_CONTROL_NAMES: Final = (
    *("NUL", "SOH", "STX", "ETX", "EOT", "ENQ", "ACK", "BEL", "BS", "HT", "LF", "VT", "FF", "CR", "SO"),
    *("SI", "DLE", "DC1", "DC2", "DC3", "DC4", "NAK", "SYN", "ETB", "CAN", "EM", "SUB", "ESC", "FS", "GS"),
    *("RS", "US"),
)


def describe_character(char: str) -> str:
    """A character named for a reason text: `U+0000 (NUL)`, `U+0085`, `U+D800`."""
    point = ord(char)
    name = _CONTROL_NAMES[point] if point < 0x20 else "DEL" if point == 0x7F else ""
    return f"U+{point:04X}" + (f" ({name})" if name else "")
