"""rejection replays: which rejected payloads an operator replayed, when, and what became of them

`labflow rejected list` shows it; `labflow rejected replay` refuses to replay an item again unless
asked (`--again`). The gateway role writes it: a replay goes through the gateway's intake.

Revision ID: 0008
Revises: 0007
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None
NOW = sa.func.now()


def upgrade() -> None:
    op.create_table(
        "rejection_replays",
        sa.Column("rejection_id", sa.Text, primary_key=True),
        sa.Column("replays", sa.Integer, nullable=False, server_default="1"),
        sa.Column("last_outcome", sa.Text, nullable=False),
        sa.Column("first_replayed_at", sa.DateTime(timezone=True), nullable=False, server_default=NOW),
        sa.Column("last_replayed_at", sa.DateTime(timezone=True), nullable=False, server_default=NOW),
    )
    op.execute("GRANT SELECT, INSERT, UPDATE ON rejection_replays TO labflow_gateway")


def downgrade() -> None:
    op.drop_table("rejection_replays")
