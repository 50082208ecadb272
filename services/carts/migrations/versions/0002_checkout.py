"""Checkout: the order that checked a cart out, orders that released their cart, processed events; carts'
timestamps become timezone-aware (UtcDateTime).

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

from services.common.events import PROCESSED_EVENTS
from services.common.migrate import create_shared_tables

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

TIMESTAMPS = ("created_at", "updated_at")


def upgrade():
    op.add_column("carts", sa.Column("checked_out_by", sa.String(36), nullable=True))
    op.create_table(
        "released_orders",
        sa.Column("order_id", sa.String(36), nullable=False),
        sa.Column("released_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("order_id", name="pk_released_orders"),
    )
    create_shared_tables(op, PROCESSED_EVENTS)
    # Stored values are UTC wall-clock times. SQLite keeps no zone either way, so only PostgreSQL changes type.
    if op.get_bind().dialect.name == "postgresql":
        for column in TIMESTAMPS:
            op.alter_column(
                "carts",
                column,
                type_=sa.DateTime(timezone=True),
                existing_nullable=False,
                postgresql_using=f"{column} AT TIME ZONE 'UTC'",
            )


def downgrade():
    if op.get_bind().dialect.name == "postgresql":
        for column in TIMESTAMPS:
            op.alter_column(
                "carts",
                column,
                type_=sa.DateTime(),
                existing_nullable=False,
                postgresql_using=f"{column} AT TIME ZONE 'UTC'",
            )
    op.drop_table("processed_events")
    op.drop_table("released_orders")
    op.drop_column("carts", "checked_out_by")  # SQLite 3.35+ drops a column in place
