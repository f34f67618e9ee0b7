"""INS matricule validation (SPEC §10).

A matricule is 15 characters: sex (1), birth year (2), birth month (2), birth place (5, INSEE code, with
`2A` / `2B` for Corsica), serial (3), key (2). Key = 97 − (first 13 digits mod 97), computed with
`2A` → `19` and `2B` → `18`.

Accepted first digits: 1 / 2 (NIR, man / woman), 3 / 4 (NIA of a person born abroad, pending
registration) and 7 / 8 (temporary numbers). Birth month is not checked: a NIR may carry 20–42 or 50+
when the month is unknown. The birth place is only checked for shape (digits, or 2A / 2B).
"""

from __future__ import annotations

_SEX_DIGITS = frozenset("123478")


def normalize_matricule(matricule: str) -> str:
    """Uppercase, without the spaces some systems print between groups."""
    return matricule.replace(" ", "").upper()


def ins_key(first13: str) -> int:
    """The control key of the first 13 characters of a matricule (which must be well-formed)."""
    numeric = first13[:5] + first13[5:7].replace("2A", "19").replace("2B", "18") + first13[7:]
    return 97 - int(numeric) % 97


def ins_error(matricule: str, field: str = "PID-3") -> str | None:
    """None if the matricule is valid, else a human text that never contains the matricule."""
    m = normalize_matricule(matricule)
    if len(m) != 15:
        return f"{field}: INS matricule must have 15 characters, got {len(m)}"
    place = m[5:7]
    if not (m[:5].isdigit() and m[7:].isdigit() and (place.isdigit() or place in ("2A", "2B"))):
        return f"{field}: INS matricule must be digits (birth place may be 2A or 2B)"
    if m[0] not in _SEX_DIGITS:
        return f"{field}: INS matricule sex digit {m[0]} is not 1, 2, 3, 4, 7 or 8"
    expected = ins_key(m[:13])
    if int(m[13:]) != expected:
        return f"{field}: INS key {m[13:]} does not match matricule (expected {expected:02d})"
    return None


def is_valid_ins(matricule: str) -> bool:
    return ins_error(matricule) is None
