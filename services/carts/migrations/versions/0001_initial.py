"""Carts and their lines.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        "carts",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("user_id", sa.String(64), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.CheckConstraint("status IN ('open', 'checked_out')", name="ck_carts_status"),
        sa.PrimaryKeyConstraint("id", name="pk_carts"),
    )
    op.create_index("ix_carts_user_id_created_at", "carts", ["user_id", "created_at"])
    op.create_table(
        "cart_lines",
        sa.Column("cart_id", sa.String(36), nullable=False),
        sa.Column("sku", sa.String(64), nullable=False),
        sa.Column("quantity", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("unit_price_cents", sa.Integer(), nullable=False),
        sa.CheckConstraint("quantity BETWEEN 1 AND 999", name="ck_cart_lines_quantity"),
        sa.CheckConstraint("unit_price_cents >= 0", name="ck_cart_lines_unit_price_cents"),
        sa.ForeignKeyConstraint(["cart_id"], ["carts.id"], name="fk_cart_lines_cart_id_carts", ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("cart_id", "sku", name="pk_cart_lines"),
    )


def downgrade():
    op.drop_table("cart_lines")
    op.drop_index("ix_carts_user_id_created_at", table_name="carts")
    op.drop_table("carts")
