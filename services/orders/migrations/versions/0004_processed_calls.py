"""The processed write calls (services.common.calls).

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-04
"""

from alembic import op

from services.common.calls import PROCESSED_CALLS
from services.common.migrate import create_shared_tables

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade():
    create_shared_tables(op, PROCESSED_CALLS)


def downgrade():
    op.drop_table("processed_calls")
