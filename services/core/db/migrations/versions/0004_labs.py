"""lab registry (HTTP tokens, MLLP client certificates) and HTTP submissions

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "labs",
        sa.Column("lab_id", sa.Text, primary_key=True),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("finess", sa.String(9)),
        sa.Column("enabled", sa.Boolean, nullable=False, server_default=sa.true()),
        sa.Column("token_hash", sa.Text),
        sa.Column("cert_fingerprint", sa.String(64), unique=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
    )
    op.create_table(
        "submissions",
        sa.Column("submission_id", sa.String(32), primary_key=True),
        sa.Column("lab_id", sa.Text, nullable=False),
        sa.Column("transport", sa.String(16), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("accepted", sa.Integer, nullable=False),
        sa.Column("rejected", sa.Integer, nullable=False),
        sa.Column("response", JSONB, nullable=False),
    )
    op.create_index("ix_submissions_lab_id_received_at", "submissions", ["lab_id", "received_at"])


def downgrade() -> None:
    op.drop_table("submissions")
    op.drop_table("labs")
