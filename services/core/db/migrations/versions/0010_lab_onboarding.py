"""lab onboarding (SPEC §8.1): a lab's mode and time zone, test storage, conformance reports

- `labs.mode`: `test` or `production`. Every lab registered before this migration keeps sending as
  it did: `production` is the column default, so nothing changes for it. `labflow labs add` registers
  a new lab in `test` mode unless told otherwise.
- `labs.time_zone`: IANA zone the lab's offset-less HL7 times are read in; existing labs get their
  FINESS department's (the overseas departments have their own), else Europe/Paris — the same rule as
  `services.core.domain.geography.department_time_zone`, stated here in SQL because a migration must not
  depend on code that may change after it.
- `test_results`: every result a test-mode lab sent, one row per reception (a re-sent message is a
  second row: the conformance report checks re-sends), the canonical record without its sealed
  identity. It feeds no count, file or handoff: only `labflow conformance report` reads it.
- `conformance_reports`: each report's outcome, for `labflow labs promote` and a lab portal.

Grants (least privilege): the worker only inserts test results; the onboarding commands (`labflow
labs`, `labflow conformance`, role `labflow_labs`) read them and record reports. No reader of
production data (open data, dashboard, tracing) can see either table.

Revision ID: 0010
Revises: 0008 (the lead relinks it after 0009 at merge)
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None
NOW = sa.func.now()
OVERSEAS_TIME_ZONES = {
    "971": "America/Guadeloupe",
    "972": "America/Martinique",
    "973": "America/Cayenne",
    "974": "Indian/Reunion",
    "976": "Indian/Mayotte",
}


def upgrade() -> None:
    op.add_column(
        "labs", sa.Column("mode", sa.String(10), nullable=False, server_default="production")
    )
    op.create_check_constraint("ck_labs_mode", "labs", "mode IN ('production', 'test')")
    op.add_column(
        "labs", sa.Column("time_zone", sa.Text, nullable=False, server_default="Europe/Paris")
    )
    cases = " ".join(f"WHEN '{dep}' THEN '{zone}'" for dep, zone in OVERSEAS_TIME_ZONES.items())
    op.execute(
        f"UPDATE labs SET time_zone = CASE substr(finess, 1, 3) {cases} ELSE time_zone END "
        "WHERE finess IS NOT NULL"
    )
    op.create_table(
        "test_results",
        sa.Column("result_id", sa.String(64), primary_key=True),
        sa.Column("patient_pseudonym", sa.String(64), primary_key=True),
        sa.Column("received_at", sa.DateTime(timezone=True), primary_key=True),
        sa.Column("lab_id", sa.Text, nullable=False),
        sa.Column("message_control_id", sa.Text, nullable=False),
        sa.Column("record", JSONB, nullable=False),
        sa.Column("stored_at", sa.DateTime(timezone=True), nullable=False, server_default=NOW),
    )
    op.create_index("ix_test_results_lab_id_received_at", "test_results", ["lab_id", "received_at"])
    op.create_table(
        "conformance_reports",
        sa.Column("lab_id", sa.Text, primary_key=True),
        sa.Column("generated_at", sa.DateTime(timezone=True), primary_key=True, server_default=NOW),
        sa.Column("passed", sa.Boolean, nullable=False),
        sa.Column("report", JSONB, nullable=False),
    )
    op.execute("GRANT INSERT ON test_results TO labflow_worker")
    op.execute("GRANT SELECT ON test_results TO labflow_labs")
    op.execute("GRANT SELECT, INSERT ON conformance_reports TO labflow_labs")
    # the lab portal shows a lab its own mode and latest conformance report
    op.execute("GRANT SELECT (mode) ON labs TO labflow_dashboard")
    op.execute("GRANT SELECT ON conformance_reports TO labflow_dashboard")


def downgrade() -> None:
    # a column privilege outlives its dropped column (as a "pg.dropped" entry): revoke it first
    op.execute("REVOKE SELECT (mode) ON labs FROM labflow_dashboard")
    op.drop_table("conformance_reports")
    op.drop_table("test_results")
    op.drop_column("labs", "time_zone")
    op.drop_constraint("ck_labs_mode", "labs")
    op.drop_column("labs", "mode")
