"""docker-compose.yml, the Dockerfile and .dockerignore, checked without a Docker engine (none runs here):
parsed, compared with the services in the repo, with the commands `make run` uses and with the secrets that
docker/make_secrets.py makes, and validated by the `docker compose` client when one is installed. What the
containers do with the secrets is run for real in test_make_secrets.py and test_entrypoint.py."""

import base64
import fnmatch
import hashlib
import importlib.util
import json
import os
import re
import shlex
import shutil
import subprocess
from urllib.parse import urlsplit

import pytest
import yaml
from nameko.cli.run import import_service
from sqlalchemy.engine import make_url

from scripts import run

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
COMPOSE_FILE = os.path.join(ROOT, "docker-compose.yml")
INFRASTRUCTURE = {"rabbitmq", "postgres", "secrets", "redis"}
MONITORING = {"prometheus", "grafana", "jaeger"}  # tests/ops/test_monitoring.py checks them further
# The only host ports: container port of each service that publishes one, always on loopback.
PUBLISHED = {"gateway": 8000, "grafana": 3000, "jaeger": 16686}
SECRETS_ROOT = "/run/cartmesh"
ENTRYPOINT = "/app/docker/entrypoint.sh"


def load_make_secrets():
    """docker/make_secrets.py as a module (docker/ is no package: `import docker` would find docker-py)."""
    spec = importlib.util.spec_from_file_location("make_secrets", os.path.join(ROOT, "docker", "make_secrets.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


make_secrets = load_make_secrets()


class ComposeLoader(yaml.SafeLoader):
    """YAML read as compose reads it: nameko (imported by the tests) teaches SafeLoader to substitute `${VAR}`
    itself, which would hide what the file says."""


ComposeLoader.yaml_implicit_resolvers = {
    first: [(tag, pattern) for tag, pattern in resolvers if tag != "!env_var"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def load_compose():
    """docker-compose.yml as a mapping, `${VAR}` references left as written."""
    return yaml.load(read("docker-compose.yml"), Loader=ComposeLoader)


def read(name):
    with open(os.path.join(ROOT, name)) as source:
        return source.read()


def service_dirs():
    """Every service in the repo: each folder of services/ with a service.py."""
    folder = os.path.join(ROOT, "services")
    return sorted(name for name in os.listdir(folder) if os.path.isfile(os.path.join(folder, name, "service.py")))


@pytest.fixture(scope="module")
def compose():
    return load_compose()["services"]


@pytest.fixture(scope="module")
def apps(compose):
    return {name: spec for name, spec in compose.items() if name not in INFRASTRUCTURE | MONITORING}


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
        expected = f"{shlex.join(run.migrate_command(service))} && exec {shlex.join(run.service_command(service))}"
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


def test_no_fixed_names_and_only_the_gateway_grafana_and_jaeger_ui_publish_a_port_on_loopback(compose):
    for name, spec in compose.items():
        assert "container_name" not in spec, name
        if name not in PUBLISHED:
            assert "ports" not in spec, name
    for name, container_port in PUBLISHED.items():
        (port,) = compose[name]["ports"]
        # "127.0.0.1:${GATEWAY_PORT:-8000}:8000": the host port may be a variable, the address may not
        assert str(port).startswith("127.0.0.1:"), name
        assert str(port).rsplit(":", 1)[1] == str(container_port), name


def test_start_order_waits_for_the_secrets_then_for_healthy_dependencies(compose, apps):
    for name, spec in compose.items():
        for dependency, condition in (spec.get("depends_on") or {}).items():
            if dependency == "secrets":
                assert condition == {"condition": "service_completed_successfully"}, name
            else:
                assert condition == {"condition": "service_healthy"}, (name, dependency)
                assert "healthcheck" in compose[dependency], dependency
    for name in set(compose) - {"secrets"}:
        if secrets_mounts(compose[name]):
            assert "secrets" in compose[name]["depends_on"], f"{name} could start before its secrets exist"
    for service in run.SERVICES:
        assert {"rabbitmq", "postgres"} <= set(apps[service]["depends_on"]), service
    assert set(run.SERVICES) | {"rabbitmq"} <= set(apps[run.GATEWAY]["depends_on"])
    assert compose["rabbitmq"]["healthcheck"]["test"] == ["CMD", "rabbitmq-diagnostics", "-q", "ping"]
    assert "pg_isready" in compose["postgres"]["healthcheck"]["test"]


def test_the_secrets_service_runs_the_generator_once_as_root(compose):
    spec = compose["secrets"]
    assert spec["entrypoint"] == ["python", "docker/make_secrets.py"]
    assert "command" not in spec  # so `docker compose run --rm secrets --rotate NAME` passes the option
    assert spec["restart"] == "no" and spec["user"] == "0:0"  # root: to hand each directory to its reader
    assert spec["image"] == compose[run.GATEWAY]["image"] and spec["build"] == compose[run.GATEWAY]["build"]
    assert "depends_on" not in spec and "ports" not in spec and "healthcheck" not in spec


def secrets_mounts(spec):
    """{volume: (path, read_only)} of the container's volumes named secrets-*."""
    found = {}
    for mount in spec.get("volumes", []):
        volume, path, *mode = mount.split(":")
        if volume.startswith("secrets-"):
            found[volume] = (path, mode == ["ro"])
    return found


def test_each_container_mounts_only_its_own_secrets_read_only(compose):
    directories = set(make_secrets.layout(dummy_raw())) | {make_secrets.RAW}
    # The generator sees every directory, writable, at its place under /run/cartmesh.
    assert secrets_mounts(compose["secrets"]) == {
        f"secrets-{name}": (f"{SECRETS_ROOT}/{name}", False) for name in directories
    }
    # Every other container: its own directory, read-only, and nothing else (raw/ is the generator's alone);
    # prometheus and jaeger need no secret and mount none.
    readers = {name for name in compose if name != "secrets" and secrets_mounts(compose[name])}
    assert readers == directories - {make_secrets.RAW}
    assert set(compose) - readers == {"secrets", "prometheus", "jaeger", "redis"}
    for name in readers:
        assert secrets_mounts(compose[name]) == {f"secrets-{name}": (f"{SECRETS_ROOT}/{name}", True)}, name
    volumes = load_compose()["volumes"]
    assert set(volumes) == (
        {"postgres-data", "prometheus-data", "grafana-data"} | {f"secrets-{name}" for name in directories}
    )


def test_app_containers_export_their_secrets_through_the_entrypoint(apps):
    assert os.path.isfile(os.path.join(ROOT, "docker", "entrypoint.sh"))
    for name, spec in apps.items():
        assert spec["entrypoint"] == ["sh", ENTRYPOINT], name
        assert spec["environment"]["CARTMESH_SECRETS_DIR"] == f"{SECRETS_ROOT}/{name}", name


def test_every_app_container_checks_its_own_service_with_its_secrets(apps):
    # A healthcheck runs like `docker exec`, outside the entrypoint: it must go through it to find the broker.
    for name, spec in apps.items():
        assert spec["healthcheck"]["test"] == ["CMD", "sh", ENTRYPOINT, "python", "-m", "scripts.healthcheck", name]


def dummy_raw():
    return {name: f"raw-{name.lower()}" for name in make_secrets.raw_names()}


def test_each_service_uses_its_own_postgres_database_and_role(compose, apps):
    postgres = compose["postgres"]
    postgres_env = postgres["environment"]
    assert postgres_env["CARTMESH_DATABASES"].split() == run.SERVICES
    assert postgres_env["CARTMESH_SECRETS_DIR"] == f"{SECRETS_ROOT}/postgres"
    assert postgres_env["POSTGRES_PASSWORD_FILE"] == f"{SECRETS_ROOT}/postgres/POSTGRES_PASSWORD"
    assert any(
        mount.startswith("./docker/postgres-init.sh:/docker-entrypoint-initdb.d/") for mount in postgres["volumes"]
    )
    raw = dummy_raw()
    layout = make_secrets.layout(raw)
    assert set(layout["postgres"]) == {"POSTGRES_PASSWORD"} | {f"{s.upper()}_DB_PASSWORD" for s in run.SERVICES}
    assert make_secrets.DATABASE_HOST == "postgres" and make_secrets.DATABASE_HOST in compose
    for service in run.SERVICES:
        database_urls = {key for key in layout[service] if key.endswith("_DATABASE_URL")}
        assert database_urls == {run.database_url_variable(service)}, service
        url = make_url(layout[service][run.database_url_variable(service)])
        assert (url.get_backend_name(), url.host, url.username, url.database, url.password) == (
            "postgresql",
            "postgres",
            service,
            service,
            layout["postgres"][f"{service.upper()}_DB_PASSWORD"],
        )
    assert not any(key.endswith("_DATABASE_URL") for key in layout[run.GATEWAY])


def test_every_app_reaches_the_broker_as_its_own_user_that_the_broker_loads(compose):
    rabbitmq = compose["rabbitmq"]
    assert rabbitmq["environment"] == {"RABBITMQ_DEFAULT_USER": make_secrets.BROKER_USER}
    assert make_secrets.BROKER_HOST == "rabbitmq" and rabbitmq["hostname"] == "rabbitmq"
    raw = dummy_raw()
    layout = make_secrets.layout(raw)
    definitions = json.loads(layout["rabbitmq"][make_secrets.DEFINITIONS])
    users = {user["name"]: user for user in definitions["users"]}
    assert set(users) == set(run.SERVICES) | {run.GATEWAY, make_secrets.BROKER_USER}
    assert users[make_secrets.BROKER_USER]["tags"] == ["administrator"]
    for app in run.SERVICES + [run.GATEWAY]:
        uri = urlsplit(layout[app]["AMQP_URI"])
        password = raw[make_secrets.broker_password_variable(app)]
        assert (uri.scheme, uri.username, uri.password, uri.hostname) == ("amqp", app, password, "rabbitmq"), app
        # The hash RabbitMQ checks (rabbit_password_hashing_sha256): base64(salt + sha256(salt + password)).
        packed = base64.b64decode(users[app]["password_hash"])
        assert packed[4:] == hashlib.sha256(packed[:4] + password.encode()).digest(), app
        assert users[app]["tags"] == (["management"] if app == run.GATEWAY else []), app
        (grant,) = [grant for grant in definitions["permissions"] if grant["user"] == app]
        assert grant["vhost"] == "/" and ".*" not in grant.values(), app
    assert layout["rabbitmq"][make_secrets.DEFINITIONS].count('"password_hash"') == len(users)
    assert not any(value in layout["rabbitmq"][make_secrets.DEFINITIONS] for value in raw.values())
    # The broker loads the definitions at boot from the file the secrets service wrote.
    assert "./docker/rabbitmq.conf:/etc/rabbitmq/conf.d/20-cartmesh.conf:ro" in rabbitmq["volumes"]
    conf = dict(
        line.split(" = ", 1) for line in read("docker/rabbitmq.conf").splitlines() if line and not line.startswith("#")
    )
    assert conf == {"load_definitions": f"{SECRETS_ROOT}/rabbitmq/{make_secrets.DEFINITIONS}"}
    # The password comes from its file, read before the image's own entrypoint (test_entrypoint.py runs this line).
    entrypoint = rabbitmq["entrypoint"]
    assert entrypoint[:2] == ["sh", "-c"]
    assert f"$$(cat {SECRETS_ROOT}/rabbitmq/RABBITMQ_DEFAULT_PASS)" in entrypoint[2]
    assert entrypoint[2].endswith("exec docker-entrypoint.sh rabbitmq-server")


def test_app_containers_run_read_only_without_capabilities(compose, apps):
    for name, spec in apps.items():
        assert spec["read_only"] is True, name
        assert spec["tmpfs"] == ["/tmp:size=16m,mode=1777"], name
        assert spec["cap_drop"] == ["ALL"] and spec["security_opt"] == ["no-new-privileges:true"], name
        assert "user" not in spec, f"{name} must run as the image's user"
    assert compose["secrets"]["read_only"] is True


def is_secret(name):
    """Whether the variable `name` holds a secret (a path to one, *_FILE or *_DIR, is no secret)."""
    return bool(re.search(r"PASSWORD|SECRET|_URI$|_URL$", name)) and not name.endswith(("_FILE", "_DIR"))


def test_secrets_have_no_value_in_the_file_and_only_the_generator_takes_them_from_the_environment(compose):
    text = read("docker-compose.yml")
    for name, operator, default in re.findall(r"\$\{([A-Z0-9_]+)(:?[-?])?([^}]*)\}", text):
        if is_secret(name):
            assert (operator, default) == (":-", ""), f"${{{name}}} must be passed through empty when unset"
    holders = {}
    for service, spec in compose.items():
        for key, value in (spec.get("environment") or {}).items():
            if is_secret(key):
                holders.setdefault(service, set()).add(key)
                assert value == f"${{{key}:-}}", f"{service}: {key} must come from the environment or nowhere"
    assert holders == {"secrets": set(make_secrets.raw_names()), "accounts": {"ADMIN_PASSWORD"}}
    assert set(compose["accounts"]["environment"]) >= {"ADMIN_EMAIL", "ADMIN_PASSWORD"}  # no admin by default
    assert "guest" not in text


def test_jwt_secret_reaches_accounts_and_gateway_only(apps):
    holders = {name for name, files in make_secrets.layout(dummy_raw()).items() if "JWT_SECRET" in files}
    assert holders == {"accounts", run.GATEWAY}
    assert set(make_secrets.layout(dummy_raw())) >= set(apps)


def test_dockerfile_builds_a_slim_image_that_runs_as_non_root():
    lines = [
        line.strip() for line in read("Dockerfile").splitlines() if line.strip() and not line.lstrip().startswith("#")
    ]
    assert lines[0] == "FROM python:3.11-slim"
    users = [line.split()[1] for line in lines if line.startswith("USER ")]
    assert users, "no USER instruction"
    assert users[-1].split(":")[0] not in ("root", "0")
    assert users[-1] == f"{make_secrets.APP_UID}:{make_secrets.APP_UID}"  # the owner of the app directories
    text = "\n".join(lines)
    assert "pip install -r requirements.txt" in text
    assert "requirements-dev" not in text
    assert "PYTHONUNBUFFERED=1" in text
    assert "backdoor" not in text
    assert not re.search(r"PASSWORD|SECRET", text)


def test_dockerignore_lets_in_only_what_runs():
    entries = [line.strip() for line in read(".dockerignore").splitlines() if line.strip() and not line.startswith("#")]
    assert entries[0] == "*"
    allowed = {entry[1:].rstrip("/") for entry in entries if entry.startswith("!")}
    assert {
        "requirements.txt",
        "config",
        "services",
        "gateway_http",
        "scripts",
        "docker/make_secrets.py",
        "docker/entrypoint.sh",
        "docker/broker_permissions.py",
    } <= allowed
    assert not allowed & {".env", ".venv", "var", ".git", "tests", "docker"}


def test_the_image_gets_the_storefronts_templates_and_static_files():
    """Every file the pages load at run time is in an allowed folder and matches none of the excluded patterns."""
    entries = [line.strip() for line in read(".dockerignore").splitlines() if line.strip() and not line.startswith("#")]
    allowed = [entry[1:].rstrip("/") for entry in entries if entry.startswith("!")]
    excluded = [entry.removeprefix("**/") for entry in entries if not entry.startswith("!") and entry != "*"]
    folder = os.path.join(ROOT, "gateway_http", "storefront")
    files = [
        os.path.relpath(os.path.join(top, name), ROOT)
        for part in ("templates", "static")
        for top, _dirs, names in os.walk(os.path.join(folder, part))
        for name in names
    ]
    assert any(name.endswith(".html") for name in files) and any(name.endswith(".js") for name in files)
    for name in files:
        assert any(name == entry or name.startswith(entry + "/") for entry in allowed), name
        assert not any(fnmatch.fnmatch(part, pattern) for part in name.split("/") for pattern in excluded), name


def compose_client():
    """The argv prefix of a working compose client (`docker compose` or `docker-compose`), or None."""
    for prefix in (["docker", "compose"], ["docker-compose"]):
        if shutil.which(prefix[0]) and subprocess.run(prefix + ["version"], capture_output=True).returncode == 0:
            return prefix
    return None


def test_compose_client_accepts_the_file_with_no_env_file_and_no_secret_set(tmp_path):
    client = compose_client()
    if client is None:
        pytest.skip("no docker compose client installed: file checked by the parser tests only")
    # A newcomer's machine: no .env (an empty one stands in for the repo's, which may exist here), nothing set.
    env_file = tmp_path / "empty.env"
    env_file.write_text("")
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in make_secrets.raw_names() and not key.startswith(("ADMIN_", "COMPOSE_"))
    }
    base = client + ["--project-directory", ROOT, "-f", COMPOSE_FILE, "--env-file", str(env_file), "config"]
    result = subprocess.run(base + ["-q"], env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    result = subprocess.run(base, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    resolved = yaml.load(result.stdout, Loader=ComposeLoader)["services"]
    assert resolved["secrets"]["environment"] == {name: "" for name in make_secrets.raw_names()}
    assert resolved["accounts"]["depends_on"]["secrets"] == {"condition": "service_completed_successfully"}


# Settings whose empty default means "not used" in containers as anywhere: retired token keys
# (given by the secrets service only while there are any), no cross-origin callers and no trusted proxies
# (the strict choices), and the pages' CSRF key, which is derived from JWT_SECRET unless one is given.
OFF_BY_DEFAULT = {"JWT_PREVIOUS_SECRETS", "CORS_ORIGINS", "TRUSTED_PROXIES", "SESSION_SECRET"}
CONFIG_VARIABLE = re.compile(r"\$\{([A-Z][A-Z0-9_]*)(?::([^}]*))?\}")


def test_every_setting_whose_default_is_wrong_in_a_container_is_given(apps):
    """A config/*.yml default that is empty or local (localhost, SQLite) must come from the compose file or from
    the container's secrets: e.g. RABBITMQ_API_URI, whose default is the local broker's management API."""
    layout = make_secrets.layout(dummy_raw())
    checked = 0
    for name, spec in apps.items():
        given = set(spec.get("environment") or {}) | set(layout[name])
        for variable, default in CONFIG_VARIABLE.findall(read(f"config/{name}.yml")):
            if variable in OFF_BY_DEFAULT:
                continue
            if not default or "localhost" in default or default.startswith("sqlite"):
                assert variable in given, f"{name} leaves {variable} at its default {default!r}"
                checked += 1
    assert checked >= 8
