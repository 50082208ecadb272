"""Stock holds: products get on_hand; holds per order and their lines; the outbox.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-29
"""

import sqlalchemy as sa
from alembic import op

from services.common.migrate import create_shared_tables
from services.common.outbox import OUTBOX

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

SKU = sa.String(64).with_variant(sa.String(64, collation="C"), "postgresql")


def upgrade():
    # Nothing is held or sold before this revision: what is on hand is what is in stock.
    op.add_column("products", sa.Column("on_hand", sa.BigInteger(), nullable=True))
    op.execute("UPDATE products SET on_hand = stock")
    # SQLite cannot alter a column or add a constraint in place: batch mode copies the table there.
    with op.batch_alter_table("products") as batch:
        batch.alter_column("on_hand", existing_type=sa.BigInteger(), nullable=False)
        batch.create_check_constraint("ck_products_stock", "stock >= 0")

    op.create_table(
        "stock_holds",
        sa.Column("order_id", sa.String(36), primary_key=True),
        sa.Column("status", sa.String(12), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("status IN ('held', 'committed', 'released')", name="ck_stock_holds_status"),
    )
    op.create_index("ix_stock_holds_status_expires", "stock_holds", ["status", "expires_at"])
    op.create_table(
        "stock_hold_lines",
        sa.Column("order_id", sa.String(36), sa.ForeignKey("stock_holds.order_id"), primary_key=True),
        sa.Column("sku", SKU, sa.ForeignKey("products.sku"), primary_key=True),
        sa.Column("quantity", sa.Integer(), nullable=False),
        sa.CheckConstraint("quantity > 0", name="ck_stock_hold_lines_quantity"),
    )
    create_shared_tables(op, OUTBOX)


def downgrade():
    op.drop_table("outbox")
    op.drop_table("stock_hold_lines")
    op.drop_table("stock_holds")
    with op.batch_alter_table("products") as batch:
        batch.drop_constraint("ck_products_stock", type_="check")
        batch.drop_column("on_hand")
