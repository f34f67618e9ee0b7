"""dashboard: department → region table, national and regional rollups of `aggregates`, read indexes

The rollups are materialized views refreshed by the dashboard (`REFRESH … CONCURRENTLY`, hence the
unique indexes): a national or regional series over years then reads tens of thousands of rows instead
of millions. Department series and the lab tables are read live through the indexes below.

Revision ID: 0005
Revises: 0004
"""

from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

# INSEE codes (as ../shared/reference/departments.csv, checked by tests/unit/test_dashboard_queries.py);
# 975, 977 and 978 belong to no region
DEPARTMENT_REGIONS = (
    ("01", "84"), ("02", "32"), ("03", "84"), ("04", "93"), ("05", "93"), ("06", "93"), ("07", "84"),
    ("08", "44"), ("09", "76"), ("10", "44"), ("11", "76"), ("12", "76"), ("13", "93"), ("14", "28"),
    ("15", "84"), ("16", "75"), ("17", "75"), ("18", "24"), ("19", "75"), ("21", "27"), ("22", "53"),
    ("23", "75"), ("24", "75"), ("25", "27"), ("26", "84"), ("27", "28"), ("28", "24"), ("29", "53"),
    ("2A", "94"), ("2B", "94"), ("30", "76"), ("31", "76"), ("32", "76"), ("33", "75"), ("34", "76"),
    ("35", "53"), ("36", "24"), ("37", "24"), ("38", "84"), ("39", "27"), ("40", "75"), ("41", "24"),
    ("42", "84"), ("43", "84"), ("44", "52"), ("45", "24"), ("46", "76"), ("47", "75"), ("48", "76"),
    ("49", "52"), ("50", "28"), ("51", "44"), ("52", "44"), ("53", "52"), ("54", "44"), ("55", "44"),
    ("56", "53"), ("57", "44"), ("58", "27"), ("59", "32"), ("60", "32"), ("61", "28"), ("62", "32"),
    ("63", "84"), ("64", "75"), ("65", "76"), ("66", "76"), ("67", "44"), ("68", "44"), ("69", "84"),
    ("70", "27"), ("71", "27"), ("72", "52"), ("73", "84"), ("74", "84"), ("75", "11"), ("76", "28"),
    ("77", "11"), ("78", "11"), ("79", "75"), ("80", "32"), ("81", "76"), ("82", "76"), ("83", "93"),
    ("84", "93"), ("85", "52"), ("86", "75"), ("87", "75"), ("88", "44"), ("89", "27"), ("90", "27"),
    ("91", "11"), ("92", "11"), ("93", "11"), ("94", "11"), ("95", "11"), ("971", "01"), ("972", "02"),
    ("973", "03"), ("974", "04"), ("976", "06"),
)


def upgrade() -> None:
    op.execute(
        "CREATE TABLE department_regions (department varchar(3) PRIMARY KEY, region varchar(3) NOT NULL)"
    )
    values = ", ".join(f"('{dep}', '{reg}')" for dep, reg in DEPARTMENT_REGIONS)
    op.execute(f"INSERT INTO department_regions (department, region) VALUES {values}")
    # region '' = no region: unknown department, one outside the reference, 975/977/978
    op.execute(
        "CREATE MATERIALIZED VIEW dashboard_region_daily AS "
        "SELECT a.day, coalesce(g.region, '') AS region, a.age_class, a.sex, a.test_kind, "
        "sum(a.p)::int AS p, sum(a.t)::int AS t "
        "FROM aggregates a LEFT JOIN department_regions g ON g.department = a.department "
        "GROUP BY a.day, coalesce(g.region, ''), a.age_class, a.sex, a.test_kind"
    )
    op.execute(
        "CREATE UNIQUE INDEX ux_dashboard_region_daily "
        "ON dashboard_region_daily (region, day, age_class, sex, test_kind)"
    )
    op.execute(
        "CREATE MATERIALIZED VIEW dashboard_national_daily AS "
        "SELECT day, age_class, sex, test_kind, sum(p)::int AS p, sum(t)::int AS t "
        "FROM aggregates GROUP BY day, age_class, sex, test_kind"
    )
    op.execute(
        "CREATE UNIQUE INDEX ux_dashboard_national_daily "
        "ON dashboard_national_daily (day, age_class, sex, test_kind)"
    )
    op.execute(
        "CREATE INDEX ix_aggregates_department_day ON aggregates (department, day) "
        "INCLUDE (age_class, sex, test_kind, p, t)"
    )
    op.execute("CREATE INDEX ix_lab_daily_day ON lab_daily (day)")
    op.execute("CREATE INDEX ix_lab_delays_day ON lab_delays (day, lab, delay_hours) INCLUDE (n)")


def downgrade() -> None:
    op.execute("DROP INDEX ix_lab_delays_day")
    op.execute("DROP INDEX ix_lab_daily_day")
    op.execute("DROP INDEX ix_aggregates_department_day")
    op.execute("DROP MATERIALIZED VIEW dashboard_national_daily")
    op.execute("DROP MATERIALIZED VIEW dashboard_region_daily")
    op.execute("DROP TABLE department_regions")
