"""docker/postgres-init.sh, run for real against the test PostgreSQL server the way the postgres image runs it:
one role and one database per service, each role alone on its database, able to run its migrations; the
passwords from the environment (Kubernetes) or from the files of the secrets volume (compose)."""

import base64
import hashlib
import hmac
import os
import shutil
import subprocess
import tempfile
import uuid

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError

from conftest import POSTGRES_ADMIN_URL, ROOT
from scripts.run import SERVICES
from services.common.migrate import upgrade

pytestmark = pytest.mark.skipif(
    not POSTGRES_ADMIN_URL or not shutil.which("psql"), reason="needs TEST_POSTGRES_URL and psql"
)


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


def run_init(databases, secrets_dir=None, in_env=True, user=None):
    """Runs the script on `databases` ({service: (name, password)}) as the postgres image would: the passwords
    in its environment when `in_env`, CARTMESH_SECRETS_DIR set when `secrets_dir` is; as uid `user` if given."""
    url = make_url(POSTGRES_ADMIN_URL)
    env = dict(
        os.environ,
        PGHOST=url.host or "127.0.0.1",
        PGPORT=str(url.port or 5432),
        POSTGRES_USER=url.username,
        POSTGRES_DB=url.database,
        CARTMESH_DATABASES=" ".join(name for name, _ in databases.values()),
    )
    if url.password:
        env["PGPASSWORD"] = url.password
    if secrets_dir:
        env["CARTMESH_SECRETS_DIR"] = secrets_dir
    for name, password in databases.values():
        env.pop(f"{name.upper()}_DB_PASSWORD", None)
        if in_env:
            env[f"{name.upper()}_DB_PASSWORD"] = password
    return subprocess.run(
        ["bash", os.path.join(ROOT, "docker", "postgres-init.sh")],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        user=user,
        group=user,
    )


def write_password_files(secrets_dir, databases, user=None):
    """Each password as the file <NAME>_DB_PASSWORD in `secrets_dir`, 0600, owned by `user` if given (as the
    secrets service writes them for the postgres container)."""
    for name, password in databases.values():
        path = os.path.join(secrets_dir, f"{name.upper()}_DB_PASSWORD")
        with open(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as password_file:
            password_file.write(password)
        if user is not None:
            os.chown(path, user, user)
    if user is not None:
        os.chown(secrets_dir, user, user)


@pytest.fixture
def secrets_dir():
    """An empty directory 0700 for password files; its parent open to any uid, as /run/cartmesh is."""
    top = tempfile.mkdtemp()
    os.chmod(top, 0o755)
    path = os.path.join(top, "postgres")
    os.mkdir(path, 0o700)
    yield path
    shutil.rmtree(top)


def role_has_password(name, password):
    """Whether role `name`'s stored verifier is that of `password` (the test server trusts every login, so
    logging in would prove nothing). SCRAM-SHA-256 as PostgreSQL stores it; md5 on older settings."""
    admin = create_engine(POSTGRES_ADMIN_URL)
    with admin.connect() as connection:
        stored = connection.execute(
            text("SELECT rolpassword FROM pg_authid WHERE rolname = :name"), {"name": name}
        ).scalar()
    admin.dispose()
    if stored.startswith("md5"):
        return stored == "md5" + hashlib.md5((password + name).encode()).hexdigest()
    method, rest = stored.split("$", 1)
    iterations_salt, keys = rest.split("$")
    iterations, salt = iterations_salt.split(":")
    stored_key, server_key = (base64.b64decode(key) for key in keys.split(":"))
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), base64.b64decode(salt), int(iterations))
    client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
    return (
        method == "SCRAM-SHA-256"
        and hashlib.sha256(client_key).digest() == stored_key
        and hmac.new(salted, b"Server Key", hashlib.sha256).digest() == server_key
    )


def role_url(name, password, database):
    return make_url(POSTGRES_ADMIN_URL).set(username=name, password=password, database=database)


def test_each_service_gets_its_own_database_and_role_that_can_migrate_it(databases):
    result = run_init(databases)
    assert result.returncode == 0, result.stderr
    check_roles_and_migrate(databases)


def test_passwords_from_the_secrets_files_read_as_the_postgres_uid(databases, secrets_dir):
    # The postgres image runs its init scripts as its postgres user (uid 999), which owns the directory.
    user = 999 if os.geteuid() == 0 else None
    write_password_files(secrets_dir, databases, user)
    result = run_init(databases, secrets_dir, in_env=False, user=user)
    assert result.returncode == 0, result.stderr
    check_roles_and_migrate(databases)


def test_a_password_in_the_environment_wins_over_its_file(databases, secrets_dir):
    write_password_files(secrets_dir, {service: (name, "from-the-file") for service, (name, _) in databases.items()})
    assert run_init(databases, secrets_dir, in_env=True).returncode == 0
    for name, password in databases.values():
        assert role_has_password(name, password) and not role_has_password(name, "from-the-file")


def check_roles_and_migrate(databases):
    admin = create_engine(POSTGRES_ADMIN_URL)
    with admin.connect() as connection:
        for name, _ in databases.values():
            owner, can_login, has_password = connection.execute(
                text(
                    "SELECT pg_get_userbyid(d.datdba), r.rolcanlogin, r.rolpassword IS NOT NULL "
                    "FROM pg_database d JOIN pg_authid r ON r.rolname = :name WHERE d.datname = :name"
                ),
                {"name": name},
            ).one()
            assert (owner, can_login, has_password) == (name, True, True)
    admin.dispose()
    for name, password in databases.values():
        assert role_has_password(name, password), name
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
    assert f"{name.upper()}_DB_PASSWORD is not set, nor a file in CARTMESH_SECRETS_DIR" in result.stderr


def test_a_missing_file_stops_the_init_with_its_name(databases, secrets_dir):
    write_password_files(secrets_dir, dict(list(databases.items())[1:]))
    result = run_init(databases, secrets_dir, in_env=False)
    assert result.returncode != 0
    assert f"{databases[SERVICES[0]][0].upper()}_DB_PASSWORD is not set" in result.stderr
