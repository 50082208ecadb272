"""docker/make_env.py: the .env that `docker compose up` needs, with random secrets, never overwritten."""
import os
import stat

from tests.ops.test_compose import load_make_env

make_env = load_make_env()


def parse(path):
    values = {}
    for line in path.read_text().splitlines():
        if line and not line.startswith("#"):
            name, value = line.split("=", 1)
            values[name] = value
    return values


def test_writes_every_variable_with_fresh_url_safe_values_readable_by_the_owner_only(tmp_path):
    path = tmp_path / ".env"
    added = make_env.make_env(str(path))
    values = parse(path)
    assert set(added) == set(values) == {name for name, _, _ in make_env.variables()}
    assert {"JWT_SECRET", "ACCOUNTS_DB_PASSWORD", "CATALOG_DB_PASSWORD", "CARTS_DB_PASSWORD"} <= set(values)
    secrets_only = {name: value for name, value in values.items() if name != "ADMIN_EMAIL"}
    assert len(set(secrets_only.values())) == len(secrets_only), "every secret is different"
    for name, value in secrets_only.items():
        assert len(value) >= 16 and value.replace("-", "").replace("_", "").isalnum(), name
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    other = tmp_path / "other.env"
    make_env.make_env(str(other))
    assert parse(other)["JWT_SECRET"] != values["JWT_SECRET"]


def test_keeps_what_is_there_and_adds_only_what_is_missing(tmp_path):
    path = tmp_path / ".env"
    path.write_text("# mine\nJWT_SECRET=keep-me\nLOG_LEVEL=DEBUG")
    added = make_env.make_env(str(path))
    values = parse(path)
    assert "JWT_SECRET" not in added and values["JWT_SECRET"] == "keep-me"
    assert values["LOG_LEVEL"] == "DEBUG" and path.read_text().startswith("# mine\n")
    assert "CARTS_DB_PASSWORD" in added
    before = path.read_text()
    assert make_env.make_env(str(path)) == []
    assert path.read_text() == before
