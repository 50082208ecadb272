"""The gateway under faults, over HTTP: the product cache kept consistent across gateway instances by broadcast
`product_changed` events, and the circuit breaker answering 503 at once for a backend that stopped answering."""

import uuid

from nameko.containers import ServiceContainer
from nameko.testing.utils import find_free_port
from prometheus_client import REGISTRY
from sqlalchemy import text

from gateway_http.service import GatewayService
from services.common.db import make_engine
from tests.e2e.conftest import Client, assert_error
from tests.waiting import wait_until


def second_gateway(system):
    """Another gateway instance on the same system: (client factory, container); kill the container after."""
    port = find_free_port()
    container = ServiceContainer(
        GatewayService, dict(system.configs["gateway"], WEB_SERVER_ADDRESS=f"127.0.0.1:{port}")
    )
    container.start()
    return f"http://127.0.0.1:{port}", container


def set_price_behind_catalogs_back(system, sku, price):
    """A write no event announces: only a cache that answers from memory still shows the old price."""
    engine = make_engine(system.database_urls["catalog"])
    with engine.begin() as connection:
        connection.execute(
            text("UPDATE products SET price_cents = :price WHERE sku = :sku"), {"price": price, "sku": sku}
        )
    engine.dispose()


def test_a_price_change_is_seen_at_once_by_its_gateway_and_on_the_event_by_another(system, admin, product):
    sku = product["sku"]
    url, container = second_gateway(system)
    try:
        other = Client(url)
        here = system.client()
        # Both instances read the product, so both hold it.
        assert here.get(f"/products/{sku}").json()["price_cents"] == 1250
        assert other.get(f"/products/{sku}").json()["price_cents"] == 1250
        page = {"q": sku}
        assert other.get("/products", params=page).json()["items"][0]["price_cents"] == 1250

        set_price_behind_catalogs_back(system, sku, 1)
        # Answered from memory: neither instance asks catalog again.
        assert here.get(f"/products/{sku}").json()["price_cents"] == 1250
        assert other.get(f"/products/{sku}").json()["price_cents"] == 1250
        assert other.get("/products", params=page).json()["items"][0]["price_cents"] == 1250

        changed = admin.patch(f"/products/{sku}", json={"price_cents": 1999})
        assert changed.status_code == 200 and changed.json()["price_cents"] == 1999
        # The instance that made the change dropped the product itself: its next read is the new price.
        assert here.get(f"/products/{sku}").json()["price_cents"] == 1999
        # The other one drops it when the product_changed broadcast reaches it: the product and its pages.
        wait_until(lambda: other.get(f"/products/{sku}").json()["price_cents"] == 1999)
        wait_until(lambda: other.get("/products", params=page).json()["items"][0]["price_cents"] == 1999)
    finally:
        container.kill()


def test_every_gateway_instance_has_its_own_broadcast_queue(system):
    url, container = second_gateway(system)
    try:
        [extension] = [
            entrypoint for entrypoint in container.entrypoints if entrypoint.method_name == "on_product_changed"
        ]
        [first] = [
            entrypoint
            for entrypoint in system.containers["gateway"].entrypoints
            if entrypoint.method_name == "on_product_changed"
        ]
        # Two queues, each exclusive to its instance: both get every event (a competing consumer would not).
        assert extension.queue.name != first.queue.name
        assert extension.queue.exclusive and first.queue.exclusive
        assert extension.queue.name.startswith("evt-catalog-product_changed--gateway.on_product_changed-")
    finally:
        container.kill()


def failures(reason):
    return (
        REGISTRY.get_sample_value(
            "cartmesh_rpc_client_failures_total", {"service": "gateway", "target": "catalog", "reason": reason}
        )
        or 0
    )


def circuit(target):
    return REGISTRY.get_sample_value("cartmesh_circuit_state", {"service": "gateway", "target": target})


def test_the_circuit_to_a_silent_backend_opens_answers_503_at_once_and_closes_when_it_is_back(own_system):
    system = own_system
    # Short waits so that the test opens the circuit quickly: two calls with no answer open it.
    system.stop("gateway")
    system.configs["gateway"].update(BREAKER_FAILURES=2, RPC_TIMEOUTS={"catalog": 0.5})
    system.start("gateway")
    user = system.new_user()
    sku = f"SKU-{uuid.uuid4().hex[:10]}"  # unknown: never cached, so every read asks catalog
    assert_error(user.get(f"/products/{sku}"), 404, "not_found")
    assert circuit("catalog") == 0

    catalog = system.stop("catalog")
    try:
        refused_before = failures("circuit_open")
        # No answer: the read waits its timeout, is retried once, waits again: 503, and two failures in a row.
        error = assert_error(user.get(f"/products/{sku}"), 503, "service_unavailable")
        assert "circuit" not in error["message"]
        assert circuit("catalog") == 2
        # Open: refused without calling catalog at all.
        error = assert_error(user.get(f"/products/{sku}"), 503, "service_unavailable")
        assert "circuit is open" in error["message"]
        assert failures("circuit_open") - refused_before == 1
        # One backend's circuit is its own: carts still answers.
        assert user.get("/carts").status_code == 200
        assert circuit("carts") == 0
    finally:
        system.start(catalog)
    # Back: after BREAKER_RESET_SECONDS (1 s here) a probe gets through and closes the circuit.
    wait_until(lambda: user.get(f"/products/{sku}").status_code == 404)
    assert circuit("catalog") == 0
