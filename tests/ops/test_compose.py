"""docker-compose.yml, the Dockerfile and .dockerignore, checked without a Docker engine (none runs here):
parsed, compared with the services in the repo and with the commands `make run` uses, and validated by the
`docker compose` client when one is installed."""
import importlib.util
import os
import re
import shlex
import shutil
import subprocess

import pytest
import yaml
from nameko.cli.run import import_service
from sqlalchemy.engine import make_url

from scripts import run

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
COMPOSE_FILE = os.path.join(ROOT, "docker-compose.yml")
INFRASTRUCTURE = {"rabbitmq", "postgres"}


def load_make_env():
    """docker/make_env.py as a module (docker/ is no package: `import docker` would find docker-py)."""
    spec = importlib.util.spec_from_file_location("make_env", os.path.join(ROOT, "docker", "make_env.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def env_variables():
    return load_make_env().variables()


def read(name):
    with open(os.path.join(ROOT, name)) as source:
        return source.read()


def service_dirs():
    """Every service in the repo: each folder of services/ with a service.py."""
    folder = os.path.join(ROOT, "services")
    return sorted(name for name in os.listdir(folder)
                  if os.path.isfile(os.path.join(folder, name, "service.py")))


@pytest.fixture(scope="module")
def compose():
    return yaml.safe_load(read("docker-compose.yml"))["services"]


@pytest.fixture(scope="module")
def apps(compose):
    return {name: spec for name, spec in compose.items() if name not in INFRASTRUCTURE}


def command_line(spec):
    """The container's command as one shell line (compose allows a list or a string)."""
    command = spec["command"]
    if isinstance(command, list):
        if command[:2] == ["sh", "-c"]:
            return command[2]
        return shlex.join(command)
    return command


def test_the_run_list_and_compose_name_every_service_in_the_repo(apps):
    assert service_dirs(), "no services/<name>/service.py found"
    assert sorted(run.SERVICES) == service_dirs()
    assert set(apps) == set(run.SERVICES) | {run.GATEWAY}


def test_app_commands_are_the_commands_make_run_uses(apps):
    for service in run.SERVICES:
        expected = (f"{shlex.join(run.migrate_command(service))} && exec "
                    f"{shlex.join(run.service_command(service))}")
        assert command_line(apps[service]) == expected, service
    assert command_line(apps[run.GATEWAY]) == shlex.join(run.gateway_command())


def test_every_command_names_a_config_file_and_module_that_exist(apps):
    for name, spec in apps.items():
        words = shlex.split(command_line(spec).split("&&")[-1])
        assert words[:3] == ["exec", "nameko", "run"] or words[:2] == ["nameko", "run"], name
        assert "--backdoor-port" not in words, name
        config = words[words.index("--config") + 1]
        assert os.path.isfile(os.path.join(ROOT, config)), config
        # What `nameko run <module>` will run: exactly one service class, of this name (an imported class
        # with entrypoints, e.g. a mixin, would be taken for a second service and stop the process).
        found = import_service(words[-1])
        assert [service_cls.name for service_cls in found] == [name], words[-1]
    for service in run.SERVICES:
        assert os.path.isfile(os.path.join(ROOT, "services", service, "migrations", "env.py")), service


def test_no_fixed_names_and_only_the_gateway_publishes_a_port(compose):
    for name, spec in compose.items():
        assert "container_name" not in spec, name
        if name != run.GATEWAY:
            assert "ports" not in spec, name
    (port,) = compose[run.GATEWAY]["ports"]
    assert str(port).rsplit(":", 1)[1] == "8000"


def test_start_order_waits_for_healthy_dependencies(compose, apps):
    for name, spec in compose.items():
        for dependency, condition in (spec.get("depends_on") or {}).items():
            assert condition == {"condition": "service_healthy"}, (name, dependency)
            assert "healthcheck" in compose[dependency], dependency
    for service in run.SERVICES:
        assert {"rabbitmq", "postgres"} <= set(apps[service]["depends_on"]), service
    assert set(run.SERVICES) | {"rabbitmq"} <= set(apps[run.GATEWAY]["depends_on"])
    assert compose["rabbitmq"]["healthcheck"]["test"] == ["CMD", "rabbitmq-diagnostics", "-q", "ping"]
    assert "pg_isready" in compose["postgres"]["healthcheck"]["test"]


def test_every_app_container_checks_its_own_service(apps):
    for name, spec in apps.items():
        assert spec["healthcheck"]["test"] == ["CMD", "python", "-m", "scripts.healthcheck", name]


def test_each_service_uses_its_own_postgres_database_and_role(compose, apps):
    postgres_env = compose["postgres"]["environment"]
    assert postgres_env["CARTMESH_DATABASES"].split() == run.SERVICES
    for service in run.SERVICES:
        assert f"{service.upper()}_DB_PASSWORD" in postgres_env
        env = apps[service]["environment"]
        database_urls = {key for key in env if key.endswith("_DATABASE_URL")}
        assert database_urls == {run.database_url_variable(service)}, service
        url = make_url(env[run.database_url_variable(service)])
        assert (url.get_backend_name(), url.host, url.username, url.database) == \
            ("postgresql", "postgres", service, service)
        assert f"{service.upper()}_DB_PASSWORD" in url.password
    assert not any(key.endswith("_DATABASE_URL") for key in apps[run.GATEWAY]["environment"])
    mounts = compose["postgres"]["volumes"]
    assert any(mount.startswith("./docker/postgres-init.sh:/docker-entrypoint-initdb.d/") for mount in mounts)


def test_secrets_have_no_defaults_and_make_env_provides_every_one():
    text = read("docker-compose.yml")
    references = re.findall(r"\$\{([A-Z0-9_]+)(:?[-?])?([^}]*)\}", text)
    required = {name for name, operator, _ in references if operator == ":?"}
    for name, operator, _ in references:
        if re.search(r"PASSWORD|SECRET", name) and name != "ADMIN_PASSWORD":
            assert operator == ":?", f"{name} must be required, not defaulted"
    assert {"JWT_SECRET", "RABBITMQ_PASSWORD", "POSTGRES_PASSWORD"} <= required
    assert required <= {name for name, _, _ in env_variables()}
    # Nothing that looks like a literal credential.
    assert "guest" not in text


def test_jwt_secret_reaches_accounts_and_gateway_only(apps):
    holders = {name for name, spec in apps.items() if "JWT_SECRET" in spec["environment"]}
    assert holders == {"accounts", run.GATEWAY}


def test_dockerfile_builds_a_slim_image_that_runs_as_non_root():
    lines = [line.strip() for line in read("Dockerfile").splitlines() if line.strip()
             and not line.lstrip().startswith("#")]
    assert lines[0] == "FROM python:3.11-slim"
    users = [line.split()[1] for line in lines if line.startswith("USER ")]
    assert users, "no USER instruction"
    assert users[-1].split(":")[0] not in ("root", "0")
    text = "\n".join(lines)
    assert "pip install -r requirements.txt" in text
    assert "requirements-dev" not in text
    assert "PYTHONUNBUFFERED=1" in text
    assert "backdoor" not in text


def test_dockerignore_lets_in_only_what_runs():
    entries = [line.strip() for line in read(".dockerignore").splitlines()
               if line.strip() and not line.startswith("#")]
    assert entries[0] == "*"
    allowed = {entry[1:].rstrip("/") for entry in entries if entry.startswith("!")}
    assert {"requirements.txt", "config", "services", "gateway_http", "scripts"} <= allowed
    assert not allowed & {".env", ".venv", "var", ".git", "tests"}


def compose_client():
    """The argv prefix of a working compose client (`docker compose` or `docker-compose`), or None."""
    for prefix in (["docker", "compose"], ["docker-compose"]):
        if shutil.which(prefix[0]) and subprocess.run(prefix + ["version"], capture_output=True).returncode == 0:
            return prefix
    return None


@pytest.fixture
def compose_env(tmp_path):
    """A clean environment with every required variable set, and an empty env file (never the user's .env)."""
    env_file = tmp_path / "empty.env"
    env_file.write_text("")
    env = {key: value for key, value in os.environ.items() if key not in {n for n, _, _ in env_variables()}}
    env.update({name: f"test-{name.lower()}" for name, _, _ in env_variables()})
    return env, str(env_file)


def test_compose_client_accepts_the_file_and_refuses_a_missing_secret(compose_env):
    client = compose_client()
    if client is None:
        pytest.skip("no docker compose client installed: file checked by the parser tests only")
    env, env_file = compose_env
    base = client + ["--project-directory", ROOT, "-f", COMPOSE_FILE, "--env-file", env_file, "config"]
    result = subprocess.run(base + ["-q"], env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    del env["JWT_SECRET"]
    result = subprocess.run(base + ["-q"], env=env, capture_output=True, text=True)
    assert result.returncode != 0
    assert "JWT_SECRET" in result.stderr
