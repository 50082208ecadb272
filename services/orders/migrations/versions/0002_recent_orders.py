"""Orders by creation time across users, for the operator console's recent orders.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-04
"""

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade():
    op.create_index("ix_orders_created", "orders", ["created_at"])


def downgrade():
    op.drop_index("ix_orders_created", table_name="orders")
