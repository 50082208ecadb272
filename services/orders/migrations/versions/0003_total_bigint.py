"""An order's total is a 64-bit integer: 999 units of a product priced near the largest amount catalog accepts
(2^31 - 1 cents) overflowed PostgreSQL's 32-bit INTEGER.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-04
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade():
    # SQLite's INTEGER already holds 64 bits; batch mode copies the table there, alters it in place elsewhere.
    with op.batch_alter_table("orders") as batch:
        batch.alter_column("total_cents", existing_type=sa.Integer(), type_=sa.BigInteger(), existing_nullable=False)


def downgrade():
    with op.batch_alter_table("orders") as batch:
        batch.alter_column("total_cents", existing_type=sa.BigInteger(), type_=sa.Integer(), existing_nullable=False)
