"""Alembic migrations, one history per service under `services/<name>/migrations/`.

`python -m services.common.migrate <name> [config/<name>.yml]` upgrades that service's database (config key
`DATABASE_URL`) to the newest revision; `make run`, the containers and the tests all use it. On PostgreSQL it
holds an advisory lock, so replicas that start together migrate one at a time.
"""

import os
import sys
import zlib

from alembic import command, context
from alembic.config import Config
from sqlalchemy import text

from services.common.config import load_config
from services.common.db import make_engine

SERVICES_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def alembic_config(service, url):
    config = Config()
    config.set_main_option("script_location", os.path.join(SERVICES_DIR, service, "migrations"))
    config.attributes["url"] = url
    config.attributes["service"] = service
    return config


def upgrade(service, url, revision="head"):
    """Bring `service`'s database at `url` to `revision`."""
    command.upgrade(alembic_config(service, url), revision)


def create_shared_tables(op, *tables):
    """In a migration: create tables the shared toolkit defines (the outbox, processed events), with their
    indexes. Their definitions are versioned with the toolkit: a change to one needs a new migration."""
    for table in tables:
        op.create_table(table.name, *[column._copy() for column in table.columns])
        for index in table.indexes:
            op.create_index(index.name, table.name, [column.name for column in index.columns])


def run_migrations(metadata):
    """The body of every service's `migrations/env.py` (online mode only)."""
    url = context.config.attributes["url"]
    engine = make_engine(url)
    with engine.connect() as connection:
        if connection.dialect.name == "postgresql":
            lock_id = zlib.crc32(context.config.attributes["service"].encode())
            connection.execute(text("SELECT pg_advisory_lock(:id)"), {"id": lock_id})
            connection.commit()
        context.configure(connection=connection, target_metadata=metadata)
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


def main(argv):
    service = argv[0]
    config_path = argv[1] if len(argv) > 1 else f"config/{service}.yml"
    upgrade(service, load_config(config_path)["DATABASE_URL"])


if __name__ == "__main__":
    main(sys.argv[1:])
