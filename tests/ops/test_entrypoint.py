"""How the containers read their secrets, run with `sh` on temporary directories: docker/entrypoint.sh (the
app containers) and the rabbitmq service's entrypoint line from docker-compose.yml."""

import os
import shutil
import subprocess
import sys
import tempfile

import pytest

from scripts.run import GATEWAY, SERVICES
from services.common.config import load_config
from tests.ops.test_compose import ROOT, load_compose

ENTRYPOINT = os.path.join(ROOT, "docker", "entrypoint.sh")
MAKE_SECRETS = os.path.join(ROOT, "docker", "make_secrets.py")
PRINT_ENV = ["env", "-0"]  # not this venv's python: the app uid may not be allowed to run it


def run_entrypoint(directory, command=PRINT_ENV, env=None, **kwargs):
    """Runs the entrypoint with CARTMESH_SECRETS_DIR=`directory` (not set at all when it is None)."""
    environ = {"PATH": os.environ["PATH"], **(env or {})}
    if directory is not None:
        environ["CARTMESH_SECRETS_DIR"] = str(directory)
    return subprocess.run(
        ["sh", ENTRYPOINT, *command], env=environ, capture_output=True, text=True, timeout=30, **kwargs
    )


def exported(result):
    assert result.returncode == 0, result.stderr
    return dict(entry.split("=", 1) for entry in result.stdout.split("\0") if entry)


def test_exports_each_file_as_a_variable_with_its_exact_content(tmp_path):
    tricky = "sp ace 'single' \"double\" $HOME `date` \\ *"
    (tmp_path / "AMQP_URI").write_text("amqp://cartmesh:pw@rabbitmq:5672/")
    (tmp_path / "JWT_SECRET").write_text(tricky)
    env = exported(run_entrypoint(tmp_path))
    assert env["AMQP_URI"] == "amqp://cartmesh:pw@rabbitmq:5672/"
    assert env["JWT_SECRET"] == tricky


def test_a_variable_set_in_the_environment_wins_and_an_empty_one_does_not(tmp_path):
    (tmp_path / "AMQP_URI").write_text("from-file")
    (tmp_path / "LOG_LEVEL").write_text("from-file")
    env = exported(run_entrypoint(tmp_path, env={"AMQP_URI": "mine", "LOG_LEVEL": ""}))
    assert (env["AMQP_URI"], env["LOG_LEVEL"]) == ("mine", "from-file")


def test_names_that_are_not_variables_are_skipped(tmp_path):
    (tmp_path / "AMQP_URI").write_text("ok")
    (tmp_path / ".AMQP_URI.new").write_text("half written")
    (tmp_path / "bad-name").write_text("x")
    (tmp_path / "1ST").write_text("x")
    (tmp_path / "SUBDIR").mkdir()
    env = exported(run_entrypoint(tmp_path))
    assert env["AMQP_URI"] == "ok"
    assert not {"bad-name", "1ST", "SUBDIR"} & set(env)


def test_without_its_secrets_the_command_never_runs(tmp_path):
    marker = tmp_path / "ran"
    command = ["touch", str(marker)]
    empty = tmp_path / "empty"
    empty.mkdir()
    for directory, message in [
        (empty, "no secrets in"),
        (tmp_path / "missing", "is not a directory"),
        ("", "is not a directory"),
    ]:
        result = run_entrypoint(directory, command)
        assert result.returncode == 1 and message in result.stderr
    assert run_entrypoint(tmp_path, []).returncode == 64
    assert not marker.exists()


def test_file_variables_give_their_variable_the_file_content(tmp_path):
    (tmp_path / "jwt").write_text("from-a-file\n")  # as Kubernetes and Docker secrets often end
    (tmp_path / "amqp").write_text("amqps://carts:pw@broker:5671/")
    env = exported(
        run_entrypoint(None, env={"JWT_SECRET_FILE": str(tmp_path / "jwt"), "AMQP_URI_FILE": str(tmp_path / "amqp")})
    )
    assert (env["JWT_SECRET"], env["AMQP_URI"]) == ("from-a-file", "amqps://carts:pw@broker:5671/")


def test_the_environment_wins_over_a_file_variable_which_wins_over_the_directory(tmp_path):
    secrets_dir = tmp_path / "dir"
    secrets_dir.mkdir()
    for name in ("AMQP_URI", "JWT_SECRET", "CARTS_DATABASE_URL"):
        (secrets_dir / name).write_text(f"{name} from the directory")
    (tmp_path / "file").write_text("from the _FILE")
    env = exported(
        run_entrypoint(
            secrets_dir,
            env={
                "AMQP_URI": "from the environment",
                "AMQP_URI_FILE": str(tmp_path / "file"),
                "JWT_SECRET_FILE": str(tmp_path / "file"),
            },
        )
    )
    assert env["AMQP_URI"] == "from the environment"
    assert env["JWT_SECRET"] == "from the _FILE"
    assert env["CARTS_DATABASE_URL"] == "CARTS_DATABASE_URL from the directory"


def test_a_file_variable_naming_no_readable_file_stops_the_container(tmp_path):
    marker = tmp_path / "ran"
    for path in (tmp_path / "missing", tmp_path):
        result = run_entrypoint(None, ["touch", str(marker)], env={"JWT_SECRET_FILE": str(path)})
        assert result.returncode == 1 and "JWT_SECRET_FILE" in result.stderr
    assert not marker.exists()


def test_without_a_secrets_directory_the_environment_alone_is_used():
    env = exported(run_entrypoint(None, env={"AMQP_URI": "amqp://a:b@c/"}))
    assert env["AMQP_URI"] == "amqp://a:b@c/" and "CARTMESH_SECRETS_DIR" not in env


def test_the_app_uid_reads_what_the_secrets_service_made_and_the_config_gets_every_value():
    """The generator as root (as compose runs it), then each app's entrypoint as uid 10001, then that
    service's own config file loaded with what was exported: the values arrive unchanged."""
    if os.geteuid() != 0:
        pytest.skip("needs root, as the secrets service runs, to hand the directories to uid 10001")
    top = tempfile.mkdtemp()
    try:
        os.chmod(top, 0o755)  # as /run/cartmesh in a container: anyone may look up their own directory
        made = subprocess.run(
            [sys.executable, MAKE_SECRETS, top],
            env={"PATH": os.environ["PATH"]},
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert made.returncode == 0, made.stderr
        for app in SERVICES + [GATEWAY]:
            env = exported(run_entrypoint(os.path.join(top, app), user=10001, group=10001))
            files = os.listdir(os.path.join(top, app))
            for name in files:
                with open(os.path.join(top, app, name)) as value_file:
                    assert env[name] == value_file.read(), (app, name)
            config = config_with(app, {name: env[name] for name in files})
            assert config["AMQP_URI"] == env["AMQP_URI"]
            if app != GATEWAY:
                assert config["DATABASE_URL"] == env[f"{app.upper()}_DATABASE_URL"]
            if "JWT_SECRET" in files:
                assert config["JWT_SECRET"] == env["JWT_SECRET"], app
        # What is not the apps' is closed to their uid too (compose does not even mount it in their containers).
        for other in ("raw", "postgres", "rabbitmq"):
            assert run_entrypoint(os.path.join(top, other), user=10001, group=10001).returncode == 1, other
    finally:
        shutil.rmtree(top)


def config_with(app, variables):
    """config/<app>.yml as nameko loads it, with exactly `variables` set of the ones it reads."""
    saved = dict(os.environ)
    try:
        for name in ("AMQP_URI", "JWT_SECRET", *(f"{s.upper()}_DATABASE_URL" for s in SERVICES)):
            os.environ.pop(name, None)
        os.environ.update(variables)
        return load_config(os.path.join(ROOT, "config", f"{app}.yml"))
    finally:
        os.environ.clear()
        os.environ.update(saved)


def rabbitmq_line(secrets_dir):
    """The rabbitmq service's `sh -c` line as the shell receives it (compose turns `$$` into `$`), reading
    from `secrets_dir` instead of /run/cartmesh/rabbitmq."""
    entrypoint = load_compose()["services"]["rabbitmq"]["entrypoint"]
    assert entrypoint[:2] == ["sh", "-c"]
    line = entrypoint[2].replace("$$", "$")
    assert "/run/cartmesh/rabbitmq/" in line
    return line.replace("/run/cartmesh/rabbitmq", str(secrets_dir))


def test_rabbitmq_gets_its_password_from_the_file_and_runs_the_image_entrypoint(tmp_path):
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    image_entrypoint = fake_bin / "docker-entrypoint.sh"  # stands in for the image's: shows what it received
    image_entrypoint.write_text('#!/bin/sh\nprintf "%s|%s|%s" "$RABBITMQ_DEFAULT_PASS" "$RABBITMQ_DEFAULT_USER" "$*"\n')
    image_entrypoint.chmod(0o755)
    secrets_dir = tmp_path / "rabbitmq"
    secrets_dir.mkdir()
    password = "p$w 'q' \"d\" `x`"
    (secrets_dir / "RABBITMQ_DEFAULT_PASS").write_text(password)
    env = {"PATH": f"{fake_bin}:{os.environ['PATH']}", "RABBITMQ_DEFAULT_USER": "cartmesh"}
    result = subprocess.run(
        ["sh", "-c", rabbitmq_line(secrets_dir)], env=env, capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"{password}|cartmesh|rabbitmq-server"
    (secrets_dir / "RABBITMQ_DEFAULT_PASS").unlink()
    result = subprocess.run(
        ["sh", "-c", rabbitmq_line(secrets_dir)], env=env, capture_output=True, text=True, timeout=30
    )
    assert result.returncode != 0 and result.stdout == "", "no broker may start without its password"
