"""French geography, age classes of the SI-DEP files and department time zones (pure)."""

from __future__ import annotations

from datetime import date

AGE_CLASSES: tuple[str, ...] = ("09", "19", "29", "39", "49", "59", "69", "79", "89", "90")
"""cl_age90 codes in order (the all-ages code `0` is not an age class)."""

_OVERSEAS = frozenset({"971", "972", "973", "974", "975", "976", "977", "978"})
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


DEFAULT_TIME_ZONE = "Europe/Paris"
# metropolitan France and Corsica keep Paris time; each overseas department has its own
_DEPARTMENT_TIME_ZONES = {
    "971": "America/Guadeloupe",
    "972": "America/Martinique",
    "973": "America/Cayenne",
    "974": "Indian/Reunion",
    "976": "Indian/Mayotte",
}


def department_time_zone(dep: str) -> str:
    """IANA time zone of a department: the overseas departments' own, else Europe/Paris."""
    return _DEPARTMENT_TIME_ZONES.get(dep.strip().upper(), DEFAULT_TIME_ZONE)


def finess_department(finess: str) -> str:
    """The department a FINESS number starts with: 3 characters overseas (97x), else 2 (01…95, 2A, 2B)."""
    value = finess.strip().upper()
    return value[:3] if value.startswith("97") else value[:2]
