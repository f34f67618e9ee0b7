"""Department and region names for people: INSEE's official geographic code, as vendored at build time.

`make install` writes `static/vendor/geo-names.json` from the npm package `@etalab/decoupage-administratif`
(`services/dashboard/web/build-vendor.mjs`). Region names of the reference data (`regions.csv`) come first;
a code without a known name is shown as its code (and a missing file is logged, never fatal).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from services.core.logs import get_logger

GEO_NAMES = Path(__file__).parent / "static" / "vendor" / "geo-names.json"

log = get_logger(__name__)


@dataclass(frozen=True, slots=True)
class Names:
    departments: dict[str, str]
    regions: dict[str, str]

    def department(self, code: str) -> str:
        return self.departments.get(code, code)

    def region(self, code: str | None) -> str | None:
        return None if code is None else self.regions.get(code, code)


def load_names(region_names: dict[str, str], path: Path = GEO_NAMES) -> Names:
    try:
        cog = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        log.warning("dashboard.geo_names_missing", path=str(path), error=type(exc).__name__,
                    hint="run `make install` (npm: @etalab/decoupage-administratif)")
        cog = {}
    departments = {str(k): str(v) for k, v in cog.get("departments", {}).items()}
    regions = {str(k): str(v) for k, v in cog.get("regions", {}).items()}
    return Names(departments, {**regions, **region_names})
