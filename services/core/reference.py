"""Reference data (SPEC §10): department → region, population per department and age class.

Read once per directory and cached; the default directory is `../shared/reference` from the repository root.
"""

from __future__ import annotations

import csv
import functools
from dataclasses import dataclass
from pathlib import Path

from services.core.domain.indicators import Geography

DEFAULT_REFERENCE_DIR = Path(__file__).resolve().parents[2].parent / "shared" / "reference"


@dataclass(frozen=True, slots=True)
class Reference:
    department_region: dict[str, str]
    """Department → INSEE region code; 975, 977 and 978 belong to no region and are absent."""
    population: dict[tuple[str, str], float]
    """(department, cl_age90) → population; cl_age90 `0` is all ages."""


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle, delimiter=";"))


@functools.cache
def load_reference(directory: Path = DEFAULT_REFERENCE_DIR) -> Reference:
    department_region = {row["dep"]: row["reg"] for row in _rows(directory / "departments.csv") if row["reg"]}
    population = {
        (row["dep"], row["cl_age90"]): float(row["pop"])
        for row in _rows(directory / "population_dep_age.csv")
    }
    return Reference(department_region, population)


def load_geography(directory: Path = DEFAULT_REFERENCE_DIR) -> tuple[Geography, dict[str, str]]:
    """The geography of the SI-DEP files (departments, regions, populations) and region names."""
    reference = load_reference(directory)
    regions = {row["reg"]: row["name"] for row in _rows(directory / "regions.csv")}
    return Geography.from_reference(reference.department_region, reference.population, list(regions)), regions
