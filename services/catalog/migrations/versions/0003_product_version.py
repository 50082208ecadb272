"""Products get a version that every change of the row increases (carts keeps prices by it).

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
    op.add_column("products", sa.Column("version", sa.BigInteger(), nullable=False, server_default="1"))


def downgrade():
    with op.batch_alter_table("products") as batch:
        batch.drop_column("version")
