"""results and consumer offsets

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "results",
        sa.Column("result_id", sa.String(64), primary_key=True),
        sa.Column("patient_pseudonym", sa.String(64), primary_key=True),
        sa.Column("precedence", sa.SmallInteger, nullable=False),
        sa.Column("version_key", sa.String(64), nullable=False),
        sa.Column("status", sa.String(1), nullable=False),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("test_kind", sa.String(16), nullable=False),
        sa.Column("loinc", sa.String(16), nullable=False),
        sa.Column("pseudonym_basis", sa.String(8), nullable=False),
        sa.Column("sex", sa.String(1), nullable=False),
        sa.Column("birth_year", sa.SmallInteger),
        sa.Column("age_class", sa.String(2)),
        sa.Column("postal_code", sa.String(10)),
        sa.Column("department", sa.String(3)),
        sa.Column("region", sa.String(3)),
        sa.Column("sending_application", sa.Text, nullable=False),
        sa.Column("sending_facility", sa.Text, nullable=False),
        sa.Column("lab_finess", sa.String(16)),
        sa.Column("performing_lab", sa.Text),
        sa.Column("message_control_id", sa.Text, nullable=False),
        sa.Column("transport", sa.String(16), nullable=False),
        sa.Column("specimen_id", sa.Text),
        sa.Column("specimen_type", sa.Text),
        sa.Column("collected_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("collection_day", sa.Date, nullable=False),
        sa.Column("observed_at", sa.DateTime(timezone=True)),
        sa.Column("result_at", sa.DateTime(timezone=True)),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("stored_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
    )
    op.create_index("ix_results_patient_pseudonym", "results", ["patient_pseudonym"])
    op.create_index("ix_results_sending_facility", "results", ["sending_facility"])
    op.create_index("ix_results_collection_day", "results", ["collection_day"])
    op.create_table(
        "consumer_offsets",
        sa.Column("group_id", sa.Text, primary_key=True),
        sa.Column("topic", sa.Text, primary_key=True),
        sa.Column("partition", sa.Integer, primary_key=True),
        sa.Column("next_offset", sa.BigInteger, nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("consumer_offsets")
    op.drop_table("results")
