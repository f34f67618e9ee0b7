"""Open-data export: one grouped query over `aggregates`, streamed, through the pure indicators, to files.

The history runs from the first collection day with data to the data cut-off: the last day with data
before the publication day (that day is still incomplete).
"""

from __future__ import annotations

from datetime import date, datetime

import psycopg
from psycopg import IsolationLevel

from services.core.config import Settings
from services.core.db.engine import libpq_url
from services.core.domain.indicators import Geography, History, build_history
from services.core.domain.model import PARIS, VIROLOGICAL_KINDS
from services.core.reference import load_geography
from services.opendata.files import Publication, publish

KINDS = sorted(kind.value for kind in VIROLOGICAL_KINDS)

BOUNDS_QUERY = """
SELECT min(day), max(day) FROM aggregates
WHERE day < %(before)s AND test_kind = ANY(%(kinds)s) AND (p <> 0 OR t <> 0)
"""
COUNTS_QUERY = """
SELECT day, department, age_class, sex, sum(p)::int, sum(t)::int FROM aggregates
WHERE day BETWEEN %(first)s AND %(last)s AND test_kind = ANY(%(kinds)s)
GROUP BY day, department, age_class, sex
"""
FETCH_ROWS = 50_000


def read_history(database_url: str, geography: Geography, publication_day: date) -> History | None:
    """The whole history from PostgreSQL, or None when no day before `publication_day` has data."""
    with psycopg.connect(libpq_url(database_url)) as conn:
        # both queries read one snapshot: results arriving meanwhile cannot move the bounds under the counts
        conn.isolation_level = IsolationLevel.REPEATABLE_READ
        conn.read_only = True
        params = {"before": publication_day, "kinds": KINDS}
        bounds = conn.execute(BOUNDS_QUERY, params).fetchone()
        if bounds is None or bounds[0] is None:
            return None
        first, last = bounds
        with conn.cursor(name="opendata_counts") as cursor:
            cursor.itersize = FETCH_ROWS
            cursor.execute(COUNTS_QUERY, {"first": first, "last": last, "kinds": KINDS})
            return build_history(cursor, geography, first, last)


def export(settings: Settings, now: datetime) -> Publication:
    """Read, compute and publish every file into the publication folder."""
    geography, _regions = load_geography(settings.reference_dir)
    history = read_history(settings.database_url_for("opendata"), geography, now.astimezone(PARIS).date())
    return publish(
        settings.opendata_path,
        history,
        now,
        keep_days=settings.opendata_keep_days,
        threshold=settings.opendata_small_count_threshold,
        threshold_departments=settings.opendata_threshold_departments,
        publish_at=settings.opendata_publish_at,
    )
