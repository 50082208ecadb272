"""Payment methods and charges.

Revision ID: 0001
Revises:
Create Date: 2026-11-28
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        "payment_methods",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("last4", sa.String(4), nullable=False),
        sa.Column("verdict", sa.String(32), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("length(last4) = 4", name="ck_payment_methods_last4"),
        sa.CheckConstraint(
            "verdict IN ('succeed', 'card_declined', 'insufficient_funds')", name="ck_payment_methods_verdict"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_payment_methods"),
    )
    op.create_table(
        "charges",
        sa.Column("order_id", sa.String(36), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("reason", sa.String(32), nullable=True),
        sa.Column("amount_cents", sa.BigInteger(), nullable=False),
        sa.Column("payment_method_id", sa.String(36), nullable=True),
        sa.Column("last4", sa.String(4), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("refunded_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint("status IN ('succeeded', 'declined', 'refunded', 'voided')", name="ck_charges_status"),
        sa.CheckConstraint("amount_cents >= 0", name="ck_charges_amount_cents"),
        sa.CheckConstraint("last4 IS NULL OR length(last4) = 4", name="ck_charges_last4"),
        sa.ForeignKeyConstraint(
            ["payment_method_id"], ["payment_methods.id"], name="fk_charges_payment_method_id_payment_methods"
        ),
        sa.PrimaryKeyConstraint("order_id", name="pk_charges"),
    )


def downgrade():
    op.drop_table("charges")
    op.drop_table("payment_methods")
