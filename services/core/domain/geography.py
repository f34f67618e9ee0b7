"""French geography, time zones and age classes of the SI-DEP files (pure).

A department's time zone is its legal time (SPEC §8.1): the collection day (`jour`) is counted in the
residence department's zone, and a lab's timestamps without an offset are read in its own zone
(by default its FINESS department's). Metropolitan France and Corsica are Europe/Paris.
"""

from __future__ import annotations

from datetime import date
from zoneinfo import ZoneInfo

AGE_CLASSES: tuple[str, ...] = ("09", "19", "29", "39", "49", "59", "69", "79", "89", "90")
"""cl_age90 codes in order (the all-ages code `0` is not an age class)."""

PARIS = ZoneInfo("Europe/Paris")
OVERSEAS_TIME_ZONES: dict[str, ZoneInfo] = {
    "971": ZoneInfo("America/Guadeloupe"),
    "972": ZoneInfo("America/Martinique"),
    "973": ZoneInfo("America/Cayenne"),
    "974": ZoneInfo("Indian/Reunion"),
    "975": ZoneInfo("America/Miquelon"),
    "976": ZoneInfo("Indian/Mayotte"),
    "977": ZoneInfo("America/St_Barthelemy"),
    "978": ZoneInfo("America/Marigot"),
}
_OVERSEAS = frozenset(OVERSEAS_TIME_ZONES)
# Saint-Barthélemy and Saint-Martin share Guadeloupe's 971 postal prefix but are departments of their own
_POSTAL_EXCEPTIONS = {"97133": "977", "97150": "978"}


def department_from_postal_code(cp: str) -> str | None:
    """INSEE department code of a French postal code; None for Monaco/New Caledonia… (98x) or invalid."""
    cp = cp.strip()
    if len(cp) != 5 or not (cp.isascii() and cp.isdigit()):  # not "٧٥٠٠١": str.isdigit is Unicode
        return None
    head = cp[:2]
    if head == "20":
        sub = int(cp[2])
        if sub <= 1:
            return "2A"
        return "2B" if sub <= 6 else None
    if head == "97":
        exception = _POSTAL_EXCEPTIONS.get(cp)
        if exception is not None:
            return exception
        return cp[:3] if cp[:3] in _OVERSEAS else None
    if head == "00" or head == "96" or head >= "98":
        return None
    return head


def age_class(birth: date, at: date) -> str:
    """cl_age90 code of someone born on `birth`, on day `at`: 0–9 → 09, …, 80–89 → 89, 90+ → 90."""
    age = at.year - birth.year - ((at.month, at.day) < (birth.month, birth.day))
    if age >= 90:
        return "90"
    return AGE_CLASSES[max(age, 0) // 10]


def department_time_zone(department: str | None) -> ZoneInfo:
    """The legal time zone of an INSEE department code; Europe/Paris for metropolitan France, Corsica
    and an unknown or missing department."""
    return OVERSEAS_TIME_ZONES.get(department or "", PARIS)


def finess_department(finess: str) -> str:
    """The department a FINESS number starts with: 3 characters overseas (97x), else 2 (01…95, 2A, 2B)."""
    value = finess.strip().upper()
    return value[:3] if value.startswith("97") else value[:2]
