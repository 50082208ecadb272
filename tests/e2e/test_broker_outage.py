"""RabbitMQ unreachable while the system runs: the gateway answers 503 at once instead of hanging (and still
answers products it holds), writes made meanwhile keep their events in the outbox, and once the broker is back
every service and the gateway reconnect by themselves and the held events are published, in order, within
seconds.

The outage is a TCP proxy between this system and the local broker, which the test cuts (every connection
closed, new ones refused: what clients see when RabbitMQ stops) and restores. Not `rabbitmqctl stop_app`: the
broker is shared by every other test and process on the machine (and its management API makes the test vhosts),
so stopping it would fail them too; the proxy cuts off this system alone.
"""

import time
import uuid

import eventlet
import pytest
from nameko.events import event_handler
from nameko.testing.services import entrypoint_hook
from prometheus_client import REGISTRY
from sqlalchemy import text

from gateway_http.cache import ProductCache
from services.common.db import make_engine
from services.common.outbox import MAX_RETRY_SECONDS
from tests.broker_proxy import TcpProxy
from tests.e2e.conftest import ADMIN_EMAIL, Client, assert_error, running_system
from tests.waiting import wait_until


class Observer:
    """Sees catalog's product_changed events on its own connection, straight to the broker (never cut)."""

    name = "outage_observer"
    seen = []

    @event_handler("catalog", "product_changed")
    def on_product_changed(self, payload):
        self.seen.append(payload)


@pytest.fixture
def proxy():
    proxy = TcpProxy()
    try:
        yield proxy
    finally:
        proxy.close()


@pytest.fixture
def cut_off_system(system, vhost_pipeline, tmp_path, proxy):
    """A system of its own whose every connection to the broker goes through `proxy`."""
    with running_system(system.backend, vhost_pipeline, tmp_path, broker=f"127.0.0.1:{proxy.port}") as own:
        yield own


# Prices set while the broker is away, in this order; their events must go out in the same order.
HELD_PRICES = [230, 240, 250]
# Once the broker is back, the relay's next try comes within its longest back-off (services/common/outbox.py).
RELAY_RECOVERY_SECONDS = MAX_RETRY_SECONDS + 3


def held_prices_seen(sku):
    """Which of HELD_PRICES the observer heard `sku` changed to, in the order first heard."""
    heard = [event["product"]["price_cents"] for event in Observer.seen if event["product"]["sku"] == sku]
    return list(dict.fromkeys(price for price in heard if price in HELD_PRICES))


def unpublished_events(system):
    engine = make_engine(system.database_urls["catalog"])
    with engine.connect() as connection:
        count = connection.execute(text("SELECT count(*) FROM outbox WHERE published_at IS NULL")).scalar_one()
    engine.dispose()
    return count


def gateway_events_handled():
    return (
        REGISTRY.get_sample_value(
            "cartmesh_entrypoint_calls_total",
            {"service": "gateway", "entrypoint": "on_product_changed", "kind": "event", "outcome": "success"},
        )
        or 0
    )


def product_cache(system):
    [cache] = [
        dependency for dependency in system.containers["gateway"].dependencies if isinstance(dependency, ProductCache)
    ]
    return cache


def test_broker_outage(cut_off_system, proxy, container_factory):
    system = cut_off_system
    Observer.seen = []
    direct_uri = system.amqp_uri.replace(f"127.0.0.1:{proxy.port}", "localhost:5672")
    container_factory(Observer, {"AMQP_URI": direct_uri}).start()
    admin = system.client().login(ADMIN_EMAIL, system.admin_password)
    anon = system.client()
    held, other = (f"SKU-{uuid.uuid4().hex[:10]}" for _ in range(2))
    events_before = gateway_events_handled()
    for sku in (held, other):
        assert (
            admin.post("/products", json={"sku": sku, "name": sku, "price_cents": 100, "stock": 5}).status_code == 201
        )
    # Once the gateway has heard both creations (a later event would drop it again), it holds `held`.
    wait_until(lambda: gateway_events_handled() - events_before >= 2, timeout=30, interval=0.1)
    assert anon.get(f"/products/{held}").status_code == 200
    assert held in product_cache(system).products.entries
    timeout = system.configs["gateway"]["RPC_TIMEOUT"]

    proxy.cut()
    try:
        # The gateway does not wait for a broker that is not there: 503 well before its RPC timeout.
        started = time.monotonic()
        error = assert_error(anon.get(f"/products/{other}"), 503, "service_unavailable")
        assert time.monotonic() - started < timeout
        assert "broker" in error["message"] or "circuit" in error["message"]
        assert_error(admin.patch(f"/products/{other}", json={"price_cents": 7}), 503, "service_unavailable")
        # What it holds it still answers.
        assert anon.get(f"/products/{held}").json()["price_cents"] == 100

        # Changes made in catalog meanwhile (workers run in-process: no RPC can reach it) keep their events; the
        # relay's publishes fail at once and it backs off instead of waiting on the broker.
        for price in HELD_PRICES:
            with entrypoint_hook(system.containers["catalog"], "update_product") as update_product:
                assert update_product(held, {"price_cents": price})["price_cents"] == price
        assert unpublished_events(system) == len(HELD_PRICES)
        eventlet.sleep(0)
        assert not held_prices_seen(held)
    finally:
        proxy.restore()
    restored = time.monotonic()

    # Everything reconnects by itself: the held events are published soon, in order, and the gateway serves fresh
    # data again.
    wait_until(lambda: held_prices_seen(held) == HELD_PRICES, timeout=RELAY_RECOVERY_SECONDS, interval=0.1)
    print(f"the relay published the held events {time.monotonic() - restored:.1f} s after the broker came back")
    wait_until(lambda: unpublished_events(system) == 0, timeout=30, interval=0.1)
    wait_until(
        lambda: anon.get(f"/products/{held}").json().get("price_cents") == HELD_PRICES[-1], timeout=30, interval=0.1
    )
    wait_until(
        lambda: admin.patch(f"/products/{other}", json={"price_cents": 8}).status_code == 200, timeout=30, interval=0.1
    )
    assert anon.get(f"/products/{other}").json()["price_cents"] == 8
    user = system.new_user()
    cart = user.post("/carts", json={"items": [{"sku": other, "quantity": 2}]})  # gateway → carts → catalog
    assert cart.status_code == 201 and cart.json()["total_cents"] == 16
    health = Client(system.base_url).get("/health")
    assert health.status_code == 200, health.text
