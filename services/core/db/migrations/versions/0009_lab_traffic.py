"""lab traffic: per lab and reception day the messages answered AA/AE/AR, and the recent rejections

Written by the worker's lab-traffic consumers (services/worker/lab_traffic.py) from the raw and rejected
topics, fenced like the results (offsets in `consumer_offsets`, same transaction); read by the lab
portal of the dashboard, always filtered by the lab of the caller's token.

- `lab_acks`: `messages` = raw copies written (every message answered on its content: AA, or a content
  AE/AR, which the gateway writes raw beside its rejection); `ae` / `ar` = the gateway's rejections;
  `rejected_with_copy` = those written with their payload, hence with a raw copy. AA = messages −
  rejected_with_copy (a message over the bus limit is refused AR with no raw copy). `last_received_at`:
  the latest reception that day (the portal's "last message received").
- `lab_rejections`: one row per gateway rejection with a lab: when, AE/AR, transport, the lab's message
  control id and the reasons (HL7 ERR location, table 0357 code, text; the hint of the issue catalogue
  when the rejection carries one). Never the payload: reasons are written to be non-identifying.

The dashboard's role may read these, the replay log (replay status of a rejection), and the labs'
token hashes and enabled flag: the portal verifies a lab's HTTP token exactly as the gateway does
(a salted scrypt hash of a 256-bit random secret; never names, certificates or FINESS beyond what 0007
granted).

Revision ID: 0009
Revises: 0008
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None
RW = "SELECT, INSERT, UPDATE"


def upgrade() -> None:
    op.create_table(
        "lab_acks",
        sa.Column("lab", sa.Text, primary_key=True),
        sa.Column("day", sa.Date, primary_key=True),
        sa.Column("messages", sa.Integer, nullable=False, server_default="0"),
        sa.Column("ae", sa.Integer, nullable=False, server_default="0"),
        sa.Column("ar", sa.Integer, nullable=False, server_default="0"),
        sa.Column("rejected_with_copy", sa.Integer, nullable=False, server_default="0"),
        sa.Column("last_received_at", sa.DateTime(timezone=True)),
    )
    op.create_table(
        "lab_rejections",
        sa.Column("rejection_id", sa.Text, primary_key=True),
        sa.Column("lab", sa.Text, nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ack_code", sa.String(2), nullable=False),
        sa.Column("transport", sa.Text),
        sa.Column("message_control_id", sa.Text),
        sa.Column("reasons", JSONB, nullable=False),
    )
    op.create_index("ix_lab_rejections_lab_received_at", "lab_rejections", ["lab", "received_at"])
    for table in ("lab_acks", "lab_rejections"):
        op.execute(f"GRANT {RW} ON {table} TO labflow_worker")
        op.execute(f"GRANT SELECT ON {table} TO labflow_dashboard")
    op.execute("GRANT SELECT ON rejection_replays TO labflow_dashboard")
    op.execute("GRANT SELECT (token_hash, enabled) ON labs TO labflow_dashboard")


def downgrade() -> None:
    op.execute("REVOKE SELECT (token_hash, enabled) ON labs FROM labflow_dashboard")
    op.execute("REVOKE SELECT ON rejection_replays FROM labflow_dashboard")
    op.drop_table("lab_rejections")
    op.drop_table("lab_acks")
