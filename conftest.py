"""Test fixtures shared by every suite. Monkey patching comes first: nameko's plugin no longer does it, and
tests that open real sockets to a container in the same process hang without it."""

import eventlet

eventlet.monkey_patch()  # noqa: E402 -- must precede every other import

import os  # noqa: E402
import uuid  # noqa: E402

import pytest  # noqa: E402
from sqlalchemy import create_engine, text  # noqa: E402
from sqlalchemy.engine import make_url  # noqa: E402
from sqlalchemy.pool import NullPool  # noqa: E402

from services.common.config import load_config  # noqa: E402
from services.common.migrate import upgrade  # noqa: E402

ROOT = os.path.dirname(os.path.abspath(__file__))
# An administrative URL of a PostgreSQL server; when set, data tests also run against PostgreSQL.
POSTGRES_ADMIN_URL = os.environ.get("TEST_POSTGRES_URL")


def create_postgres_database():
    """A new empty database on the test PostgreSQL server; returns (url, drop). No connection stays open."""
    name = f"cartmesh_test_{uuid.uuid4().hex[:12]}"
    _admin_execute(f'CREATE DATABASE "{name}"')

    def drop():
        _admin_execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    url = make_url(POSTGRES_ADMIN_URL).set(database=name)
    return url.render_as_string(hide_password=False), drop


def _admin_execute(statement):
    admin = create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT", poolclass=NullPool)
    with admin.connect() as connection:
        connection.execute(text(statement))
    admin.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def db_backend(request):
    """Each data test runs on SQLite, and on PostgreSQL when TEST_POSTGRES_URL is set (CI sets it)."""
    if request.param == "postgresql" and not POSTGRES_ADMIN_URL:
        pytest.skip("TEST_POSTGRES_URL is not set: PostgreSQL variant not run")
    return request.param


@pytest.fixture(scope="session")
def postgres_drops():
    """Test databases on PostgreSQL are dropped when the session ends: nameko's fixtures stop containers after
    a test's own fixtures are torn down, and a container's timers and relays may still query until then."""
    drops = []
    yield drops
    for drop in drops:
        drop()


@pytest.fixture
def bare_database(db_backend, tmp_path, postgres_drops):
    """Factory: `bare_database(name)` → URL of a new, empty database of the test's backend."""

    def make(name):
        if db_backend == "sqlite":
            return f"sqlite:///{tmp_path / f'{name}-{uuid.uuid4().hex[:8]}.db'}"
        url, drop = create_postgres_database()
        postgres_drops.append(drop)
        return url

    return make


@pytest.fixture
def fresh_database(bare_database):
    """Factory: `fresh_database(service)` → URL of a new database migrated to that service's newest schema."""

    def make(service):
        url = bare_database(service)
        upgrade(service, url)
        return url

    return make


@pytest.fixture
def service_config(rabbit_config):
    """Factory: `service_config(name, **overrides)` → the service's real config file with the test's vhost."""

    def make(name, **overrides):
        config = load_config(os.path.join(ROOT, "config", f"{name}.yml"))
        config.pop("LOGGING", None)
        config["AMQP_URI"] = rabbit_config["AMQP_URI"]
        config.update(overrides)
        return config

    return make
