"""The processed write calls (services.common.calls), and the owner of each payment method.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-04
"""

import sqlalchemy as sa
from alembic import op

from services.common.calls import PROCESSED_CALLS
from services.common.migrate import create_shared_tables

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade():
    create_shared_tables(op, PROCESSED_CALLS)
    op.add_column("payment_methods", sa.Column("user_id", sa.String(36), nullable=True))


def downgrade():
    op.drop_column("payment_methods", "user_id")
    op.drop_table("processed_calls")
