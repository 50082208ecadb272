"""`make run`: every Cartmesh service and the gateway on this machine, in the foreground, without containers.

    .venv/bin/python -m scripts.run

What it does, in order:

1. Works out the environment its children share: `AMQP_URI` (default `amqp://guest:guest@localhost:5672/`),
   `GATEWAY_PORT` (default 8000), `GATEWAY_BIND` (default 127.0.0.1 here: set 0.0.0.0 to accept connections
   from other machines), and for each service `<NAME>_DATABASE_URL`, by default a SQLite file in the var
   folder (`CARTMESH_VAR_DIR`, default `var/` in the repo; made if missing). When `JWT_SECRET` is unset it
   makes a random one for this run only (tokens then stop working when the run ends) and says so.
2. Checks that RabbitMQ answers, then runs every service's migrations (side by side: separate databases).
3. Starts each service (`nameko run --config config/<name>.yml services.<name>.service`) and the gateway
   (`nameko run --config config/gateway.yml gateway_http.service`) as child processes, and prints their output
   with the name of the process in front of each line.
4. Runs until SIGTERM, SIGHUP or Ctrl-C, then asks every child to stop (SIGTERM, which nameko answers with a graceful
   stop), kills those still running after `STOP_TIMEOUT` seconds, and exits 0. If a child ends on its own, it
   stops the others the same way and exits 1 — or, with `CARTMESH_RESTART=1`, starts that child again (as an
   orchestrator's restart policy would: `make chaos` kills processes on purpose) and keeps running.

`ADMIN_EMAIL` and `ADMIN_PASSWORD`, when set, reach the accounts service, which then creates that administrator.
`CARTMESH_INSTANCES` starts several instances of backend services, e.g. `carts=2` or `carts=2,catalog=3`
(default one each): they are competing consumers on the service's queue, which is how Cartmesh scales. The
first instance keeps the service's name, the others are `<name>-2`, `<name>-3`, ... The gateway is always one
process (it owns the port). A value it cannot read stops it before anything starts (exit code 2).
Logs: `LOG_FORMAT=json` for every child unless the caller set `LOG_FORMAT` (`console` for text lines). Each
service instance serves its probes (`/metrics`, `/health/live`, `/health/ready`, docs/OBSERVABILITY.md) on its
own `METRICS_PORT`, counted up from `METRICS_PORT_BASE` (default 9101; 0 turns them off; a port already
taken is skipped) on `METRICS_BIND` (default 127.0.0.1); the map is printed at start. The gateway serves
`/metrics` on its own port.
The commands are the ones the containers run (docker-compose.yml); tests/ops checks that they agree.
Children get their own session, so a Ctrl-C (or the SIGHUP of a closed terminal) reaches only this supervisor,
which stops them in order. However the supervisor itself ends (SIGKILL, the OOM killer), the kernel kills its
children with it (`PR_SET_PDEATHSIG`, with SIGKILL: nothing is left to bound a graceful stop, and the services
are built to survive kill -9): none is left running, holding the gateway's port and answering for a stopped run.
"""

import ctypes
import os
import re
import secrets
import signal
import subprocess
import sys
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# The backend services, in start order. A new service (orders, payments) is one more name here and one more
# service in docker-compose.yml (tests/ops fails until both list it); its database URL variable must be
# `<NAME>_DATABASE_URL` in config/<name>.yml.
SERVICES = ["accounts", "catalog", "carts", "payments", "orders"]
GATEWAY = "gateway"

DEFAULT_AMQP_URI = "amqp://guest:guest@localhost:5672/"
DEFAULT_GATEWAY_PORT = "8000"
DEFAULT_METRICS_PORT_BASE = 9101
MAX_INSTANCES = 16  # per service: more than this on one machine is a typo, not a plan
# Seconds a child gets after SIGTERM: more than its own bound on finishing running workers
# (SHUTDOWN_GRACE_SECONDS, default 25: services/common/container.py), so that bound is what ends it.
STOP_TIMEOUT = 30.0
POLL_INTERVAL = 0.2  # how often the supervisor looks for children that ended
PR_SET_PDEATHSIG = 1  # <linux/prctl.h>

_print_lock = threading.Lock()


def migrate_command(service):
    """The command that brings `service`'s database to the newest schema (as run in its container)."""
    return ["python", "-m", "services.common.migrate", service]


def service_command(service):
    """The command that runs `service` (as run in its container)."""
    return ["nameko", "run", "--config", f"config/{service}.yml", f"services.{service}.service"]


def gateway_command():
    """The command that runs the HTTP gateway (as run in its container)."""
    return ["nameko", "run", "--config", f"config/{GATEWAY}.yml", "gateway_http.service"]


def local_command(argv):
    """`argv` with `python`/`nameko` replaced by this interpreter, so that the venv's packages are used."""
    if argv[0] == "python":
        return [sys.executable] + argv[1:]
    if argv[0] == "nameko":
        return [sys.executable, "-m", "nameko"] + argv[1:]
    return list(argv)


def instance_counts(value):
    """{service: number of instances} from a `CARTMESH_INSTANCES` value such as "carts=2,catalog=3"; every
    service not named gets 1. Raises ValueError, saying what is wrong, for anything else."""
    counts = dict.fromkeys(SERVICES, 1)
    named = set()
    for part in (value or "").split(","):
        if not part.strip():
            continue
        name, sep, number = (piece.strip() for piece in part.partition("="))
        if name not in SERVICES:
            raise ValueError(f"{name!r} is not a backend service (one of {', '.join(SERVICES)})")
        if not sep or not number.isdigit() or not 1 <= int(number) <= MAX_INSTANCES:
            raise ValueError(f"{part.strip()!r}: write {name}=N with N from 1 to {MAX_INSTANCES}")
        if name in named:
            raise ValueError(f"{name} is named twice")
        named.add(name)
        counts[name] = int(number)
    return counts


def instance_names(service, count):
    """The process names of `count` instances of `service`: "carts", "carts-2", ..."""
    return [service] + [f"{service}-{number}" for number in range(2, count + 1)]


def database_url_variable(service):
    return f"{service.upper()}_DATABASE_URL"


def say(message):
    emit("run", message)


def emit(name, line):
    with _print_lock:
        sys.stdout.write(f"{name:<16} | {line}\n")
        sys.stdout.flush()


def child_environment(environ, var_dir):
    """(environment for the children, whether a JWT secret was generated) from this process's `environ`.

    An empty variable counts as unset.
    """
    env = dict(environ)

    def default(key, value):
        if not env.get(key):
            env[key] = value

    default("AMQP_URI", DEFAULT_AMQP_URI)
    default("GATEWAY_PORT", DEFAULT_GATEWAY_PORT)
    default("GATEWAY_BIND", "127.0.0.1")
    default("LOG_FORMAT", "json")
    default("METRICS_BIND", "127.0.0.1")
    # eventlet's green DNS costs 7-12 MiB per process; lookups happen only when connecting (docs/PERFORMANCE.md).
    default("EVENTLET_NO_GREENDNS", "yes")
    for service in SERVICES:
        default(database_url_variable(service), f"sqlite:///{os.path.join(var_dir, service + '.db')}")
    generated = not env.get("JWT_SECRET")
    if generated:
        env["JWT_SECRET"] = secrets.token_urlsafe(32)
    # Children's lines should reach us as they are written, not when a buffer fills.
    env["PYTHONUNBUFFERED"] = "1"
    return env, generated


def metrics_ports(names, base, is_free=lambda port: True):
    """{process name: its METRICS_PORT}: distinct ports counted up from `base`, skipping those `is_free` says
    are taken (so a port some other program holds does not stop a service from starting); all 0 (off) when
    `base` is 0. Raises ValueError for a base that is not a port number, or when the ports run out."""
    base = int(base)
    if base == 0:
        return dict.fromkeys(names, 0)
    if not 0 < base < 65536:
        raise ValueError(f"{base} is not a port number")
    ports, port = {}, base
    for name in names:
        while not is_free(port):
            port += 1
        if port > 65535:
            raise ValueError(f"no free ports left from {base} for {len(names)} services")
        ports[name] = port
        port += 1
    return ports


def port_is_free(bind):
    """A check: whether a TCP port on address `bind` can be listened on now."""
    import socket

    def check(port):
        with socket.socket() as sock:
            try:
                sock.bind((bind, port))
            except OSError:
                return False
            return True

    return check


def masked(uri):
    """`uri` with its password replaced, fit for a log line."""
    from kombu.utils.url import maybe_sanitize_url

    return maybe_sanitize_url(uri)


def broker_error(amqp_uri):
    """None when RabbitMQ at `amqp_uri` accepts a connection, else why not (one line)."""
    from kombu import Connection

    try:
        with Connection(amqp_uri, connect_timeout=5) as connection:
            connection.ensure_connection(max_retries=1)
    except Exception as exc:  # any failure means the same thing here: nothing can start
        return f"{type(exc).__name__}: {exc}"
    return None


def killed_with_this_thread():
    """A `preexec_fn` that makes the child receive SIGKILL when the thread that starts it ends.

    The kernel sends the signal when the parent *thread* ends, not the process: start children from a thread
    that lives as long as they should (`make run` starts and supervises them from its main thread). The parent
    may have died between the fork and the `prctl`, in which case no signal ever comes: the child then checks
    its parent and kills itself.
    """
    prctl = ctypes.CDLL(None, use_errno=True).prctl  # looked up before the fork: the child only calls it
    parent = os.getpid()

    def in_child():
        if prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
        if os.getppid() != parent:
            os.kill(os.getpid(), signal.SIGKILL)

    return in_child


class Child:
    """One child process, in a session of its own and killed if this process dies (`killed_with_this_thread`);
    its combined output is printed line by line behind its name."""

    def __init__(self, name, argv, env):
        self.name = name
        self.process = subprocess.Popen(
            local_command(argv),
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=killed_with_this_thread(),
        )
        self.pump = threading.Thread(target=self._forward, name=f"output-{name}", daemon=True)
        self.pump.start()

    @property
    def pid(self):
        return self.process.pid

    def _forward(self):
        for raw in iter(self.process.stdout.readline, b""):
            emit(self.name, raw.decode("utf-8", "replace").rstrip("\n"))
        self.process.stdout.close()

    def poll(self):
        return self.process.poll()

    def terminate(self):
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)

    def wait(self, timeout):
        """The exit code, after waiting at most `timeout` seconds; kills the child if it is still running."""
        try:
            code = self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            say(f"{self.name} did not stop within {STOP_TIMEOUT:g} s: killing it")
            self.process.kill()
            code = self.process.wait()
        self.pump.join(timeout=2)
        return code


def stop_all(children, timeout=STOP_TIMEOUT):
    """SIGTERM to every child still running, then wait for all of them together, at most `timeout` seconds."""
    for child in children:
        child.terminate()
    deadline = time.monotonic() + timeout
    for child in children:
        child.wait(max(0.0, deadline - time.monotonic()))


class Supervisor:
    """Runs children until a stop is requested (a signal) or one of them ends; see the module docstring."""

    def __init__(self, env, restart=False):
        self.env = env
        self.restart = restart  # start a child that ended on its own again, instead of stopping everything
        self.stopping = threading.Event()
        self.children = []

    def request_stop(self, signum, _frame):
        if not self.stopping.is_set():
            say(f"{signal.Signals(signum).name} received: stopping")
        self.stopping.set()

    def start(self, name, argv, **extra_env):
        child = Child(name, argv, dict(self.env, **extra_env))
        child.argv, child.extra_env = argv, extra_env  # to start it again
        self.children.append(child)
        say(f"started {name} (pid {child.pid}): {' '.join(argv)}")
        return child

    def run_to_end(self, commands):
        """Runs {name: argv} side by side to their ends; True if all succeeded, False as soon as one fails
        (the others are stopped) or a stop is requested."""
        running = [self.start(name, argv) for name, argv in commands.items()]
        while running:
            if self.stopping.wait(POLL_INTERVAL):
                stop_all(running)
                return False
            for child in [child for child in running if child.poll() is not None]:
                running.remove(child)
                self.children.remove(child)
                child.pump.join(timeout=2)
                if child.poll() != 0:
                    say(f"{child.name} failed (exit code {child.poll()})")
                    stop_all(running)
                    return False
        return True

    def supervise(self):
        """Waits until a stop is requested (→ 0) or a child ends (→ 1); either way stops every child."""
        code = 0
        while not self.stopping.wait(POLL_INTERVAL):
            ended = [child for child in self.children if child.poll() is not None]
            if ended and self.restart:
                for child in ended:
                    say(f"{child.name} ended unexpectedly (exit code {child.poll()}): starting it again")
                    self.children.remove(child)
                    child.pump.join(timeout=2)
                    self.start(child.name, child.argv, **child.extra_env)
                continue
            if ended:
                for child in ended:
                    say(f"{child.name} ended unexpectedly (exit code {child.poll()}): stopping the others")
                code = 1
                break
        stop_all(self.children)
        say("all processes stopped")
        return code


# --- for whatever drives this supervisor from outside (its tests, the bench) ------------------------------------


def started_children(output):
    """{name: pid} of the processes a supervisor's output says it started (its `started NAME (pid N)` lines)."""
    return {name: int(pid) for name, pid in re.findall(r"started (\S+) \(pid (\d+)\)", output)}


def alive(pid):
    """Whether process `pid` still runs (a zombie counts as ended)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def stop_supervisor(process, output, deadline=STOP_TIMEOUT + 10):
    """Stop a supervisor started as `process` (a Popen) whatever state it is in: SIGTERM, then SIGKILL for it
    after `deadline` and for every child its `output` names that is still there."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(deadline)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    for pid in started_children(output).values():
        if alive(pid):
            os.kill(pid, signal.SIGKILL)


def main(environ=None):
    environ = os.environ if environ is None else environ
    try:
        counts = instance_counts(environ.get("CARTMESH_INSTANCES"))
    except ValueError as exc:
        say(f"CARTMESH_INSTANCES: {exc}")
        return 2
    var_dir = os.path.abspath(environ.get("CARTMESH_VAR_DIR") or os.path.join(ROOT, "var"))
    os.makedirs(var_dir, exist_ok=True)
    env, generated_secret = child_environment(environ, var_dir)
    if generated_secret:
        say(
            "JWT_SECRET is not set: generated a random one for this run only "
            "(tokens issued now stop working when this run ends; set JWT_SECRET to keep them)"
        )

    supervisor = Supervisor(env, restart=environ.get("CARTMESH_RESTART") == "1")
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, supervisor.request_stop)

    problem = broker_error(env["AMQP_URI"])
    if problem:
        say(
            f"cannot reach RabbitMQ at {masked(env['AMQP_URI'])} ({problem}); start it "
            "(rabbitmq-server -detached) or set AMQP_URI"
        )
        return 1
    say(f"broker {masked(env['AMQP_URI'])}; gateway on http://{env['GATEWAY_BIND']}:{env['GATEWAY_PORT']}")

    # Each service has its own database, so their migrations can run at the same time.
    if not supervisor.run_to_end({f"{service}-migrate": migrate_command(service) for service in SERVICES}):
        return 0 if supervisor.stopping.is_set() else 1
    instances = [(service, name) for service in SERVICES for name in instance_names(service, counts[service])]
    try:
        ports = metrics_ports(
            [name for _, name in instances],
            env.get("METRICS_PORT_BASE") or DEFAULT_METRICS_PORT_BASE,
            port_is_free(env["METRICS_BIND"]),
        )
    except ValueError as exc:
        say(f"METRICS_PORT_BASE: {exc}")
        return 2
    if any(ports.values()):
        say(
            "metrics: "
            + ", ".join(f"{name} http://{env['METRICS_BIND']}:{port}/metrics" for name, port in ports.items())
            + f", gateway http://{env['GATEWAY_BIND']}:{env['GATEWAY_PORT']}/metrics"
        )
    for service, name in instances:
        # SERVICE_NAME: the `service` of log lines written before the container is set up.
        supervisor.start(name, service_command(service), METRICS_PORT=str(ports[name]), SERVICE_NAME=service)
    supervisor.start(GATEWAY, gateway_command(), SERVICE_NAME=GATEWAY)
    return supervisor.supervise()


if __name__ == "__main__":
    sys.exit(main())
