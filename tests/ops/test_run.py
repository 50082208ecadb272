"""`make run` (scripts/run.py), `make seed` (scripts/seed.py) and the containers' healthcheck, run for real as
child processes: every service and the gateway on a fresh RabbitMQ vhost, a free port and fresh databases."""

import os
import re
import signal
import socket
import subprocess
import sys
import time
import uuid

import pytest
import requests
from nameko.testing.utils import find_free_port

from conftest import ROOT, create_postgres_database
from scripts import run
from tests.waiting import wait_until

ADMIN_EMAIL = "seed-admin@example.com"
START_DEADLINE = 90  # seconds for migrations and every process to come up (two slow cores)
STOP_DEADLINE = run.STOP_TIMEOUT + 10


class RunProcess:
    """`python -m scripts.run` as a child, its output in a file; knows the pids of the processes it started."""

    def __init__(self, env, log_path):
        self.log_path = log_path
        with open(log_path, "wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "scripts.run"],
                cwd=ROOT,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def output(self):
        with open(self.log_path, encoding="utf-8", errors="replace") as log:
            return log.read()

    def child_pids(self):
        return run.started_children(self.output())

    def wait(self, timeout):
        return self.process.wait(timeout)

    def stop(self):
        """Teardown whatever happened: SIGTERM, then SIGKILL for the supervisor and each child still there."""
        run.stop_supervisor(self.process, self.output(), STOP_DEADLINE)


def listeners(port):
    """How many sockets listen on TCP `port` on this machine (eventlet sets SO_REUSEPORT, so two gateways can
    share a port silently: a test must know it talks to its own)."""
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as lines:
            for line in list(lines)[1:]:
                fields = line.split()
                if int(fields[1].rsplit(":", 1)[1], 16) == port and fields[3] == "0A":
                    count += 1
    return count


def wait_while_running(predicate, what, process):
    """wait_until `predicate()` is true, failing at once if scripts.run (`process`) ends first; either failure
    shows its output."""

    def check():
        if process.process.poll() is not None:
            pytest.fail(f"scripts.run ended (code {process.process.poll()}) before {what}:\n{process.output()}")
        return predicate()

    try:
        wait_until(check, timeout=START_DEADLINE, interval=0.25, what=what)
    except AssertionError as late:
        pytest.fail(f"{late}\n{process.output()}")


def base_env(rabbit_config, **extra):
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in ("JWT_SECRET", "ADMIN_EMAIL", "ADMIN_PASSWORD", "GATEWAY_BIND", "CARTMESH_INSTANCES")
        and not key.endswith("_DATABASE_URL")
    }
    env.update(AMQP_URI=rabbit_config["AMQP_URI"], **extra)
    return env


@pytest.fixture
def start(tmp_path):
    started = []

    def make(env):
        process = RunProcess(env, tmp_path / f"run-{len(started)}.log")
        started.append(process)
        return process

    yield make
    for process in started:
        process.stop()


def healthy(base_url):
    try:
        return requests.get(base_url + "/health", timeout=3).status_code == 200
    except requests.RequestException:
        return False


def run_script(module, env):
    return subprocess.run(
        [sys.executable, "-m", module], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )


def test_make_run_serves_the_api_seeds_and_stops_cleanly_on_sigterm(db_backend, rabbit_config, start, tmp_path):
    port = find_free_port()
    admin_password = uuid.uuid4().hex
    var_dir = tmp_path / "var-not-yet-there"
    env = base_env(
        rabbit_config,
        GATEWAY_PORT=str(port),
        CARTMESH_VAR_DIR=str(var_dir),
        ADMIN_EMAIL=ADMIN_EMAIL,
        ADMIN_PASSWORD=admin_password,
    )
    drops = []
    if db_backend == "postgresql":  # empty databases: scripts.run must migrate them
        for service in run.SERVICES:
            url, drop = create_postgres_database()
            drops.append(drop)
            env[run.database_url_variable(service)] = url
    base_url = f"http://127.0.0.1:{port}"
    system = start(env)
    try:
        wait_while_running(lambda: healthy(base_url), "GET /health is 200", system)
        assert listeners(port) == 1, f"another process listens on port {port} too: results would be mixed"
        assert "JWT_SECRET is not set: generated a random one" in system.output()
        if db_backend == "sqlite":
            assert {f"{service}.db" for service in run.SERVICES} <= set(os.listdir(var_dir))

        # A token issued by accounts is accepted by the gateway: both got the same generated secret.
        http = requests.Session()
        email = f"run-{uuid.uuid4().hex[:8]}@example.com"
        assert (
            http.post(
                base_url + "/auth/register", json={"email": email, "password": "long enough"}, timeout=15
            ).status_code
            == 201
        )
        token = http.post(
            base_url + "/auth/token", json={"email": email, "password": "long enough"}, timeout=15
        ).json()["access_token"]
        me = http.get(base_url + "/me", headers={"Authorization": f"Bearer {token}"}, timeout=15)
        assert me.status_code == 200 and me.json()["email"] == email

        seed_env = dict(env, GATEWAY_URL=base_url)
        first = run_script("scripts.seed", seed_env)
        assert first.returncode == 0, first.stderr + system.output()[-20000:]
        assert "12 created, 0 updated, 0 unchanged" in first.stdout
        products = http.get(base_url + "/products?limit=100", timeout=15).json()
        assert products["total"] == 12
        # A re-run changes nothing, except what differs from the demo content; stock stays as the shop has it.
        admin_token = http.post(
            base_url + "/auth/token", json={"email": ADMIN_EMAIL, "password": admin_password}, timeout=15
        ).json()["access_token"]
        patched = http.patch(
            base_url + "/products/MUG-CLASSIC",
            json={"price_cents": 1, "stock": 7},
            headers={"Authorization": f"Bearer {admin_token}"},
            timeout=15,
        )
        assert patched.status_code == 200, patched.text
        second = run_script("scripts.seed", seed_env)
        assert second.returncode == 0, second.stderr
        assert "0 created, 1 updated, 11 unchanged" in second.stdout
        mug = http.get(base_url + "/products/MUG-CLASSIC", timeout=15).json()
        assert (mug["price_cents"], mug["stock"]) == (1200, 7)
        assert http.get(base_url + "/products?limit=100", timeout=15).json()["total"] == 12

        # The containers' healthcheck, against the same system.
        for name in run.SERVICES + [run.GATEWAY]:
            check = subprocess.run(
                [sys.executable, "-m", "scripts.healthcheck", name, "3"],
                cwd=ROOT,
                env=env,
                capture_output=True,
                text=True,
                timeout=30,
            )
            assert check.returncode == 0, (name, check.stderr)
        http.close()

        children = system.child_pids()
        assert set(run.SERVICES) | {run.GATEWAY} <= set(children)
        system.process.send_signal(signal.SIGTERM)
        assert system.wait(STOP_DEADLINE) == 0, system.output()
        assert not [name for name, pid in children.items() if run.alive(pid)]
        assert "all processes stopped" in system.output()
        assert "did not stop within" not in system.output()
    finally:
        system.stop()
        for drop in drops:
            drop()


def test_a_child_that_dies_stops_the_others_and_fails_the_run(rabbit_config, start, tmp_path):
    # The gateway cannot bind a port that is taken, and exits: the likeliest real failure.
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        system = start(
            base_env(
                rabbit_config,
                GATEWAY_PORT=str(port),
                CARTMESH_VAR_DIR=str(tmp_path / "var"),
                JWT_SECRET="a-test-secret-of-enough-length",
            )
        )
        code = system.wait(START_DEADLINE)
    output = system.output()
    assert code == 1, output
    assert "gateway ended unexpectedly" in output
    assert "JWT_SECRET is not set" not in output
    children = system.child_pids()
    assert set(run.SERVICES) | {run.GATEWAY} <= set(children)
    assert not [name for name, pid in children.items() if run.alive(pid)]


def test_no_child_outlives_a_supervisor_killed_with_sigkill(rabbit_config, start, tmp_path):
    port = find_free_port()
    system = start(
        base_env(
            rabbit_config,
            GATEWAY_PORT=str(port),
            CARTMESH_VAR_DIR=str(tmp_path / "var"),
            CARTMESH_INSTANCES="carts=2",
        )
    )
    wait_while_running(lambda: healthy(f"http://127.0.0.1:{port}"), "GET /health is 200", system)
    children = {name: pid for name, pid in system.child_pids().items() if not name.endswith("-migrate")}
    assert set(run.SERVICES) | {run.GATEWAY, "carts-2"} <= set(children)
    ports = [port] + [int(number) for number in re.findall(r"http://127\.0\.0\.1:(\d+)/metrics", system.output())]
    assert len(ports) > len(children)  # the gateway's, and each service's probes
    assert all(listeners(number) == 1 for number in set(ports))

    system.process.kill()
    system.wait(STOP_DEADLINE)
    wait_until(
        lambda: not [pid for pid in children.values() if run.alive(pid)] and not any(map(listeners, ports)),
        timeout=5,
        interval=0.1,
        what="every child has ended and every port it held is free",
    )


@pytest.mark.parametrize("process", ["gateway", "probes"])
def test_a_port_another_process_holds_is_refused_not_shared(process, rabbit_config, tmp_path):
    # Held as an older gateway holds it: eventlet listens with SO_REUSEPORT, which would let a second one share it.
    with socket.socket() as taken:
        taken.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = base_env(rabbit_config, JWT_SECRET="a-test-secret-of-enough-length", METRICS_BIND="127.0.0.1")
        if process == "gateway":
            env.update(GATEWAY_BIND="127.0.0.1", GATEWAY_PORT=str(port))
            argv = run.gateway_command()
        else:  # a service whose probe server would share the port
            env.update(METRICS_PORT=str(port), PAYMENTS_DATABASE_URL=f"sqlite:///{tmp_path / 'payments.db'}")
            argv = run.service_command("payments")
        started = subprocess.run(run.local_command(argv), cwd=ROOT, env=env, capture_output=True, text=True, timeout=30)
        assert started.returncode == 1, started.stderr
        assert f"cannot listen on 127.0.0.1:{port}: port {port} is already in use" in started.stderr
        assert listeners(port) == 1


def test_a_failed_migration_starts_nothing_and_fails_the_run(rabbit_config, start, tmp_path):
    broken = run.SERVICES[-1]
    env = base_env(rabbit_config, GATEWAY_PORT=str(find_free_port()), CARTMESH_VAR_DIR=str(tmp_path / "var"))
    env[run.database_url_variable(broken)] = f"postgresql://nobody@127.0.0.1:{find_free_port()}/nothing"
    system = start(env)
    assert system.wait(START_DEADLINE) == 1, system.output()
    assert f"{broken}-migrate failed" in system.output()
    started = system.child_pids()
    assert set(started) <= {f"{service}-migrate" for service in run.SERVICES}
    assert not [name for name, pid in started.items() if run.alive(pid)]


def test_ctrl_c_stops_every_process_and_exits_0(rabbit_config, start, tmp_path):
    system = start(
        base_env(
            rabbit_config,
            GATEWAY_PORT=str(find_free_port()),
            CARTMESH_VAR_DIR=str(tmp_path / "var"),
            CARTMESH_INSTANCES="carts=2",
        )
    )
    everything = set(run.SERVICES) | {run.GATEWAY, "carts-2"}
    wait_while_running(lambda: everything <= set(system.child_pids()), "every process started", system)
    children = system.child_pids()
    system.process.send_signal(signal.SIGINT)
    assert system.wait(STOP_DEADLINE) == 0, system.output()
    assert "SIGINT received: stopping" in system.output()
    assert not [name for name, pid in children.items() if run.alive(pid)]


def test_an_unreachable_broker_is_said_plainly_without_its_password(start, tmp_path):
    env = {key: value for key, value in os.environ.items() if key != "JWT_SECRET"}
    env.update(
        AMQP_URI=f"amqp://guest:hunter2-secret@127.0.0.1:{find_free_port()}/", CARTMESH_VAR_DIR=str(tmp_path / "var")
    )
    system = start(env)
    assert system.wait(60) == 1
    output = system.output()
    assert "cannot reach RabbitMQ at amqp://guest:**@127.0.0.1" in output
    assert "hunter2-secret" not in output
    assert system.child_pids() == {}


def test_the_healthcheck_fails_fast_for_a_service_that_is_not_running(rabbit_config):
    env = dict(os.environ, AMQP_URI=rabbit_config["AMQP_URI"])
    started = time.monotonic()
    check = subprocess.run(
        [sys.executable, "-m", "scripts.healthcheck", "catalog", "2"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert check.returncode == 1
    assert check.stderr.startswith("unhealthy: catalog:")
    assert time.monotonic() - started < 10


def test_the_gateway_healthcheck_fails_when_nothing_listens():
    env = dict(os.environ, GATEWAY_PORT=str(find_free_port()))
    check = subprocess.run(
        [sys.executable, "-m", "scripts.healthcheck", "gateway", "2"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert check.returncode == 1
    assert check.stderr.startswith("unhealthy: gateway:")


def test_seed_needs_the_admin_credentials():
    env = {key: value for key, value in os.environ.items() if key not in ("ADMIN_EMAIL", "ADMIN_PASSWORD")}
    result = run_script("scripts.seed", env)
    assert result.returncode == 2
    assert "set ADMIN_EMAIL and ADMIN_PASSWORD" in result.stderr


def test_seed_says_when_the_gateway_cannot_be_reached():
    env = dict(
        os.environ,
        ADMIN_EMAIL=ADMIN_EMAIL,
        ADMIN_PASSWORD="whatever-it-is",
        GATEWAY_URL=f"http://127.0.0.1:{find_free_port()}",
    )
    result = run_script("scripts.seed", env)
    assert result.returncode == 1
    assert "cannot reach the gateway" in result.stderr
