from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest

from services.core.domain.geography import (
    AGE_CLASSES,
    age_class,
    department_from_postal_code,
    department_time_zone,
    finess_department,
)
from services.core.reference import DEFAULT_REFERENCE_DIR, load_reference


@pytest.mark.parametrize(
    ("cp", "dep"),
    [
        ("75011", "75"),
        ("01000", "01"),
        ("20000", "2A"),
        ("20190", "2A"),
        ("20200", "2B"),
        ("20620", "2B"),
        ("20700", None),
        ("97110", "971"),
        ("97600", "976"),
        ("97500", "975"),
        ("97133", "977"),
        ("97150", "978"),
        ("98000", None),
        ("97900", None),
        ("00100", None),
        ("7501", None),
        ("ABCDE", None),
        (" 69003 ", "69"),
    ],
)
def test_department_from_postal_code(cp: str, dep: str | None) -> None:
    assert department_from_postal_code(cp) == dep


@pytest.mark.parametrize(
    ("birth", "at", "code"),
    [
        (date(2020, 1, 1), date(2024, 1, 1), "09"),
        (date(2014, 1, 2), date(2024, 1, 1), "09"),
        (date(2014, 1, 1), date(2024, 1, 1), "19"),
        (date(1979, 3, 1), date(2024, 1, 15), "49"),
        (date(1934, 1, 1), date(2024, 1, 1), "90"),
        (date(1934, 6, 1), date(2024, 1, 1), "89"),
        (date(1900, 1, 1), date(2024, 1, 1), "90"),
    ],
)
def test_age_class(birth: date, at: date, code: str) -> None:
    assert age_class(birth, at) == code


def test_age_classes_order() -> None:
    assert AGE_CLASSES == ("09", "19", "29", "39", "49", "59", "69", "79", "89", "90")


def test_reference() -> None:
    ref = load_reference()
    assert Path(__file__).resolve().parents[2].parent / "shared" / "reference" == DEFAULT_REFERENCE_DIR
    assert ref.department_region["2A"] == "94"
    assert ref.department_region["971"] == "01"
    assert "975" not in ref.department_region
    assert ref.population[("75", "0")] == 2148271
    departments = {dep for dep, _ in ref.population}
    assert len(departments) == 104
    assert all((dep, cl) in ref.population for dep in departments for cl in AGE_CLASSES)
    assert load_reference() is ref


@pytest.mark.parametrize(
    ("department", "zone"),
    [
        ("971", "America/Guadeloupe"),
        ("972", "America/Martinique"),
        ("973", "America/Cayenne"),
        ("974", "Indian/Reunion"),
        ("976", "Indian/Mayotte"),
        ("75", "Europe/Paris"),
        ("2A", "Europe/Paris"),
        ("2B", "Europe/Paris"),
        (None, "Europe/Paris"),
    ],
)
def test_department_time_zone(department: str | None, zone: str) -> None:
    assert department_time_zone(department).key == zone


@pytest.mark.parametrize(
    ("finess", "department"),
    [("971000019", "971"), ("974000019", "974"), ("2A0000018", "2A"), ("750000019", "75")],
)
def test_a_finess_starts_with_its_department(finess: str, department: str) -> None:
    assert finess_department(finess) == department
