"""The system under test, as the bench starts it: a fresh RabbitMQ vhost, `make run` (scripts/run.py) on a free
loopback port with fresh databases, the minimal baseline, and the data the scenarios need, made through the
public API. Everything started here is stopped by `stop()`, whatever happened."""

import os
import subprocess
import sys
import time
import urllib.parse
import uuid

import requests

from bench.wrk import BenchError
from scripts import run

ROOT = run.ROOT
DEFAULT_AMQP_URI = "amqp://guest:guest@localhost:5672/"
DEFAULT_RABBIT_CTL_URI = "http://guest:guest@localhost:15672"  # the management API, as nameko's tests use it
START_DEADLINE = 120  # seconds for migrations and every process to answer (two busy cores)
STOP_DEADLINE = run.STOP_TIMEOUT + 10
TIMEOUT = 30  # seconds per setup request


class Vhost:
    """A new RabbitMQ virtual host (through the management API), deleted by `delete()`."""

    def __init__(self, amqp_uri=None, ctl_uri=None):
        amqp_uri = amqp_uri or os.environ.get("AMQP_URI") or DEFAULT_AMQP_URI
        ctl = urllib.parse.urlsplit(ctl_uri or os.environ.get("RABBIT_CTL_URI") or DEFAULT_RABBIT_CTL_URI)
        self.api = f"{ctl.scheme}://{ctl.hostname}:{ctl.port or 15672}/api"
        self.auth = (urllib.parse.unquote(ctl.username or "guest"), urllib.parse.unquote(ctl.password or "guest"))
        self.name = f"cartmesh-bench-{uuid.uuid4().hex[:8]}"
        broker = urllib.parse.urlsplit(amqp_uri)
        self.user = urllib.parse.unquote(broker.username or "guest")
        self.amqp_uri = urllib.parse.urlunsplit(broker._replace(path="/" + self.name))
        self.created = False

    def _call(self, method, path, **kwargs):
        try:
            response = requests.request(method, self.api + path, auth=self.auth, timeout=TIMEOUT, **kwargs)
        except requests.RequestException as exc:
            raise BenchError(
                f"cannot reach the RabbitMQ management API at {self.api} ({exc}); enable it with "
                "`rabbitmq-plugins enable rabbitmq_management` or set RABBIT_CTL_URI"
            )
        if response.status_code >= 300 and not (method == "DELETE" and response.status_code == 404):
            raise BenchError(
                f"RabbitMQ management API: {method} {path} answered {response.status_code}: {response.text[:200]}"
            )
        return response

    def create(self):
        self._call("PUT", f"/vhosts/{self.name}")
        self.created = True
        self._call(
            "PUT",
            f"/permissions/{self.name}/{urllib.parse.quote(self.user)}",
            json={"configure": ".*", "write": ".*", "read": ".*"},
        )
        return self

    def queues(self):
        """The management API's list of this vhost's queues (with message_stats and consumers)."""
        return self._call("GET", f"/queues/{self.name}").json()

    def delete(self):
        if self.created:
            self._call("DELETE", f"/vhosts/{self.name}")
            self.created = False


class Processes:
    """Child processes started by the bench, each with its output in a log file; stopped gracefully, then
    killed, together with the processes they say they started (scripts.run prints "started NAME (pid N)")."""

    def __init__(self, log_path, argv, env):
        self.log_path = log_path
        with open(log_path, "ab") as log:
            # A session of its own: a Ctrl-C at the terminal reaches the bench, which stops this in order; and
            # killed with the bench however it ends, so that nothing it started outlives it (scripts/run.py).
            self.process = subprocess.Popen(
                argv,
                cwd=ROOT,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=run.killed_with_this_thread(),
            )

    def output(self, offset=0):
        """The log from byte `offset` on."""
        with open(self.log_path, encoding="utf-8", errors="replace") as log:
            log.seek(offset)
            return log.read()

    def log_size(self):
        return os.path.getsize(self.log_path)

    def children(self):
        """{name: pid} of the processes scripts.run says it started (migrations included)."""
        return run.started_children(self.output())

    def ended(self):
        return self.process.poll() is not None

    def stop(self):
        run.stop_supervisor(self.process, self.output(), STOP_DEADLINE)


def poll(read, done, deadline, interval=0.5):
    """Call `read()` until `done(value)` holds or `deadline` seconds have passed; the last value, for the caller to
    judge (a check that reports what is left rather than failing at the deadline)."""
    end = time.monotonic() + deadline
    while not done(value := read()) and time.monotonic() < end:
        time.sleep(interval)
    return value


def wait_until(predicate, deadline, what, process=None):
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        if predicate():
            return
        if process is not None and process.ended():
            raise BenchError(
                f"{what}: the process ended first; the end of its log ({process.log_path}):\n"
                + process.output()[-3000:]
            )
        time.sleep(0.25)
    raise BenchError(f"{what}: not within {deadline} s; see {process.log_path if process else 'the logs'}")


def answers(url):
    try:
        return requests.get(url, timeout=3).status_code == 200
    except requests.RequestException:
        return False


def free_port():
    from nameko.testing.utils import find_free_port

    return find_free_port()


class Cartmesh:
    """`python -m scripts.run` on the bench's vhost, port and var dir; `start(instances)` may be called again
    after `stop()` (same databases, secret and users), e.g. with "carts=2" for the scaling run."""

    def __init__(self, vhost, var_dir, log_level, database_urls=None):
        self.vhost = vhost
        self.var_dir = var_dir
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.admin_email = "bench-admin@cartmesh.invalid"
        self.admin_password = uuid.uuid4().hex
        # Kept for the whole bench, so that tokens stay valid when the system is started again.
        self.env = {
            key: value
            for key, value in os.environ.items()
            if not key.endswith("_DATABASE_URL")
            and key not in ("CARTMESH_INSTANCES", "CARTMESH_RESTART", "MAX_WORKERS")
        }
        self.env.update(
            AMQP_URI=vhost.amqp_uri,
            GATEWAY_PORT=str(self.port),
            GATEWAY_BIND="127.0.0.1",
            CARTMESH_VAR_DIR=var_dir,
            JWT_SECRET=uuid.uuid4().hex + uuid.uuid4().hex,
            ADMIN_EMAIL=self.admin_email,
            ADMIN_PASSWORD=self.admin_password,
            LOG_LEVEL=log_level,
            # stats.log_problems reads the text format; make run defaults to JSON
            LOG_FORMAT="console",
            # All the load comes from one address and a few users: limits far above what it sends,
            # so that the limiter's check is still measured but never answers 429.
            RATE_LIMIT_PER_ADDRESS="1000000000",
            RATE_LIMIT_PER_USER="1000000000",
        )
        for service, url in (database_urls or {}).items():  # else scripts.run's SQLite files in var_dir
            self.env[run.database_url_variable(service)] = url
        self.processes = None
        self.starts = 0

    def start(self, instances=""):
        self.starts += 1
        env = dict(self.env, CARTMESH_INSTANCES=instances)
        self.processes = Processes(
            os.path.join(self.var_dir, f"system-{self.starts}.log"), [sys.executable, "-m", "scripts.run"], env
        )
        wait_until(
            lambda: answers(self.base_url + "/health"), START_DEADLINE, "Cartmesh's GET /health is 200", self.processes
        )
        return self

    def services(self):
        """{name: pid} of the running services and gateway (not the migrations)."""
        return {name: pid for name, pid in self.processes.children().items() if not name.endswith("-migrate")}

    def supervisor_pid(self):
        return self.processes.process.pid

    def stop(self):
        if self.processes is not None:
            self.processes.stop()


class PostgresDatabases:
    """A new empty PostgreSQL database per service, made and dropped through `admin_url`."""

    def __init__(self, admin_url):
        from sqlalchemy import create_engine
        from sqlalchemy.engine import make_url

        self.admin_url = make_url(admin_url)
        self.engine = create_engine(admin_url, isolation_level="AUTOCOMMIT")
        self.names = {service: f"cartmesh_bench_{service}_{uuid.uuid4().hex[:8]}" for service in run.SERVICES}
        self.urls = {
            service: self.admin_url.set(database=name).render_as_string(hide_password=False)
            for service, name in self.names.items()
        }
        self.created = []

    def _execute(self, statement):
        from sqlalchemy import text

        with self.engine.connect() as connection:
            connection.execute(text(statement))

    def create(self):
        for name in self.names.values():
            self._execute(f'CREATE DATABASE "{name}"')
            self.created.append(name)

    def drop(self):
        while self.created:
            self._execute(f'DROP DATABASE IF EXISTS "{self.created.pop()}" WITH (FORCE)')
        self.engine.dispose()


class Baseline:
    """The minimal Nameko baseline (bench/baseline.py): two `nameko run` processes on the bench's vhost."""

    def __init__(self, vhost, var_dir):
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.var_dir = var_dir
        self.env = dict(os.environ, AMQP_URI=vhost.amqp_uri, BASELINE_PORT=str(self.port))
        self.processes = {}

    def start(self):
        # The same worker counts as Cartmesh's: 10 for a service, 50 for the gateway.
        for name, workers in (("BaselineStore", 10), ("BaselineHttp", 50)):
            argv = run.local_command(["nameko", "run", "--config", "bench/baseline.yml", f"bench.baseline:{name}"])
            self.processes[name] = Processes(
                os.path.join(self.var_dir, f"baseline-{name}.log"), argv, dict(self.env, MAX_WORKERS=str(workers))
            )
        wait_until(
            lambda: answers(self.base_url + "/items/ITEM-001"),
            START_DEADLINE,
            "the baseline's GET /items/ITEM-001 is 200",
            self.processes["BaselineHttp"],
        )
        return self

    def pids(self):
        return {f"baseline {name}": processes.process.pid for name, processes in self.processes.items()}

    def stop(self):
        for processes in self.processes.values():
            processes.stop()
        self.processes = {}


# --- data through the public API -----------------------------------------------------------------------------

COLOURS = ["red", "blue", "green", "black", "white", "amber", "violet", "silver"]
PRODUCTS_PER_COLOUR = 5
STOCK = 1_000_000  # never the limit: every checkout of the run must be able to succeed
PASSWORD = "bench password"


class Api:
    """Setup calls against the gateway; any unexpected answer is a BenchError naming the call."""

    def __init__(self, base_url, token=None):
        self.base_url = base_url
        self.http = requests.Session()
        if token:
            self.http.headers["Authorization"] = f"Bearer {token}"

    def call(self, method, path, expected, **kwargs):
        try:
            response = self.http.request(method, self.base_url + path, timeout=TIMEOUT, **kwargs)
        except requests.RequestException as exc:
            raise BenchError(f"setup: {method} {path} failed: {exc}")
        if response.status_code != expected:
            raise BenchError(
                f"setup: {method} {path} answered {response.status_code}, not {expected}: {response.text[:300]}"
            )
        return response.json() if response.content else None

    def login(self, email, password):
        token = self.call("POST", "/auth/token", 200, json={"email": email, "password": password})["access_token"]
        return Api(self.base_url, token)


def products():
    """The bench's catalog: 40 products, 5 per colour word, so that `?q=<colour>` finds 5."""
    items = []
    for colour_number, colour in enumerate(COLOURS):
        for number in range(PRODUCTS_PER_COLOUR):
            index = colour_number * PRODUCTS_PER_COLOUR + number
            items.append(
                {
                    "sku": f"BENCH-{index:03d}",
                    "name": f"{colour.title()} widget {number}",
                    "description": f"A {colour} widget made for load tests.",
                    "price_cents": 500 + index,
                    "stock": STOCK,
                }
            )
    return items


def seed(system, users):
    """Creates the bench's products and `users` users; returns {"skus", "tokens"}."""
    anonymous = Api(system.base_url)
    admin = anonymous.login(system.admin_email, system.admin_password)
    catalog = products()
    for product in catalog:
        admin.call("POST", "/products", 201, json=product)
    tokens = []
    for _ in range(users):
        email = f"shopper-{uuid.uuid4().hex[:10]}@cartmesh.invalid"
        anonymous.call("POST", "/auth/register", 201, json={"email": email, "password": PASSWORD})
        tokens.append(anonymous.login(email, PASSWORD).http.headers["Authorization"].split(" ", 1)[1])
    return {"skus": [product["sku"] for product in catalog], "tokens": tokens}


def make_carts(base_url, tokens, count, skus, lines):
    """`count` carts, spread over the users of `tokens`, each with `lines` lines of quantity 1 (consecutive
    skus of `skus`, a different start for each cart); returns [(cart_id, token, [sku, ...])]."""
    carts = []
    for number in range(count):
        token = tokens[number % len(tokens)]
        chosen = [skus[(number + offset) % len(skus)] for offset in range(lines)]
        cart = Api(base_url, token).call(
            "POST", "/carts", 201, json={"items": [{"sku": sku, "quantity": 1} for sku in chosen]}
        )
        carts.append((cart["id"], token, chosen))
    return carts
