"""The whole system — every service and the gateway, each in its own container with its own database — on a
fresh RabbitMQ vhost, driven over HTTP. Started once per database backend for the session."""

import contextlib
import os
import secrets
import uuid

import pytest
import requests
from nameko.containers import get_container_cls
from nameko.standalone.rpc import ClusterRpcProxy
from nameko.testing.utils import find_free_port

from conftest import POSTGRES_ADMIN_URL, ROOT, create_postgres_database
from gateway_http.service import GatewayService
from services.accounts.service import AccountsService
from services.carts.service import CartsService
from services.catalog.service import CatalogService
from services.common.config import load_config
from services.common.migrate import upgrade
from services.orders.service import OrdersService
from services.payments.service import PaymentsService
from tests.waiting import wait_until

BACKENDS = {
    "accounts": AccountsService,
    "catalog": CatalogService,
    "carts": CartsService,
    "payments": PaymentsService,
    "orders": OrdersService,
}
SERVICE_CLASSES = dict(BACKENDS, gateway=GatewayService)
# Short enough that the fault tests see a stopped service quickly; the saga resumes stalled orders fast.
# A circuit the gateway opened closes again (after a probe) within a second.
TEST_SETTINGS = {
    "RPC_TIMEOUT": 2,
    "SAGA_RESUME_AFTER_SECONDS": 0.5,
    "OUTBOX_POLL_SECONDS": 0.5,
    "EVENT_RETRY_SECONDS": 0.2,
    "BREAKER_RESET_SECONDS": 1,
}
# The suite sends many requests and failed logins from one address: its gateway has no rate limits or login
# throttling, and counts in memory. tests/e2e/test_security_http.py starts gateways of its own to test those.
GATEWAY_TEST_SETTINGS = {
    "RATE_LIMIT_PER_ADDRESS": 0,
    "RATE_LIMIT_PER_USER": 0,
    "LOGIN_THROTTLE_PER_EMAIL_AND_ADDRESS": 0,
    "LOGIN_THROTTLE_PER_EMAIL": 0,
    "LOGIN_THROTTLE_PER_ADDRESS": 0,
    "REDIS_URL": "",
    # Plain HTTP on loopback, like `make run`: the pages' cookies must reach requests and the browser.
    "SESSION_COOKIE_SECURE": False,
}
ADMIN_EMAIL = "admin@cartmesh.test"


class System:
    """A running system: its gateway URL, admin credentials, its broker and databases, and its containers
    (which a test may stop, kill and start again)."""

    def __init__(self, base_url, amqp_uri, database_urls, admin_password, jwt_secret, configs):
        self.base_url = base_url
        self.amqp_uri = amqp_uri
        self.database_urls = database_urls
        self.admin_password = admin_password
        self.jwt_secret = jwt_secret
        self.configs = configs
        self.containers = {}

    def client(self, token=None):
        return Client(self.base_url, token)

    def admin(self):
        return self.client().login(ADMIN_EMAIL, self.admin_password)

    def new_user(self):
        """A freshly registered user's client, logged in."""
        email = f"user-{uuid.uuid4().hex[:10]}@example.com"
        client = self.client()
        assert client.post("/auth/register", json={"email": email, "password": "correct horse"}).status_code == 201
        return client.login(email, "correct horse")

    def rpc(self, service, method, *args, **kwargs):
        with ClusterRpcProxy({"AMQP_URI": self.amqp_uri}, timeout=15) as cluster:
            return getattr(getattr(cluster, service), method)(*args, **kwargs)

    def settled_audit(self, timeout=30):
        """The cross-service audit, once no order is still in its saga."""

        def settled():
            report = self.rpc("orders", "audit")
            return None if report["checked"]["in_saga"] else report

        return wait_until(settled, timeout=timeout, interval=0.1, what="no order left in its saga")

    def start(self, name, instance=None):
        """Start service `name` with the container class its config names (as `nameko run` would);
        `instance` ("carts-2") starts a further instance of it under that name."""
        container = get_container_cls(self.configs[name])(SERVICE_CLASSES[name], self.configs[name])
        container.start()
        self.containers[instance or name] = container
        return instance or name

    def stop(self, name):
        """Stop `name` gracefully; returns the name, to `start` it again."""
        self.containers.pop(name).stop()
        return name

    def kill(self, name):
        """Kill `name` as a crash would: running workers are abandoned."""
        self.containers.pop(name).kill()
        return name

    def kill_all(self):
        for name in list(self.containers):
            self.kill(name)


class Client:
    """requests against the gateway; `token` is sent as a bearer token when set."""

    def __init__(self, base_url, token=None):
        self.base_url = base_url
        self.token = token
        self.http = requests.Session()

    def login(self, email, password):
        response = self.post("/auth/token", json={"email": email, "password": password})
        assert response.status_code == 200, response.text
        return Client(self.base_url, response.json()["access_token"])

    def request(self, method, path, **kwargs):
        headers = kwargs.pop("headers", {})
        if self.token and "Authorization" not in headers:
            headers["Authorization"] = f"Bearer {self.token}"
        return self.http.request(method, self.base_url + path, headers=headers, timeout=15, **kwargs)

    def get(self, path, **kwargs):
        return self.request("GET", path, **kwargs)

    def post(self, path, **kwargs):
        return self.request("POST", path, **kwargs)

    def put(self, path, **kwargs):
        return self.request("PUT", path, **kwargs)

    def patch(self, path, **kwargs):
        return self.request("PATCH", path, **kwargs)

    def delete(self, path, **kwargs):
        return self.request("DELETE", path, **kwargs)


def assert_error(response, status, code):
    """`response` is the contract's error envelope with this status and code; returns the error object."""
    assert response.status_code == status, response.text
    assert response.headers["Content-Type"] == "application/json; charset=utf-8"
    assert response.headers.get("X-Request-ID")
    body = response.json()
    assert set(body) == {"error"}
    error = body["error"]
    assert error["code"] == code
    assert isinstance(error["message"], str) and error["message"]
    assert "Traceback" not in response.text
    assert set(error) <= {"code", "message", "details"}
    return error


def _database_url(backend, service, folder, drops):
    if backend == "sqlite":
        return f"sqlite:///{folder / f'{service}.db'}"
    url, drop = create_postgres_database()
    drops.append(drop)
    return url


@contextlib.contextmanager
def running_system(backend, vhost_pipeline, folder, broker="localhost:5672"):
    """Every service and the gateway, each in its own container with its own fresh database, on a fresh vhost.
    `broker` (host:port) may be a proxy in front of the local RabbitMQ, for tests that cut it off."""
    drops = []
    admin_password = secrets.token_urlsafe(16)
    jwt_secret = secrets.token_urlsafe(32)
    port = find_free_port()
    with vhost_pipeline.get() as vhost:
        amqp_uri = f"pyamqp://guest:guest@{broker}/{vhost}"
        database_urls, configs = {}, {}
        for name in BACKENDS:
            database_urls[name] = _database_url(backend, name, folder, drops)
            upgrade(name, database_urls[name])
            configs[name] = _config(
                name,
                AMQP_URI=amqp_uri,
                DATABASE_URL=database_urls[name],
                JWT_SECRET=jwt_secret,
                ADMIN_EMAIL=ADMIN_EMAIL,
                ADMIN_PASSWORD=admin_password,
                **TEST_SETTINGS,
            )
        configs["gateway"] = _config(
            "gateway",
            AMQP_URI=amqp_uri,
            JWT_SECRET=jwt_secret,
            WEB_SERVER_ADDRESS=f"127.0.0.1:{port}",
            **TEST_SETTINGS,
            **GATEWAY_TEST_SETTINGS,
        )
        system = System(f"http://127.0.0.1:{port}", amqp_uri, database_urls, admin_password, jwt_secret, configs)
        system.backend = backend
        try:
            for name in SERVICE_CLASSES:
                system.start(name)
            yield system
        finally:
            system.kill_all()
            for drop in drops:
                drop()


@pytest.fixture(scope="session", params=["sqlite", "postgresql"])
def system(request, vhost_pipeline, tmp_path_factory):
    """The system most tests share. Tests must not stop or kill its services: use `own_system` for that."""
    if request.param == "postgresql" and not POSTGRES_ADMIN_URL:
        pytest.skip("TEST_POSTGRES_URL is not set: PostgreSQL variant not run")
    with running_system(request.param, vhost_pipeline, tmp_path_factory.mktemp(f"system-{request.param}")) as system:
        yield system


@pytest.fixture
def own_system(system, vhost_pipeline, tmp_path):
    """A system of the test's own, on the same backend as `system`, for tests that stop, kill and restart
    services. (nameko's autouse fast_teardown stops every consumer made during a test when the test ends, so a
    container restarted inside a test must not outlive it.)"""
    with running_system(system.backend, vhost_pipeline, tmp_path) as own:
        yield own


def _config(name, **overrides):
    config = load_config(os.path.join(ROOT, "config", f"{name}.yml"))
    config.pop("LOGGING", None)
    config.update(overrides)
    return config


@pytest.fixture
def anon(system):
    return system.client()


@pytest.fixture
def user(system):
    return system.new_user()


@pytest.fixture
def admin(system):
    return system.admin()


@pytest.fixture
def product(admin):
    """A new product in the catalog (price 1250, stock 10)."""
    sku = f"SKU-{uuid.uuid4().hex[:10]}"
    response = admin.post("/products", json={"sku": sku, "name": f"Widget {sku}", "price_cents": 1250, "stock": 10})
    assert response.status_code == 201, response.text
    return response.json()
