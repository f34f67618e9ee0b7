"""person deduplication, aggregates, lab statistics, cases, outbox, sealed identities

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "persons",
        sa.Column("patient_pseudonym", sa.String(64), primary_key=True),
        sa.Column("contributions", JSONB, nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
    )
    op.create_table(
        "aggregates",
        sa.Column("day", sa.Date, primary_key=True),
        sa.Column("department", sa.String(3), primary_key=True),
        sa.Column("age_class", sa.String(2), primary_key=True),
        sa.Column("sex", sa.String(1), primary_key=True),
        sa.Column("test_kind", sa.String(16), primary_key=True),
        sa.Column("p", sa.Integer, nullable=False),
        sa.Column("t", sa.Integer, nullable=False),
    )
    op.create_table(
        "lab_daily",
        sa.Column("lab", sa.Text, primary_key=True),
        sa.Column("day", sa.Date, primary_key=True),
        sa.Column("results", sa.Integer, nullable=False),
        sa.Column("positives", sa.Integer, nullable=False),
    )
    op.create_table(
        "lab_delays",
        sa.Column("lab", sa.Text, primary_key=True),
        sa.Column("day", sa.Date, primary_key=True),
        sa.Column("delay_hours", sa.Integer, primary_key=True),
        sa.Column("n", sa.Integer, nullable=False),
    )
    op.create_table(
        "cases",
        sa.Column("case_id", sa.String(32), primary_key=True),
        sa.Column("patient_pseudonym", sa.String(64), nullable=False),
        sa.Column("status", sa.String(10), nullable=False),
        sa.Column("onset_day", sa.Date, nullable=False),
        sa.Column("last_positive_day", sa.Date, nullable=False),
        sa.Column("department", sa.String(3)),
        sa.Column("region", sa.String(3)),
        sa.Column("age_class", sa.String(2)),
        sa.Column("sex", sa.String(1), nullable=False),
        sa.Column("test_kind", sa.String(16), nullable=False),
        sa.Column("first_received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("opened_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
    )
    op.create_index("ix_cases_patient_pseudonym", "cases", ["patient_pseudonym"])
    op.create_table(
        "outbox",
        sa.Column("id", sa.BigInteger, primary_key=True, autoincrement=True),
        sa.Column("topic", sa.Text, nullable=False),
        sa.Column("key", sa.Text, nullable=False),
        sa.Column("payload", JSONB, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.Column("sent_at", sa.DateTime(timezone=True)),
    )
    op.create_index("ix_outbox_unsent", "outbox", ["id"], postgresql_where=sa.text("sent_at IS NULL"))
    op.create_table(
        "person_identities",
        sa.Column("patient_pseudonym", sa.String(64), primary_key=True),
        sa.Column("sealed_identity", sa.Text, nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    for table in ("person_identities", "outbox", "cases", "lab_delays", "lab_daily", "aggregates", "persons"):
        op.drop_table(table)
