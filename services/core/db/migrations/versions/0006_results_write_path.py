"""drop results indexes that no query uses (each one is written on every result)

Revision ID: 0006
Revises: 0005
"""

from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.drop_index("ix_results_sending_facility", table_name="results")
    op.drop_index("ix_results_collection_day", table_name="results")


def downgrade() -> None:
    op.create_index("ix_results_collection_day", "results", ["collection_day"])
    op.create_index("ix_results_sending_facility", "results", ["sending_facility"])
