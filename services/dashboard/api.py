"""Query API `/api/v1/…`: JSON by default, `?format=csv` (`;`-separated like the open-data files).

Invalid input (unknown level, code, age class, sex or kind, a malformed date, `from` after `to`, too
long a period) is a 422 with a JSON `detail` saying why.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable, Sequence
from dataclasses import asdict, fields
from datetime import UTC, date, datetime, timedelta
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse, Response
from sqlalchemy import Engine

from services.core.domain.indicators import ALL_AGES, CL_AGE90, Geography
from services.dashboard.auth import Authenticator
from services.dashboard.names import Names
from services.dashboard.queries import (
    INCIDENCE_THRESHOLDS,
    KINDS,
    LATE_MEDIAN_HOURS,
    LEVELS,
    MAX_AGE_WEEKS,
    MAX_LAB_DAYS,
    PROVISIONAL_DAYS,
    SEXES,
    SMALL_COUNT_P7,
    AgeWeek,
    DepartmentWeek,
    Filters,
    IndicatorDay,
    LabDay,
    QueryError,
    SilentLab,
    age_weeks,
    check_code,
    check_period,
    connection,
    department_week,
    indicators,
    lab_report,
)

MAX_SERIES_DAYS = 5 * 366
DATA_BOUNDS = "SELECT min(day), max(day) FROM dashboard_national_daily WHERE p <> 0 OR t <> 0"

Format = Annotated[Literal["json", "csv"], Query()]
Age = Annotated[str, Query(description=f"cl_age90: {', '.join(CL_AGE90)} (0 = all ages)")]
Sex = Annotated[str, Query(description="all, F or M")]
Kind = Annotated[str, Query(description="all (RT-PCR + antigen), rt-pcr or antigen")]


def csv_response(rows: Sequence[Any], columns: Sequence[str], filename: str) -> Response:
    out = io.StringIO()
    writer = csv.writer(out, delimiter=";", lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        values = [getattr(row, c) for c in columns]
        writer.writerow(["" if v is None else _cell(v) for v in values])
    return Response(
        out.getvalue(), media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )


def _cell(value: object) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, datetime | date):
        return value.isoformat()
    return str(value)


def _json_default(value: object) -> str:
    if isinstance(value, datetime | date):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def json_response(body: dict[str, Any]) -> Response:
    """Serialized directly: FastAPI's generic encoder costs more than the query on thousands of rows."""
    return Response(json.dumps(body, default=_json_default, separators=(",", ":")),
                    media_type="application/json")


def _columns(cls: type[Any]) -> list[str]:
    return [f.name for f in fields(cls)]


def _plain(rows: Sequence[Any]) -> list[dict[str, Any]]:
    """Flat dataclass rows as dicts (dataclasses.asdict deep-copies: ten times slower here)."""
    if not rows:
        return []
    names = _columns(type(rows[0]))
    return [{name: getattr(row, name) for name in names} for row in rows]


def query_error(exc: QueryError) -> JSONResponse:
    return JSONResponse({"detail": str(exc)}, status_code=422)


def create_router(
    geography: Geography, engine: Engine, auth: Authenticator, clock: Callable[[], datetime],
    names: Names,
) -> APIRouter:
    router = APIRouter(prefix="/api/v1", dependencies=[Depends(auth.require)])

    def today() -> date:
        return clock().astimezone(UTC).date()

    @router.get("/session")
    def session(request: Request) -> dict[str, str]:
        user = auth.require(request)
        return {"subject": user.subject, "method": user.method}

    @router.get("/meta")
    def meta() -> dict[str, Any]:
        """What the page needs for its filters: codes and names, the days with data, and the rules the
        page shows (provisional days, small counts, incidence thresholds)."""
        with connection(engine) as conn:
            bounds = conn.execute(DATA_BOUNDS).fetchone()
        first, last = bounds if bounds else (None, None)
        return {
            "first_day": first, "last_day": last, "today": today(),
            "regions": [{"code": r, "name": names.region(r)} for r in geography.regions],
            "departments": [
                {"code": d, "name": names.department(d), "region": geography.department_region.get(d)}
                for d in geography.departments
            ],
            "age_classes": list(CL_AGE90), "sexes": list(SEXES), "kinds": list(KINDS), "levels": list(LEVELS),
            "rules": {
                "provisional_days": PROVISIONAL_DAYS, "small_count_p7": SMALL_COUNT_P7,
                "incidence_thresholds": list(INCIDENCE_THRESHOLDS), "late_median_hours": LATE_MEDIAN_HOURS,
                "max_age_weeks": MAX_AGE_WEEKS,
            },
        }

    @router.get("/indicators", response_model=None)
    def get_indicators(
        level: Annotated[Literal["fra", "reg", "dep"], Query()],
        start: Annotated[date, Query(alias="from")],
        end: Annotated[date, Query(alias="to")],
        code: str = "FR",
        age: Age = ALL_AGES, sex: Sex = "all", kind: Kind = "all", format: Format = "json",
    ) -> Response:
        try:
            filters = Filters(age, sex, kind)
            check_period(start, end, MAX_SERIES_DAYS)
            check_code(geography, level, code)
            with connection(engine) as conn:
                days = indicators(conn, geography, level, code, start, end, filters, today())
        except QueryError as exc:
            return query_error(exc)
        if format == "csv":
            return csv_response(days, _columns(IndicatorDay),
                                f"indicators-{level}-{code}-{start}-{end}-{age}-{sex}-{kind}.csv")
        return json_response({"level": level, "code": code, "from": start, "to": end, **asdict(filters),
                              "days": _plain(days)})

    @router.get("/map", response_model=None)
    def get_map(
        day: date, age: Age = ALL_AGES, sex: Sex = "all", kind: Kind = "all",
        format: Format = "json",
    ) -> Response:
        try:
            filters = Filters(age, sex, kind)
            with connection(engine) as conn:
                departments = department_week(conn, geography, day, filters, names)
        except QueryError as exc:
            return query_error(exc)
        if format == "csv":
            return csv_response(departments, _columns(DepartmentWeek),
                                f"departments-{day}-{age}-{sex}-{kind}.csv")
        return json_response({"day": day, **asdict(filters), "departments": _plain(departments)})

    @router.get("/ages", response_model=None)
    def get_ages(
        level: Annotated[Literal["fra", "reg", "dep"], Query()],
        end: Annotated[date, Query(alias="to")],
        code: str = "FR", weeks: int = 12, sex: Sex = "all", kind: Kind = "all", format: Format = "json",
    ) -> Response:
        """Age × week heat map: per age class and 7-day block ending on `to`, `weeks` blocks back."""
        try:
            filters = Filters(ALL_AGES, sex, kind)
            check_code(geography, level, code)
            with connection(engine) as conn:
                cells = age_weeks(conn, geography, level, code, end, weeks, filters, today())
        except QueryError as exc:
            return query_error(exc)
        if format == "csv":
            return csv_response(cells, _columns(AgeWeek),
                                f"ages-{level}-{code}-{end}-{weeks}w-{sex}-{kind}.csv")
        return json_response({"level": level, "code": code, "to": end, "weeks": weeks, "sex": sex,
                              "kind": kind, "cells": _plain(cells)})

    @router.get("/labs/reporting", response_model=None)
    def get_labs(
        start: Annotated[date | None, Query(alias="from")] = None,
        end: Annotated[date | None, Query(alias="to")] = None,
        view: Annotated[Literal["days", "period", "silent"], Query()] = "days",
        format: Format = "json",
    ) -> Response:
        """`view` chooses what `?format=csv` returns; the JSON always has all three."""
        now = clock()
        last = end or now.astimezone(UTC).date()
        first = start or last - timedelta(days=6)
        try:
            with connection(engine) as conn:
                report = lab_report(conn, first, last, now)
        except QueryError as exc:
            return query_error(exc)
        if format == "csv":
            if view == "silent":
                return csv_response(report.silent, _columns(SilentLab), f"labs-silent-{last}.csv")
            rows = report.days if view == "days" else report.period
            return csv_response(rows, _columns(LabDay), f"labs-{view}-{first}-{last}.csv")
        return json_response({
            "from": first, "to": last, "as_of": report.as_of, "max_days": MAX_LAB_DAYS,
            "days": _plain(report.days), "period": _plain(report.period), "silent": _plain(report.silent),
        })

    return router
