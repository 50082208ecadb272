"""docker/postgres-init.sh, run for real against the test PostgreSQL server the way the postgres image runs it:
one role and one database per service, each role alone on its database, able to run its migrations."""
import os
import shutil
import subprocess
import uuid

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError

from conftest import POSTGRES_ADMIN_URL, ROOT
from scripts.run import SERVICES
from services.common.migrate import upgrade

pytestmark = pytest.mark.skipif(not POSTGRES_ADMIN_URL or not shutil.which("psql"),
                                reason="needs TEST_POSTGRES_URL and psql")


@pytest.fixture
def databases():
    """{service: (name, password)} for this test, the names unique on the shared server; dropped afterwards."""
    prefix = f"t{uuid.uuid4().hex[:8]}_"
    made = {service: (prefix + service, f"pw'{uuid.uuid4().hex}\"") for service in SERVICES}
    yield made
    admin = create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        for name, _ in made.values():
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            connection.execute(text(f'DROP ROLE IF EXISTS "{name}"'))
    admin.dispose()


def run_init(databases):
    url = make_url(POSTGRES_ADMIN_URL)
    env = dict(os.environ, PGHOST=url.host or "127.0.0.1", PGPORT=str(url.port or 5432),
               POSTGRES_USER=url.username, POSTGRES_DB=url.database,
               CARTMESH_DATABASES=" ".join(name for name, _ in databases.values()))
    if url.password:
        env["PGPASSWORD"] = url.password
    for name, password in databases.values():
        env[f"{name.upper()}_DB_PASSWORD"] = password
    return subprocess.run(["bash", os.path.join(ROOT, "docker", "postgres-init.sh")], env=env,
                          capture_output=True, text=True, timeout=60)


def role_url(name, password, database):
    return make_url(POSTGRES_ADMIN_URL).set(username=name, password=password, database=database)


def test_each_service_gets_its_own_database_and_role_that_can_migrate_it(databases):
    result = run_init(databases)
    assert result.returncode == 0, result.stderr
    admin = create_engine(POSTGRES_ADMIN_URL)
    with admin.connect() as connection:
        for name, _ in databases.values():
            owner, can_login, has_password = connection.execute(text(
                "SELECT pg_get_userbyid(d.datdba), r.rolcanlogin, r.rolpassword IS NOT NULL "
                "FROM pg_database d JOIN pg_authid r ON r.rolname = :name WHERE d.datname = :name"),
                {"name": name}).one()
            assert (owner, can_login, has_password) == (name, True, True)
    admin.dispose()
    for service, (name, password) in databases.items():
        url = role_url(name, password, name).render_as_string(hide_password=False)
        upgrade(service, url)  # the role may create its schema in its own database
        engine = create_engine(url)
        with engine.connect() as connection:
            assert connection.execute(text("SELECT count(*) FROM alembic_version")).scalar() == 1
        engine.dispose()


def test_a_role_cannot_connect_to_another_service_database(databases):
    assert run_init(databases).returncode == 0
    (first, first_password), (second, _) = list(databases.values())[:2]
    engine = create_engine(role_url(first, first_password, second))
    with pytest.raises(OperationalError, match="permission denied"):
        engine.connect()
    engine.dispose()


def test_a_missing_password_stops_the_init_with_its_name(databases):
    service = SERVICES[0]
    name = databases[service][0]
    databases[service] = (name, "")
    result = run_init(databases)
    assert result.returncode != 0
    assert f"{name.upper()}_DB_PASSWORD is not set" in result.stderr
