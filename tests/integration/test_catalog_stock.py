"""Stock holds of the catalog in real containers on the real broker, on SQLite and PostgreSQL: all-or-nothing
reserves, idempotent transitions, expiry, the audit, and races between containers sharing one database."""

import uuid

import pytest
from alembic import command
from eventlet.queue import Empty, Queue
from nameko.events import event_handler
from nameko.standalone.rpc import ClusterRpcProxy, ServiceRpcProxy
from sqlalchemy import create_engine, insert, select, text
from sqlalchemy.exc import IntegrityError

from services.catalog.models import Product, StockHold
from services.catalog.service import CatalogService
from services.common.clock import utcnow
from services.common.errors import Conflict, OutOfStock, ValidationFailed
from services.common.migrate import alembic_config, upgrade
from tests.integration.test_catalog_service import stop_background_work
from tests.waiting import wait_until

EVENT_TIMEOUT = 5


def product(sku, stock, price_cents=500):
    return {"sku": sku, "name": f"Product {sku}", "description": "", "price_cents": price_cents, "stock": stock}


def new_order():
    return str(uuid.uuid4())


@pytest.fixture
def database_url(fresh_database):
    return fresh_database("catalog")


@pytest.fixture
def db(database_url):
    """An engine on the catalog's database, to look behind the service's back (and to corrupt it)."""
    engine = create_engine(database_url)
    yield engine
    engine.dispose()


@pytest.fixture
def catalog_config(service_config, database_url):
    return service_config("catalog", DATABASE_URL=database_url, OUTBOX_POLL_SECONDS=0.2)


@pytest.fixture
def start_catalog(catalog_config, container_factory):
    """Factory: `start_catalog(**overrides)` starts one more catalog container on the test's database."""
    containers = []

    def start(**overrides):
        container = container_factory(CatalogService, dict(catalog_config, **overrides))
        container.start()
        containers.append(container)
        return container

    yield start
    stop_background_work(*containers)


@pytest.fixture
def catalog(start_catalog, catalog_config):
    """One started catalog container; yields a standalone RPC proxy to it."""
    start_catalog()
    with ServiceRpcProxy("catalog", catalog_config) as proxy:
        yield proxy


def stocks(catalog, *skus):
    return [product["stock"] for product in catalog.get_products(list(skus))]


def on_hand(db, sku):
    with db.connect() as connection:
        return connection.execute(select(Product.on_hand).where(Product.sku == sku)).scalar_one()


def assert_audit_clean(catalog):
    audit = catalog.stock_audit()
    assert audit["breaches"] == []
    return audit["holds"]


def outcome(call):
    """What a reserve call came to: the hold's status, or "out_of_stock"."""
    try:
        return call()["status"]
    except OutOfStock:
        return "out_of_stock"


# Migration ------------------------------------------------------------------------------------------------


def test_migration_puts_existing_stock_on_hand_and_goes_back_down(bare_database):
    url = bare_database("catalog")
    upgrade("catalog", url, "0001")
    engine = create_engine(url)
    with engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO products (sku, name, description, price_cents, stock, created_at, updated_at) "
                "VALUES ('OLD', 'Old', '', 100, 7, :now, :now)"
            ),
            {"now": utcnow()},
        )
    upgrade("catalog", url, "0002")
    with engine.connect() as connection:
        assert connection.execute(text("SELECT stock, on_hand FROM products")).one() == (7, 7)
    with pytest.raises(IntegrityError):  # the database itself refuses negative stock
        with engine.begin() as connection:
            connection.execute(text("UPDATE products SET stock = -1"))
    command.downgrade(alembic_config("catalog", url), "0001")
    with engine.connect() as connection:
        assert connection.execute(text("SELECT sku, stock FROM products")).one() == ("OLD", 7)
    engine.dispose()


# One caller -----------------------------------------------------------------------------------------------


def test_reserve_holds_every_line(catalog, db):
    catalog.create_product(product("CUP", 5))
    catalog.create_product(product("MUG", 3))
    order = new_order()
    lines = [{"sku": "MUG", "quantity": 3}, {"sku": "CUP", "quantity": 2}]
    assert catalog.reserve_stock(order, lines) == {"status": "held"}
    assert stocks(catalog, "CUP", "MUG") == [3, 0]
    assert (on_hand(db, "CUP"), on_hand(db, "MUG")) == (5, 3)
    assert assert_audit_clean(catalog) == {order: "held"}


def test_reserve_is_all_or_nothing(catalog):
    catalog.create_product(product("CUP", 5))
    catalog.create_product(product("MUG", 1))
    catalog.create_product(product("PLATE", 9))
    # CUP comes first in sku order and is taken before MUG is found short: the rollback must give it back.
    lines = [{"sku": "PLATE", "quantity": 1}, {"sku": "MUG", "quantity": 2}, {"sku": "CUP", "quantity": 5}]
    with pytest.raises(OutOfStock) as failure:
        catalog.reserve_stock(new_order(), lines)
    assert failure.value.details == {"sku": "MUG"}

    with pytest.raises(OutOfStock) as failure:
        catalog.reserve_stock(new_order(), [{"sku": "CUP", "quantity": 1}, {"sku": "NOPE", "quantity": 1}])
    assert failure.value.details == {"sku": "NOPE"}  # an unknown sku cannot be bought either

    assert stocks(catalog, "CUP", "MUG", "PLATE") == [5, 1, 9]
    assert assert_audit_clean(catalog) == {}


def test_bad_input_is_refused_and_writes_nothing(catalog):
    catalog.create_product(product("MUG", 3))
    good_lines = [{"sku": "MUG", "quantity": 1}]
    for order_id, lines, fields in [
        ("not-a-uuid", good_lines, {"order_id"}),
        (None, good_lines, {"order_id"}),
        (new_order(), [], {"lines"}),
        (new_order(), [{"sku": "MUG", "quantity": 0}], {"lines[0].quantity"}),
        (new_order(), [{"sku": "MUG", "quantity": 1}, {"sku": "MUG", "quantity": 1}], {"lines[1].sku"}),
        (new_order(), [{"sku": "MUG", "quantity": "1"}], {"lines[0].quantity"}),
    ]:
        with pytest.raises(ValidationFailed) as failure:
            catalog.reserve_stock(order_id, lines)
        assert set(failure.value.details["fields"]) == fields
    for method in (catalog.commit_stock, catalog.release_stock):
        with pytest.raises(ValidationFailed):
            method("12")
    assert stocks(catalog, "MUG") == [3]
    assert assert_audit_clean(catalog) == {}


def test_reserve_is_idempotent(catalog):
    catalog.create_product(product("MUG", 5))
    order = new_order()
    assert catalog.reserve_stock(order, [{"sku": "MUG", "quantity": 2}]) == {"status": "held"}
    assert catalog.reserve_stock(order, [{"sku": "MUG", "quantity": 2}]) == {"status": "held"}
    assert stocks(catalog, "MUG") == [3]
    catalog.commit_stock(order)
    # The order's hold answers, even for other lines: nothing more is taken.
    assert catalog.reserve_stock(order, [{"sku": "MUG", "quantity": 1}]) == {"status": "committed"}
    assert stocks(catalog, "MUG") == [3]
    assert assert_audit_clean(catalog) == {order: "committed"}


def test_commit_and_release_transitions(catalog, db):
    catalog.create_product(product("MUG", 5))
    sold, dropped = new_order(), new_order()
    catalog.reserve_stock(sold, [{"sku": "MUG", "quantity": 2}])
    catalog.reserve_stock(dropped, [{"sku": "MUG", "quantity": 1}])

    assert catalog.commit_stock(sold) == {"status": "committed"}
    assert catalog.commit_stock(sold) == {"status": "committed"}  # idempotent
    assert stocks(catalog, "MUG") == [2]  # committing sells what was held: stock does not move
    assert assert_audit_clean(catalog) == {sold: "committed", dropped: "held"}

    assert catalog.release_stock(dropped) == {"status": "released"}  # held → released
    assert catalog.release_stock(dropped) == {"status": "released"}  # idempotent: given back once
    assert stocks(catalog, "MUG") == [3]
    assert catalog.release_stock(sold) == {"status": "released"}  # committed → released (a cancel)
    assert stocks(catalog, "MUG") == [5]
    assert on_hand(db, "MUG") == 5

    for order in (sold, dropped):
        with pytest.raises(Conflict):
            catalog.commit_stock(order)
        with pytest.raises(Conflict):
            catalog.reserve_stock(order, [{"sku": "MUG", "quantity": 1}])
    with pytest.raises(Conflict):
        catalog.commit_stock(new_order())  # no hold at all
    assert stocks(catalog, "MUG") == [5]
    assert assert_audit_clean(catalog) == {sold: "released", dropped: "released"}


def test_release_before_reserve_leaves_a_tombstone(catalog):
    catalog.create_product(product("MUG", 5))
    late = new_order()
    assert catalog.release_stock(late) == {"status": "released"}
    assert catalog.release_stock(late) == {"status": "released"}
    with pytest.raises(Conflict):
        catalog.reserve_stock(late, [{"sku": "MUG", "quantity": 1}])
    assert stocks(catalog, "MUG") == [5]
    assert assert_audit_clean(catalog) == {late: "released"}


def test_setting_stock_moves_on_hand_by_the_difference(catalog, db):
    catalog.create_product(product("MUG", 5))
    sold, held = new_order(), new_order()
    catalog.reserve_stock(sold, [{"sku": "MUG", "quantity": 1}])
    catalog.commit_stock(sold)
    catalog.reserve_stock(held, [{"sku": "MUG", "quantity": 2}])
    assert (stocks(catalog, "MUG"), on_hand(db, "MUG")) == ([2], 5)

    assert catalog.update_product("MUG", {"stock": 10}) == product("MUG", 10)  # still the five fields
    assert on_hand(db, "MUG") == 13  # 10 available + 2 held + 1 sold
    catalog.update_product("MUG", {"stock": 0, "name": "Product MUG"})
    assert on_hand(db, "MUG") == 3
    catalog.release_stock(held)
    assert (stocks(catalog, "MUG"), on_hand(db, "MUG")) == ([2], 3)
    assert assert_audit_clean(catalog) == {sold: "committed", held: "released"}


def test_audit_reports_stock_that_does_not_add_up(catalog, db):
    catalog.create_product(product("CUP", 4))
    catalog.create_product(product("MUG", 5))
    catalog.reserve_stock(new_order(), [{"sku": "MUG", "quantity": 2}])
    assert_audit_clean(catalog)
    with db.begin() as connection:
        connection.execute(text("UPDATE products SET stock = stock + 1 WHERE sku = 'MUG'"))
    assert catalog.stock_audit()["breaches"] == ["product MUG: on_hand 5 != stock 4 + held 2 + committed 0 (= 6)"]


def test_stock_changes_are_announced(runner_factory, catalog_config):
    received = Queue()

    class Listener:
        name = "stock_listener"

        @event_handler("catalog", "product_changed")
        def on_product_changed(self, payload):
            received.put(("product_changed", payload["product"], payload["product_version"]))

        @event_handler("catalog", "stock_changed")
        def on_stock_changed(self, payload):
            received.put(("stock_changed", payload["sku"], payload["stock"], payload["product_version"]))

    def next_event():
        try:
            return received.get(timeout=EVENT_TIMEOUT)
        except Empty:
            pytest.fail(f"no product_changed or stock_changed event within {EVENT_TIMEOUT} s")

    runner = runner_factory(catalog_config, CatalogService, Listener)
    runner.start()
    order = new_order()
    with ServiceRpcProxy("catalog", catalog_config) as catalog:
        catalog.create_product(product("MUG", 5))
        assert next_event() == ("product_changed", product("MUG", 5), 1)
        catalog.reserve_stock(order, [{"sku": "MUG", "quantity": 2}])
        assert next_event() == ("stock_changed", "MUG", 3, 2)
        with pytest.raises(OutOfStock):
            catalog.reserve_stock(new_order(), [{"sku": "MUG", "quantity": 4}])
        catalog.commit_stock(order)  # stock does not move: nothing to announce
        catalog.release_stock(order)
        # The next event is the release's: the refused reserve and the commit announced nothing.
        assert next_event() == ("stock_changed", "MUG", 5, 3)
        assert received.empty()
    stop_background_work(*runner.containers)


def test_expired_holds_are_released_by_the_timer(start_catalog, catalog_config):
    start_catalog(RESERVATION_TTL_SECONDS=1)
    with ServiceRpcProxy("catalog", catalog_config) as catalog:
        catalog.create_product(product("MUG", 5))
        sold, forgotten = new_order(), new_order()
        catalog.reserve_stock(sold, [{"sku": "MUG", "quantity": 1}])
        catalog.commit_stock(sold)  # a committed hold is sold: it never expires
        catalog.reserve_stock(forgotten, [{"sku": "MUG", "quantity": 2}])
        assert stocks(catalog, "MUG") == [2]

        # `forgotten` expires after `sold` would have: by the time it is released, the sweep has seen both.
        wait_until(lambda: catalog.stock_audit()["holds"][forgotten] == "released")
        assert stocks(catalog, "MUG") == [4]
        assert assert_audit_clean(catalog) == {sold: "committed", forgotten: "released"}
        with pytest.raises(Conflict):
            catalog.commit_stock(forgotten)
        with pytest.raises(Conflict):
            catalog.reserve_stock(forgotten, [{"sku": "MUG", "quantity": 2}])


def test_the_sweep_leaves_holds_that_have_not_expired(catalog, db):
    catalog.create_product(product("MUG", 5))
    fresh, stale = new_order(), new_order()
    catalog.reserve_stock(fresh, [{"sku": "MUG", "quantity": 1}])  # expires in 600 s
    # A hold left by an order that died long ago, written as reserve would have (stock taken, hold recorded).
    with db.begin() as connection:
        connection.execute(text("UPDATE products SET stock = stock - 2 WHERE sku = 'MUG'"))
        long_ago = utcnow().replace(year=2020)
        connection.execute(
            insert(StockHold).values(
                order_id=stale, status="held", expires_at=long_ago, created_at=long_ago, updated_at=long_ago
            )
        )
        connection.execute(
            text("INSERT INTO stock_hold_lines (order_id, sku, quantity) VALUES (:o, 'MUG', 2)"), {"o": stale}
        )
    wait_until(lambda: catalog.stock_audit()["holds"][stale] == "released")
    assert stocks(catalog, "MUG") == [4]
    assert assert_audit_clean(catalog) == {fresh: "held", stale: "released"}


# Races between containers on one database ---------------------------------------------------------------


@pytest.fixture
def two_catalogs(start_catalog, catalog_config):
    """Two catalog containers on the same database and queue, several workers each; yields a cluster proxy."""
    start_catalog(max_workers=6)
    start_catalog(max_workers=6)
    with ClusterRpcProxy(catalog_config) as cluster:
        yield cluster.catalog


def test_twelve_buyers_race_for_five_units(two_catalogs, db):
    catalog = two_catalogs
    catalog.create_product(product("MUG", 5))
    orders = [new_order() for _ in range(12)]
    calls = [catalog.reserve_stock.call_async(order, [{"sku": "MUG", "quantity": 1}]) for order in orders]
    results = [outcome(call.result) for call in calls]
    assert sorted(results) == ["held"] * 5 + ["out_of_stock"] * 7
    assert stocks(catalog, "MUG") == [0]
    assert on_hand(db, "MUG") == 5
    holds = assert_audit_clean(catalog)
    assert holds == {order: "held" for order, result in zip(orders, results, strict=True) if result == "held"}


def test_concurrent_reserves_of_one_order_hold_once(two_catalogs):
    catalog = two_catalogs
    catalog.create_product(product("MUG", 5))
    order = new_order()
    calls = [catalog.reserve_stock.call_async(order, [{"sku": "MUG", "quantity": 2}]) for _ in range(8)]
    assert [call.result() for call in calls] == [{"status": "held"}] * 8
    assert stocks(catalog, "MUG") == [3]
    assert assert_audit_clean(catalog) == {order: "held"}


def test_concurrent_releases_give_back_once(two_catalogs):
    catalog = two_catalogs
    catalog.create_product(product("MUG", 5))
    order = new_order()
    catalog.reserve_stock(order, [{"sku": "MUG", "quantity": 3}])
    calls = [catalog.release_stock.call_async(order) for _ in range(2)]
    assert [call.result() for call in calls] == [{"status": "released"}] * 2
    assert stocks(catalog, "MUG") == [5]
    assert assert_audit_clean(catalog) == {order: "released"}


def test_reserve_racing_release_of_the_same_order_ends_released(two_catalogs):
    catalog = two_catalogs
    catalog.create_product(product("MUG", 50))
    orders = [new_order() for _ in range(6)]
    calls = []
    for order in orders:  # whichever comes first, the order must end with its stock given back
        calls.append(catalog.reserve_stock.call_async(order, [{"sku": "MUG", "quantity": 1}]))
        calls.append(catalog.release_stock.call_async(order))
    for reserve, release in zip(calls[::2], calls[1::2], strict=True):
        try:
            assert reserve.result() == {"status": "held"}  # then the release that followed undid it
        except Conflict:
            pass  # the tombstone came first
        assert release.result() == {"status": "released"}
    assert stocks(catalog, "MUG") == [50]
    assert assert_audit_clean(catalog) == {order: "released" for order in orders}
