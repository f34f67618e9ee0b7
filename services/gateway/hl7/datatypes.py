"""HL7 v2 data types the normalizer reads: DTM date/times; a bad one is an issue at its field.

A DTM without an offset is a local time of the sending lab (SPEC §8.1): it is read in the lab's time
zone, passed by the caller (Europe/Paris unless the lab registry says otherwise). Parsing is cached per
(value, zone): a message repeats its times (OBR-7 / SPM-17, OBR-22 / OBX-14) and a burst from one lab
repeats them across messages. The full form with an offset (`YYYYMMDDHHMMSS+ZZZZ`, what most labs
send) is read by `datetime.fromisoformat`, in C; every other form, and what it refuses, field by field.
"""

from __future__ import annotations

import functools
from datetime import datetime, timedelta, timezone, tzinfo

from services.core.domain.geography import PARIS
from services.gateway import issue_catalogue as catalogue
from services.gateway.issues import Issue

# no lab datum is older or later; within these, any offset or time-zone conversion stays in `datetime`'s
# range (year 1 with +23:59 used to raise OverflowError and drop the connection instead of answering)
MIN_YEAR, MAX_YEAR = 1800, 9998


@functools.lru_cache(maxsize=64)
def _fixed_offset(minutes: int) -> timezone:
    return timezone(timedelta(minutes=minutes))


@functools.lru_cache(maxsize=4096)
def parse_dtm(value: str, zone: tzinfo = PARIS) -> datetime:
    """HL7 DTM `YYYY[MM[DD[HH[MM[SS[.S+]]]]]][+/-ZZZZ]`, aware; in `zone` when no offset is given."""
    if (
        len(value) == 19 and value[14] in "+-" and value.isascii()
        and value[:14].isdigit() and value[15:].isdigit()
    ):
        # the usual full form with an offset, read by C code (a third of the cost); what it refuses
        # is read by the general reading, which refuses it too or reads it its own way
        try:
            parsed = datetime.fromisoformat(f"{value[:8]}T{value[8:]}")
        except ValueError:
            pass
        else:
            if MIN_YEAR <= parsed.year <= MAX_YEAR:
                return parsed
    return read_dtm_text(value, zone)


def read_dtm_text(value: str, zone: tzinfo) -> datetime:
    """`parse_dtm` of any DTM form, read field by field."""
    tz: tzinfo = zone
    if len(value) > 5 and value[-5] in "+-":
        offset = value[-4:]
        if not (offset.isascii() and offset.isdigit()):
            raise ValueError("bad time zone offset")
        minutes = int(offset[:2]) * 60 + int(offset[2:])
        if minutes >= 24 * 60:
            raise ValueError("bad time zone offset")
        tz = _fixed_offset(-minutes if value[-5] == "-" else minutes)
        value = value[:-5]
    micro = 0
    dot = value.find(".")
    if dot >= 0:
        fraction = value[dot + 1 :]
        value = value[:dot]
        if len(value) != 14 or not 1 <= len(fraction) <= 4 or not (fraction.isascii() and fraction.isdigit()):
            raise ValueError("bad fraction of second")
        micro = int(fraction.ljust(6, "0"))
    n = len(value)
    if n not in (4, 6, 8, 10, 12, 14) or not (value.isascii() and value.isdigit()):
        raise ValueError("bad date/time")
    if not MIN_YEAR <= int(value[:4]) <= MAX_YEAR:
        raise ValueError("date/time out of range")
    return datetime(
        int(value[:4]),
        int(value[4:6]) if n >= 6 else 1,
        int(value[6:8]) if n >= 8 else 1,
        int(value[8:10]) if n >= 10 else 0,
        int(value[10:12]) if n >= 12 else 0,
        int(value[12:14]) if n >= 14 else 0,
        micro,
        tzinfo=tz,
    )


def read_dtm(
    value: str, segment: str, sequence: int, fld: int, zone: tzinfo, issues: list[Issue]
) -> datetime | None:
    """A DTM value (in any format, at the HL7 position it has), or None when empty; a bad one is
    appended to `issues`."""
    if not value:
        return None
    try:
        return parse_dtm(value, zone)
    except ValueError:
        issues.append(
            catalogue.TIME_INVALID.at(segment, sequence, fld, 1, f"{segment}-{fld}: invalid date/time")
        )
        return None
