"""Per-app RabbitMQ users (docker/broker_permissions.py) on the real broker: on a fresh vhost, catalog and carts
run as users that have exactly their permissions and nothing else, and do all their work (RPC served and
called, events handled, retried and parked); the carts user cannot consume, declare or bind another app's
queues. The permission tables are also checked against the service classes themselves."""

import json
import re
import uuid
from urllib.parse import urlsplit

import pytest
import requests
from amqp.exceptions import AccessRefused
from kombu import Connection, Exchange, Queue
from nameko.containers import ServiceContainer
from nameko.events import EventHandler
from nameko.rpc import Rpc as RpcEntrypoint
from nameko.standalone.events import event_dispatcher
from nameko.standalone.rpc import ClusterRpcProxy
from nameko.testing.utils import find_free_port

from gateway_http.service import GatewayService
from gateway_http.service_map import queue_stats
from services.accounts.service import AccountsService
from services.carts.service import CartsService
from services.catalog.service import CatalogService
from services.common.errors import NotFound, ServiceUnavailable, UnknownProduct
from services.common.events import ReliableEventHandler
from services.common.migrate import upgrade
from services.common.outbox import Outbox
from services.common.rpc import Rpc
from services.orders.service import OrdersService
from services.payments.service import PaymentsService
from tests.ops.test_compose import load_make_secrets
from tests.waiting import wait_until

# docker/ is no package (`import docker` could find docker-py): make_secrets is loaded from its file, and it loads
# broker_permissions beside it.
make_secrets = load_make_secrets()
broker_permissions = make_secrets.broker_permissions
APPS, EMITS, HANDLES = broker_permissions.APPS, broker_permissions.EMITS, broker_permissions.HANDLES
RETRIES = broker_permissions.RETRIES
RPC_CALLS, RPC_SERVERS, permissions = (
    broker_permissions.RPC_CALLS,
    broker_permissions.RPC_SERVERS,
    broker_permissions.permissions,
)

CLASSES = {
    "accounts": AccountsService,
    "catalog": CatalogService,
    "carts": CartsService,
    "payments": PaymentsService,
    "orders": OrdersService,
    "gateway": GatewayService,
}


def what_it_does(app):
    """(serves RPC, the services it calls, emits events, event sources it handles) read off the class."""
    container = ServiceContainer(CLASSES[app], {"AMQP_URI": "memory://"})
    serves = any(isinstance(entrypoint, RpcEntrypoint) for entrypoint in container.entrypoints)
    calls = sorted(dependency.target_service for dependency in container.dependencies if isinstance(dependency, Rpc))
    emits = any(isinstance(dependency, Outbox) for dependency in container.dependencies)
    handles = sorted(
        {entrypoint.source_service for entrypoint in container.entrypoints if isinstance(entrypoint, EventHandler)}
    )
    retries = any(isinstance(entrypoint, ReliableEventHandler) for entrypoint in container.entrypoints)
    return serves, calls, emits, handles, retries


@pytest.mark.parametrize("app", APPS)
def test_tables_match_the_service_classes(app):
    assert what_it_does(app) == (
        app in RPC_SERVERS,
        sorted(RPC_CALLS.get(app, ())),
        app in EMITS,
        sorted(HANDLES.get(app, ())),
        app in RETRIES,
    )


def allowed(app, kind, name):
    return re.fullmatch(permissions(app)[kind], name) is not None


def test_each_app_may_read_only_its_own_queues():
    for app in APPS:
        for other in RPC_SERVERS:
            assert allowed(app, "read", f"rpc-{other}") == (other == app), (app, other)
            assert not allowed(app, "read", f"parked-{other}") or other == app
        assert allowed(app, "read", f"rpc.reply-{app}-{uuid.uuid4()}") == (app in RPC_CALLS)
        assert not allowed(app, "read", f"rpc.reply-someone-{uuid.uuid4()}")
        assert not allowed(app, "configure", "rpc-catalogue") or app == "catalogue"
        assert allowed(app, "write", "amq.default") == (app in RETRIES)
    assert allowed("carts", "read", "evt-orders-order_failed--carts.reopen_after_failed_order")
    assert allowed("carts", "configure", "evt-orders-order_failed--carts.reopen_after_failed_order.retry")
    assert not allowed("carts", "read", "evt-catalog-product_changed--gateway.on_product_changed")
    assert not allowed("carts", "write", "orders.events") and allowed("orders", "write", "orders.events")


@pytest.fixture
def app_users(rabbit_manager, rabbit_config, tmp_path):
    """Factory: `app_users(app)` → an AMQP URI on the test's vhost as `app`'s broker user, made the way
    compose makes it: docker/make_secrets.py writes definitions.json (password hashes and permissions), which
    is imported here through the management API (users renamed, vhost / replaced by the test's own), and the
    app logs in with the password the generator put in its AMQP_URI. The users are deleted afterwards."""
    make_secrets.make_secrets(str(tmp_path / "secrets"), environ={})
    definitions = json.loads((tmp_path / "secrets" / "rabbitmq" / make_secrets.DEFINITIONS).read_text())
    prefix = f"test-{uuid.uuid4().hex[:8]}-"
    made = []

    def make(app):
        user = next(user for user in definitions["users"] if user["name"] == app)
        granted = next(grant for grant in definitions["permissions"] if grant["user"] == app)
        assert {key: granted[key] for key in ("configure", "write", "read")} == permissions(app)
        rabbit_manager._post(
            "definitions",
            json={
                "users": [dict(user, name=prefix + app)],
                "permissions": [dict(granted, user=prefix + app, vhost=rabbit_config["vhost"])],
            },
        )
        made.append(prefix + app)
        uri = urlsplit((tmp_path / "secrets" / app / "AMQP_URI").read_text())
        assert uri.username == app
        return f"pyamqp://{prefix}{app}:{uri.password}@localhost:5672/{rabbit_config['vhost']}"

    yield make
    for name in made:
        rabbit_manager._delete("users", name)


@pytest.fixture
def services_as_their_users(app_users, service_config, tmp_path, container_factory):
    """catalog, carts and the gateway running as their own users (SQLite: the broker is what is tested here).
    Returns ({app: AMQP URI}, the gateway's base URL)."""
    uris = {}
    for app, cls in [("catalog", CatalogService), ("carts", CartsService)]:
        url = f"sqlite:///{tmp_path / f'{app}.db'}"
        upgrade(app, url)
        uris[app] = app_users(app)
        config = service_config(
            app,
            AMQP_URI=uris[app],
            DATABASE_URL=url,
            EVENT_MAX_ATTEMPTS=2,
            EVENT_RETRY_SECONDS=0.1,
            OUTBOX_POLL_SECONDS=0.2,
        )
        container_factory(cls, config).start()
    uris["gateway"] = app_users("gateway")
    port = find_free_port()
    container_factory(
        GatewayService,
        service_config(
            "gateway", AMQP_URI=uris["gateway"], JWT_SECRET=uuid.uuid4().hex * 2, WEB_SERVER_ADDRESS=f"127.0.0.1:{port}"
        ),
    ).start()
    return uris, f"http://127.0.0.1:{port}"


def message_count(amqp_uri, queue_name):
    with Connection(amqp_uri) as connection:
        try:
            return connection.default_channel.queue_declare(queue_name, passive=True).message_count
        except Exception:  # not declared yet
            return 0


def test_services_work_with_their_own_users_and_no_more(services_as_their_users, rabbit_config, app_users):
    uris, gateway_url = services_as_their_users
    # The gateway calls catalog (its reply queue, its broadcast queue for product_changed declared at start).
    response = requests.get(f"{gateway_url}/products/NO-SUCH-SKU", timeout=15)
    assert response.status_code == 404 and response.json()["error"]["code"] == "not_found"
    user_id = str(uuid.uuid4())
    with ClusterRpcProxy({"AMQP_URI": rabbit_config["AMQP_URI"]}, timeout=15) as cluster:
        cart = cluster.carts.create_cart(user_id)  # carts serves RPC
        with pytest.raises(UnknownProduct):  # carts asked catalog (RPC client: reply queue) and got an answer
            cluster.carts.add_item(user_id, cart["id"], "NO-SUCH-SKU", 1)
        with pytest.raises(NotFound):
            cluster.catalog.get_product("NO-SUCH-SKU")

    # A broken orders.order_failed event: carts' handler fails, retries once through its .retry queue and
    # parks it (declares with a dead-letter exchange, publishes through amq.default): all with its own user.
    event_dispatcher({"AMQP_URI": rabbit_config["AMQP_URI"]})("orders", "order_failed", {"event_id": "e1"})
    wait_until(
        lambda: message_count(rabbit_config["AMQP_URI"], "parked-carts") >= 1,
        timeout=20,
        interval=0.1,
        what="the broken event parked",
    )
    assert (
        message_count(rabbit_config["AMQP_URI"], "evt-orders-order_failed--carts.reopen_after_failed_order.retry") == 0
    )

    carts_uri = uris["carts"]
    # An events exchange carts handles nothing from (carts now reads catalog's and orders' events).
    with Connection(rabbit_config["AMQP_URI"]) as connection:
        Exchange("payments.events", type="topic", durable=True)(connection.channel()).declare()
    refusals = [
        lambda channel: channel.basic_consume("rpc-catalog", callback=lambda message: None),
        lambda channel: channel.queue_declare("rpc-catalog", durable=True),
        lambda channel: channel.queue_bind("parked-carts", "payments.events", "#"),
        lambda channel: Queue(
            f"rpc.reply-orders-{uuid.uuid4()}", Exchange("nameko-rpc", type="topic", durable=True), routing_key="x"
        )(channel).declare(),
    ]
    for attempt in refusals:
        with Connection(carts_uri) as connection:
            with pytest.raises(AccessRefused):
                attempt(connection.channel())
    # ...while its own queue it may consume.
    with Connection(carts_uri) as connection:
        assert connection.channel().basic_consume("parked-carts", callback=lambda message: None)

    # The gateway's user may read queue statistics of its vhost (GET /services); an app user may not.
    def api_uri(amqp_uri):
        parts = urlsplit(amqp_uri)
        return f"http://{parts.username}:{parts.password}@localhost:15672/api"

    queues = queue_stats(api_uri(uris["gateway"]), rabbit_config["vhost"], 5)
    assert "rpc-carts" in queues
    assert any(name.startswith("evt-catalog-product_changed--gateway.") for name in queues)
    assert any(name.startswith("rpc.reply-gateway-") for name in queues)
    with pytest.raises(ServiceUnavailable):
        queue_stats(api_uri(carts_uri), rabbit_config["vhost"], 5)
