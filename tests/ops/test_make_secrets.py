"""docker/make_secrets.py, the compose service `secrets`, run for real into temporary directories: per container
exactly the values it needs, random on the first run, kept on every later one, the environment's own values
winning, owned by the uid that reads them."""

import os
import stat
import subprocess
import sys
from urllib.parse import unquote, urlsplit

from sqlalchemy.engine import make_url

from scripts.run import GATEWAY, SERVICES, database_url_variable
from tests.ops.test_compose import ROOT, load_make_secrets

make_secrets = load_make_secrets()
SCRIPT = os.path.join(ROOT, "docker", "make_secrets.py")
DB_PASSWORDS = {f"{service.upper()}_DB_PASSWORD" for service in SERVICES}
BROKER_PASSWORDS = {f"{app.upper()}_BROKER_PASSWORD" for app in SERVICES + [GATEWAY]}
EXPECTED = {
    "raw": (
        {"JWT_SECRET", "RABBITMQ_PASSWORD", "POSTGRES_PASSWORD", "GRAFANA_ADMIN_PASSWORD"}
        | DB_PASSWORDS
        | BROKER_PASSWORDS
    ),
    "postgres": {"POSTGRES_PASSWORD"} | DB_PASSWORDS,
    "rabbitmq": {"RABBITMQ_DEFAULT_PASS", "definitions.json"},
    "grafana": {"GF_SECURITY_ADMIN_PASSWORD"},
    GATEWAY: {"AMQP_URI", "JWT_SECRET", "RABBITMQ_API_URI", "REDIS_URL"},
    "accounts": {"AMQP_URI", "ACCOUNTS_DATABASE_URL", "JWT_SECRET"},
    **{service: {"AMQP_URI", database_url_variable(service)} for service in SERVICES if service != "accounts"},
}


def contents(directory):
    """{"dir/FILE": value} of every file under `directory`."""
    found = {}
    for name in sorted(os.listdir(directory)):
        for file_name in sorted(os.listdir(os.path.join(directory, name))):
            with open(os.path.join(directory, name, file_name)) as value_file:
                found[f"{name}/{file_name}"] = value_file.read()
    return found


def generate(directory, *args, env=None):
    """Runs the script as compose does (its own process, a clean environment plus `env`)."""
    environ = {"PATH": os.environ["PATH"], **(env or {})}
    return subprocess.run(
        [sys.executable, SCRIPT, *args, str(directory)], env=environ, capture_output=True, text=True, timeout=30
    )


def test_first_run_gives_each_container_exactly_what_it_needs_composed_from_the_raw_values(tmp_path):
    result = generate(tmp_path)
    assert result.returncode == 0, result.stderr
    assert {name: set(os.listdir(tmp_path / name)) for name in os.listdir(tmp_path)} == EXPECTED
    values = contents(tmp_path)
    raw = {name: values[f"raw/{name}"] for name in EXPECTED["raw"]}
    assert len(set(raw.values())) == len(raw), "every raw value is different"
    for name, value in raw.items():
        assert len(value) >= 32 and value.replace("-", "").replace("_", "").isalnum(), name
    assert values["rabbitmq/RABBITMQ_DEFAULT_PASS"] == raw["RABBITMQ_PASSWORD"]
    assert values["grafana/GF_SECURITY_ADMIN_PASSWORD"] == raw["GRAFANA_ADMIN_PASSWORD"]
    for name in EXPECTED["postgres"]:
        assert values[f"postgres/{name}"] == raw[name]
    assert values["accounts/JWT_SECRET"] == values[f"{GATEWAY}/JWT_SECRET"] == raw["JWT_SECRET"]
    for app in SERVICES + [GATEWAY]:
        amqp = urlsplit(values[f"{app}/AMQP_URI"])
        assert (amqp.username, unquote(amqp.password), amqp.hostname, amqp.port) == (
            app,
            raw[f"{app.upper()}_BROKER_PASSWORD"],
            "rabbitmq",
            5672,
        ), app
    api = urlsplit(values[f"{GATEWAY}/RABBITMQ_API_URI"])
    assert (api.scheme, api.username, unquote(api.password), api.hostname, api.port, api.path) == (
        "http",
        GATEWAY,
        raw["GATEWAY_BROKER_PASSWORD"],
        "rabbitmq",
        15672,
        "/api",
    )
    for service in SERVICES:
        url = make_url(values[f"{service}/{database_url_variable(service)}"])
        assert (url.username, url.password, url.host, url.database) == (
            service,
            raw[f"{service.upper()}_DB_PASSWORD"],
            "postgres",
            service,
        )
    assert "made (random)" in result.stdout
    assert not any(value in result.stdout + result.stderr for value in raw.values()), "a value was printed"


def test_later_runs_keep_every_value_and_two_fresh_runs_share_none(tmp_path):
    assert generate(tmp_path / "one").returncode == 0
    first = contents(tmp_path / "one")
    again = generate(tmp_path / "one")
    assert again.returncode == 0 and "nothing changed" in again.stdout
    assert contents(tmp_path / "one") == first
    assert generate(tmp_path / "two").returncode == 0
    second = contents(tmp_path / "two")
    for name in EXPECTED["raw"]:
        assert first[f"raw/{name}"] != second[f"raw/{name}"], name


def test_directories_are_0700_and_files_0600_owned_by_their_reader(tmp_path):
    assert generate(tmp_path).returncode == 0
    as_root = os.geteuid() == 0
    for name, files in EXPECTED.items():
        directory = tmp_path / name
        assert stat.S_IMODE(os.stat(directory).st_mode) == 0o700, name
        uid = {"raw": 0, "rabbitmq": 999, "postgres": 999, "grafana": 472}.get(name, 10001)
        if as_root:
            assert os.stat(directory).st_uid == uid, name
        for file_name in files:
            info = os.stat(directory / file_name)
            assert stat.S_IMODE(info.st_mode) == 0o600, f"{name}/{file_name}"
            if as_root:
                assert (info.st_uid, info.st_gid) == (uid, uid), f"{name}/{file_name}"


def test_values_from_the_environment_win_and_are_quoted_inside_urls(tmp_path):
    own = {
        "CATALOG_BROKER_PASSWORD": "my:broker@pass/word",
        "CARTS_DB_PASSWORD": "it's #1 %20 ok",
        "JWT_SECRET": "j" * 40,
        "RABBITMQ_PASSWORD": "admin's own",
    }
    assert generate(tmp_path).returncode == 0
    before = contents(tmp_path)
    result = generate(tmp_path, env=own)
    assert result.returncode == 0, result.stderr
    assert "raw/CATALOG_BROKER_PASSWORD: replaced by the value in the environment" in result.stdout
    values = contents(tmp_path)
    for name, value in own.items():
        assert values[f"raw/{name}"] == value
    assert values["rabbitmq/RABBITMQ_DEFAULT_PASS"] == own["RABBITMQ_PASSWORD"]
    assert values["postgres/CARTS_DB_PASSWORD"] == own["CARTS_DB_PASSWORD"]
    assert values[f"{GATEWAY}/JWT_SECRET"] == own["JWT_SECRET"]
    amqp = urlsplit(values["catalog/AMQP_URI"])
    assert (unquote(amqp.password), amqp.hostname) == (own["CATALOG_BROKER_PASSWORD"], "rabbitmq")
    url = make_url(values["carts/CARTS_DATABASE_URL"])
    assert (url.password, url.host, url.database) == (own["CARTS_DB_PASSWORD"], "postgres", "carts")
    assert values["raw/CATALOG_DB_PASSWORD"] == before["raw/CATALOG_DB_PASSWORD"], "the others are kept"
    # Unset again: the stored value stays (the databases were made with it).
    assert generate(tmp_path).returncode == 0
    assert contents(tmp_path) == values


def test_bad_input_stops_with_a_message_and_writes_nothing(tmp_path):
    for args, env, message in [
        ((), {"JWT_SECRET": "two\nlines"}, "JWT_SECRET: the value is blank"),
        ((), {"POSTGRES_PASSWORD": "   "}, "POSTGRES_PASSWORD: the value is blank"),
        (("--rotate", "GUEST_PASSWORD"), {}, "cannot rotate GUEST_PASSWORD"),
        (("--rotate", "JWT_SECRET"), {"JWT_SECRET": "x" * 40}, "set in the environment"),
    ]:
        target = tmp_path / "secrets"
        result = generate(target, *args, env=env)
        assert result.returncode == 2, args
        assert message in result.stderr
        assert not target.exists(), "nothing may be written"


def test_rotate_replaces_one_value_and_everything_made_from_it_only(tmp_path):
    assert generate(tmp_path).returncode == 0
    before = contents(tmp_path)
    result = generate(tmp_path, "--rotate", "CARTS_DB_PASSWORD")
    assert result.returncode == 0, result.stderr
    assert "ALTER ROLE" in result.stdout  # the operator is told what else must follow
    after = contents(tmp_path)
    changed = {name for name in before if before[name] != after[name]}
    assert changed == {"raw/CARTS_DB_PASSWORD", "postgres/CARTS_DB_PASSWORD", "carts/CARTS_DATABASE_URL"}
    assert make_url(after["carts/CARTS_DATABASE_URL"]).password == after["raw/CARTS_DB_PASSWORD"]


def test_a_rotated_jwt_secret_verifies_at_the_gateway_until_dropped(tmp_path):
    assert generate(tmp_path).returncode == 0
    first = contents(tmp_path)["raw/JWT_SECRET"]
    result = generate(tmp_path, "--rotate", "JWT_SECRET")
    assert result.returncode == 0, result.stderr
    assert "raw/JWT_PREVIOUS_SECRETS: keeps the replaced JWT_SECRET" in result.stdout
    values = contents(tmp_path)
    second = values["raw/JWT_SECRET"]
    assert second != first
    assert values[f"{GATEWAY}/JWT_PREVIOUS_SECRETS"] == values["raw/JWT_PREVIOUS_SECRETS"] == first
    assert "accounts/JWT_PREVIOUS_SECRETS" not in values  # accounts only signs, with the current key
    assert values["accounts/JWT_SECRET"] == values[f"{GATEWAY}/JWT_SECRET"] == second
    # A second rotation keeps both retired keys, newest first; a value from the environment counts too.
    assert generate(tmp_path, "--rotate", "JWT_SECRET").returncode == 0
    third = contents(tmp_path)["raw/JWT_SECRET"]
    assert contents(tmp_path)[f"{GATEWAY}/JWT_PREVIOUS_SECRETS"] == f"{second},{first}"
    assert generate(tmp_path, env={"JWT_SECRET": "e" * 43}).returncode == 0
    assert contents(tmp_path)[f"{GATEWAY}/JWT_PREVIOUS_SECRETS"] == f"{third},{second},{first}"
    assert generate(tmp_path, env={"JWT_SECRET": "e" * 43}).returncode == 0  # unchanged: nothing added
    assert contents(tmp_path)[f"{GATEWAY}/JWT_PREVIOUS_SECRETS"] == f"{third},{second},{first}"

    result = generate(tmp_path, "--drop-previous-jwt")
    assert result.returncode == 0 and "raw/JWT_PREVIOUS_SECRETS: removed" in result.stdout
    values = contents(tmp_path)
    assert not {"raw/JWT_PREVIOUS_SECRETS", f"{GATEWAY}/JWT_PREVIOUS_SECRETS"} & set(values)
    assert values["raw/JWT_SECRET"] == "e" * 43
    assert not any(value in result.stdout for value in (first, second, third)), "a value was printed"


def test_files_that_are_no_container_s_business_are_removed(tmp_path):
    assert generate(tmp_path).returncode == 0
    (tmp_path / "catalog" / "JWT_SECRET").write_text("stale")
    (tmp_path / "gateway" / ".AMQP_URI.new").write_text("half")
    result = generate(tmp_path)
    assert "catalog/JWT_SECRET: removed" in result.stdout
    assert set(os.listdir(tmp_path / "catalog")) == EXPECTED["catalog"]
    assert set(os.listdir(tmp_path / "gateway")) == EXPECTED[GATEWAY]


def test_a_stored_value_with_the_wrong_owner_or_mode_is_put_right(tmp_path):
    assert generate(tmp_path).returncode == 0
    path = tmp_path / "accounts" / "JWT_SECRET"
    os.chmod(path, 0o644)
    if os.geteuid() == 0:
        os.chown(path, 0, 0)
    assert generate(tmp_path).returncode == 0
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    if os.geteuid() == 0:
        assert os.stat(path).st_uid == 10001


def test_layout_and_raw_names_are_the_expected_tree():
    layout = make_secrets.layout({name: "x" for name in make_secrets.raw_names()})
    assert {name: set(files) for name, files in layout.items()} == {
        name: files for name, files in EXPECTED.items() if name != "raw"
    }
    assert set(make_secrets.raw_names()) == EXPECTED["raw"]
