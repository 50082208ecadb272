"""services.common.db's tuning: a pooled connection per worker, and SQLite commits without an fsync each."""

import pytest
from nameko.rpc import rpc
from nameko.standalone.rpc import ServiceRpcProxy
from sqlalchemy import text

from services.common.db import EXTRA_CONNECTIONS, Database, make_engine, pool_options


class PoolService:
    name = "pooled"
    db = Database("DATABASE_URL")

    @rpc
    def answer(self):
        return self.db.execute(text("SELECT 42")).scalar()


def test_the_pool_holds_a_connection_per_worker_and_some_spare():
    assert pool_options(10) == {"pool_size": 10 + EXTRA_CONNECTIONS, "max_overflow": 5}


def test_a_container_sizes_its_pool_from_max_workers(container_factory, rabbit_config, bare_database):
    config = dict(rabbit_config, DATABASE_URL=bare_database("pool"), max_workers=7)
    container = container_factory(PoolService, config)
    container.start()
    [database] = [dependency for dependency in container.dependencies if isinstance(dependency, Database)]
    assert database.engine.pool.size() == 7 + EXTRA_CONNECTIONS
    with ServiceRpcProxy("pooled", config) as pooled:
        assert pooled.answer() == 42


@pytest.mark.parametrize("url", ["sqlite://", "sqlite:///:memory:"])
def test_an_in_memory_database_takes_no_pool_size(url):
    engine = make_engine(url, **pool_options(10))  # SingletonThreadPool would refuse max_overflow
    with engine.connect() as connection:
        assert connection.execute(text("SELECT 1")).scalar() == 1
    engine.dispose()


def test_sqlite_files_use_wal_and_synchronous_normal(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path / 'tuned.db'}")
    with engine.connect() as connection:
        assert connection.execute(text("PRAGMA journal_mode")).scalar() == "wal"
        assert connection.execute(text("PRAGMA synchronous")).scalar() == 1
        assert connection.execute(text("PRAGMA foreign_keys")).scalar() == 1
    engine.dispose()
