"""Orders with saga state; outbox; processed events.

Revision ID: 0001
Revises:
Create Date: 2026-11-28
"""

import sqlalchemy as sa
from alembic import op

from services.common.events import PROCESSED_EVENTS
from services.common.migrate import create_shared_tables
from services.common.outbox import OUTBOX

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        "orders",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("user_id", sa.String(36), nullable=False),
        sa.Column("cart_id", sa.String(36), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("step", sa.String(20), nullable=False),
        sa.Column("failure_reason", sa.String(40), nullable=True),
        sa.Column("items", sa.Text(), nullable=False),
        sa.Column("total_cents", sa.Integer(), nullable=False),
        sa.Column("payment_method_id", sa.String(36), nullable=False),
        sa.Column("idempotency_key", sa.String(255), nullable=True),
        sa.Column("deadline_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("user_id", "idempotency_key", name="uq_orders_user_idempotency_key"),
    )
    op.create_index("ix_orders_user_created", "orders", ["user_id", "created_at"])
    op.create_index("ix_orders_step_updated", "orders", ["step", "updated_at"])
    create_shared_tables(op, OUTBOX, PROCESSED_EVENTS)


def downgrade():
    op.drop_table("processed_events")
    op.drop_table("outbox")
    op.drop_table("orders")
