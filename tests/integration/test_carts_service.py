"""The carts service in real containers on the real broker and a real database (SQLite and PostgreSQL),
with a small in-memory stand-in for the catalog at the RPC boundary, and catalog's product_changed events sent
by the tests."""

import uuid
from datetime import UTC, datetime

import eventlet
import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from nameko.extensions import DependencyProvider
from nameko.rpc import rpc
from nameko.standalone.events import event_dispatcher
from nameko.standalone.rpc import ServiceRpcProxy
from nameko.testing.services import entrypoint_waiter
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from services.carts import store
from services.carts.models import Base, cart_lines, carts, products
from services.carts.service import CartsService
from services.common.db import make_engine
from services.common.errors import Conflict, NotFound, ServiceUnavailable, UnknownProduct, ValidationFailed

NOON = datetime(2026, 1, 1, 12, tzinfo=UTC)
ALICE = str(uuid.uuid4())
BOB = str(uuid.uuid4())

# What the fake catalog serves; reset for every test, changed by tests to play "the catalog changed".
PRODUCTS = {}
# The sku lists carts asked the fake catalog's get_products for, in order.
ASKED = []


def product(sku, name, price_cents, version=1):
    """A product as catalog's get_products answers it (with its version)."""
    return {"sku": sku, "name": name, "description": "", "price_cents": price_cents, "stock": 100, "version": version}


class FakeCatalog:
    """The catalog's read methods over `PRODUCTS` (the carts service's only collaborator)."""

    name = "catalog"

    @rpc
    def get_products(self, skus):
        ASKED.append(sorted(skus))
        return [dict(PRODUCTS[sku]) for sku in sorted(set(skus)) if sku in PRODUCTS]

    @rpc(expected_exceptions=NotFound)
    def get_product(self, sku):
        if sku not in PRODUCTS:
            raise NotFound("no such product", {"sku": sku})
        return dict(PRODUCTS[sku])

    @rpc
    def health(self):
        return "ok"


@pytest.fixture(autouse=True)
def catalog():
    ASKED.clear()
    PRODUCTS.clear()
    PRODUCTS.update(
        {
            "APPLE": product("APPLE", "Apple", 120),
            "BREAD": product("BREAD", "Bread", 250),
            "CHEESE": product("CHEESE", "Cheese", 799),
        }
    )
    return PRODUCTS


@pytest.fixture
def db_url(fresh_database):
    return fresh_database("carts")


@pytest.fixture
def db(db_url):
    """An engine on the service's database, to look behind the service's back."""
    engine = make_engine(db_url)
    yield engine
    engine.dispose()


@pytest.fixture
def config(service_config, db_url):
    return service_config("carts", DATABASE_URL=db_url)


@pytest.fixture
def carts_container(container_factory, config):
    container = container_factory(CartsService, config)
    container.start()
    return container


@pytest.fixture
def service(carts_container, container_factory, config):
    """A proxy to one carts container, with the fake catalog running."""
    container_factory(FakeCatalog, config).start()
    with ServiceRpcProxy("carts", config) as proxy:
        yield proxy


def announce(config, changed):
    """Send catalog's product_changed event for `changed` (a product as `product` makes it)."""
    fields = {key: value for key, value in changed.items() if key != "version"}
    event_dispatcher(config)(
        "catalog",
        "product_changed",
        {"product": fields, "product_version": changed["version"], "event_id": str(uuid.uuid4())},
    )


def set_status(db, cart_id, status):
    with db.begin() as connection:
        connection.execute(update(carts).where(carts.c.id == cart_id).values(status=status))


def stored_lines(db, cart_id):
    with db.connect() as connection:
        rows = connection.execute(
            select(cart_lines).where(cart_lines.c.cart_id == cart_id).order_by(cart_lines.c.sku)
        ).mappings()
        return [dict(row) for row in rows]


def quantities(cart):
    return {item["sku"]: item["quantity"] for item in cart["items"]}


# --- schema ---------------------------------------------------------------------------------------------------


def test_migrations_build_the_schema_the_models_describe(db):
    with db.connect() as connection:
        assert compare_metadata(MigrationContext.configure(connection), Base.metadata) == []


def test_the_line_quantity_check_holds_in_the_database(db):
    with db.begin() as connection:
        connection.execute(carts.insert().values(id="c", user_id="u", status="open", created_at=NOON, updated_at=NOON))
    for bad in (0, 1000):
        with pytest.raises(Exception, match="(?i)check"):
            with db.begin() as connection:
                connection.execute(
                    cart_lines.insert().values(cart_id="c", sku="A", quantity=bad, name="a", unit_price_cents=1)
                )


# --- create, get, list ----------------------------------------------------------------------------------------


def test_create_cart_with_items_merges_skus_and_prices_them(service, db):
    cart = service.create_cart(
        ALICE, [{"sku": "BREAD", "quantity": 2}, {"sku": "APPLE", "quantity": 3}, {"sku": "BREAD", "quantity": 1}]
    )

    assert uuid.UUID(cart["id"]) and cart["status"] == "open"
    assert cart["items"] == [
        {"sku": "APPLE", "name": "Apple", "quantity": 3, "unit_price_cents": 120, "line_total_cents": 360},
        {"sku": "BREAD", "name": "Bread", "quantity": 3, "unit_price_cents": 250, "line_total_cents": 750},
    ]
    assert cart["total_cents"] == 1110
    assert cart["created_at"].endswith("Z") and cart["created_at"] == cart["updated_at"]
    assert service.get_cart(ALICE, cart["id"]) == cart
    assert [
        (line["sku"], line["quantity"], line["name"], line["unit_price_cents"]) for line in stored_lines(db, cart["id"])
    ] == [("APPLE", 3, "Apple", 120), ("BREAD", 3, "Bread", 250)]


def test_list_carts_answers_the_callers_carts_newest_first(service):
    first = service.create_cart(ALICE)
    second = service.create_cart(ALICE, [{"sku": "CHEESE", "quantity": 1}])
    third = service.create_cart(ALICE, items=None)
    service.create_cart(BOB)

    listed = service.list_carts(ALICE)["items"]
    assert [cart["id"] for cart in listed] == [third["id"], second["id"], first["id"]]
    assert listed[1] == second
    assert first["items"] == [] and first["total_cents"] == 0
    assert service.list_carts(str(uuid.uuid4())) == {"items": []}


def test_create_cart_refuses_bad_items_and_writes_nothing(service):
    with pytest.raises(UnknownProduct) as unknown:
        service.create_cart(ALICE, [{"sku": "APPLE", "quantity": 1}, {"sku": "NOPE", "quantity": 1}])
    assert unknown.value.details == {"sku": "NOPE"}

    with pytest.raises(ValidationFailed) as too_many:
        service.create_cart(ALICE, [{"sku": "APPLE", "quantity": 999}, {"sku": "APPLE", "quantity": 1}])
    assert too_many.value.details == {"fields": {"items[1].quantity": "the line for APPLE would exceed 999"}}

    for items, field in [
        ([{"sku": "APPLE", "quantity": 1.5}], "items[0].quantity"),
        ([{"sku": "APPLE", "quantity": "2"}], "items[0].quantity"),
        ([{"sku": "APPLE", "quantity": True}], "items[0].quantity"),
        ([{"sku": "bad sku!", "quantity": 1}], "items[0].sku"),
        ({"sku": "APPLE"}, "items"),
    ]:
        with pytest.raises(ValidationFailed) as failure:
            service.create_cart(ALICE, items)
        assert list(failure.value.details["fields"]) == [field]

    with pytest.raises(ValidationFailed) as no_user:
        service.create_cart("", [])
    assert list(no_user.value.details["fields"]) == ["user_id"]
    assert service.list_carts(ALICE) == {"items": []}


# --- prices ---------------------------------------------------------------------------------------------------


def test_open_cart_shows_the_prices_catalog_last_announced(service, carts_container, config, catalog):
    cart = service.create_cart(ALICE, [{"sku": "APPLE", "quantity": 2}, {"sku": "BREAD", "quantity": 1}])

    # Catalog changes a price: carts shows it once the announcement arrives, not before.
    catalog["APPLE"] = product("APPLE", "Green apple", 150, version=2)
    assert service.get_cart(ALICE, cart["id"])["items"][0]["unit_price_cents"] == 120
    with entrypoint_waiter(carts_container, "remember_product"):
        announce(config, catalog["APPLE"])
    cart = service.get_cart(ALICE, cart["id"])
    assert cart["items"][0] == {
        "sku": "APPLE",
        "name": "Green apple",
        "quantity": 2,
        "unit_price_cents": 150,
        "line_total_cents": 300,
    }
    assert cart["total_cents"] == 550
    assert service.list_carts(ALICE)["items"] == [cart]

    # An announcement older than what carts has changes nothing (it arrived late, or twice).
    with entrypoint_waiter(carts_container, "remember_product"):
        announce(config, product("APPLE", "Old apple", 99, version=1))
    assert service.get_cart(ALICE, cart["id"]) == cart


def test_catalog_is_asked_once_for_a_sku_carts_has_never_seen(service, catalog):
    cart = service.create_cart(ALICE, [{"sku": "APPLE", "quantity": 2}])
    assert ASKED == [["APPLE"]]
    service.get_cart(ALICE, cart["id"])
    service.add_item(ALICE, cart["id"], "APPLE", 1)
    service.list_carts(ALICE)
    assert ASKED == [["APPLE"]]  # read from carts' copy since

    service.add_item(ALICE, cart["id"], "BREAD", 1)
    assert ASKED == [["APPLE"], ["BREAD"]]  # only the sku it lacked
    service.set_item(ALICE, cart["id"], "CHEESE", 3)
    assert ASKED[-1] == ["CHEESE"]
    assert [(i["sku"], i["unit_price_cents"]) for i in service.get_cart(ALICE, cart["id"])["items"]] == [
        ("APPLE", 120),
        ("BREAD", 250),
        ("CHEESE", 799),
    ]
    with pytest.raises(UnknownProduct):
        service.add_item(ALICE, cart["id"], "NOPE", 1)
    assert len(ASKED) == 4


def test_the_copy_keeps_the_newest_version_of_each_product(db):
    def remember(*found):
        with Session(db) as session, session.begin():
            store.remember_products(session, list(found))

    def copy():
        with db.connect() as connection:
            rows = connection.execute(select(products).order_by(products.c.sku)).mappings()
            return [(row["sku"], row["name"], row["price_cents"], row["version"]) for row in rows]

    remember(product("APPLE", "Apple", 120, version=3), product("BREAD", "Bread", 250, version=1))
    remember(product("APPLE", "Older apple", 100, version=2), product("BREAD", "Rye bread", 300, version=2))
    remember(product("APPLE", "Same version", 1, version=3))
    assert copy() == [("APPLE", "Apple", 120, 3), ("BREAD", "Rye bread", 300, 2)]


def test_checked_out_cart_shows_its_stored_values(service, db, catalog):
    cart = service.create_cart(ALICE, [{"sku": "CHEESE", "quantity": 2}])
    set_status(db, cart["id"], "checked_out")
    catalog["CHEESE"] = product("CHEESE", "Aged cheese", 999)

    frozen = service.get_cart(ALICE, cart["id"])
    assert frozen["status"] == "checked_out"
    assert frozen["items"] == [
        {"sku": "CHEESE", "name": "Cheese", "quantity": 2, "unit_price_cents": 799, "line_total_cents": 1598}
    ]
    assert service.list_carts(ALICE)["items"] == [frozen]


# --- add_item, set_item, remove_item --------------------------------------------------------------------------


def test_add_item_creates_and_grows_lines(service):
    cart = service.create_cart(ALICE)
    after_one = service.add_item(ALICE, cart["id"], "BREAD", 2)
    assert quantities(after_one) == {"BREAD": 2}
    assert after_one["updated_at"] > cart["updated_at"] and after_one["created_at"] == cart["created_at"]

    after_two = service.add_item(ALICE, cart["id"], "APPLE", 1)
    after_three = service.add_item(ALICE, cart["id"], "BREAD", 995)
    assert [item["sku"] for item in after_two["items"]] == ["APPLE", "BREAD"]
    assert quantities(after_three) == {"APPLE": 1, "BREAD": 997}
    assert after_three["total_cents"] == 120 + 997 * 250
    assert service.get_cart(ALICE, cart["id"]) == after_three


def test_add_item_refuses_a_line_over_999_and_bad_input_leaving_the_cart_alone(service):
    cart = service.add_item(ALICE, service.create_cart(ALICE)["id"], "APPLE", 998)

    with pytest.raises(ValidationFailed) as over:
        service.add_item(ALICE, cart["id"], "APPLE", 2)
    assert over.value.details == {"fields": {"quantity": "the line would exceed 999"}}

    with pytest.raises(UnknownProduct) as unknown:
        service.add_item(ALICE, cart["id"], "NOPE", 1)
    assert unknown.value.details == {"sku": "NOPE"}

    for sku, quantity, field in [
        ("APPLE", 0, "quantity"),
        ("APPLE", 1000, "quantity"),
        ("APPLE", True, "quantity"),
        ("APPLE", 1.0, "quantity"),
        ("APPLE", "1", "quantity"),
        ("APPLE", None, "quantity"),
        ("no spaces", 1, "sku"),
        ("", 1, "sku"),
        (7, 1, "sku"),
    ]:
        with pytest.raises(ValidationFailed) as failure:
            service.add_item(ALICE, cart["id"], sku, quantity)
        assert list(failure.value.details["fields"]) == [field]

    assert service.get_cart(ALICE, cart["id"]) == cart


def test_set_item_sets_creates_and_removes_lines(service, db):
    cart_id = service.create_cart(ALICE, [{"sku": "APPLE", "quantity": 5}])["id"]

    assert quantities(service.set_item(ALICE, cart_id, "APPLE", 2)) == {"APPLE": 2}
    assert quantities(service.set_item(ALICE, cart_id, "BREAD", 999)) == {"APPLE": 2, "BREAD": 999}
    removed = service.set_item(ALICE, cart_id, "APPLE", 0)
    assert quantities(removed) == {"BREAD": 999}
    assert [line["sku"] for line in stored_lines(db, cart_id)] == ["BREAD"]
    # 0 for a line that is not there (even a sku the catalog does not know) changes nothing.
    assert service.set_item(ALICE, cart_id, "APPLE", 0) == removed
    assert service.set_item(ALICE, cart_id, "NOPE", 0) == removed

    with pytest.raises(UnknownProduct) as unknown:
        service.set_item(ALICE, cart_id, "NOPE", 1)
    assert unknown.value.details == {"sku": "NOPE"}
    for quantity in (-1, 1000, True, 2.0, "3", None):
        with pytest.raises(ValidationFailed) as failure:
            service.set_item(ALICE, cart_id, "BREAD", quantity)
        assert list(failure.value.details["fields"]) == ["quantity"]
    with pytest.raises(ValidationFailed):
        service.set_item(ALICE, cart_id, "a/b", 1)
    assert service.get_cart(ALICE, cart_id) == removed


def test_remove_item_removes_a_line_and_refuses_an_absent_one(service):
    cart_id = service.create_cart(ALICE, [{"sku": "APPLE", "quantity": 1}, {"sku": "BREAD", "quantity": 2}])["id"]

    cart = service.remove_item(ALICE, cart_id, "APPLE")
    assert quantities(cart) == {"BREAD": 2} and cart["total_cents"] == 500
    for sku in ("APPLE", "CHEESE", "not a sku"):
        with pytest.raises(NotFound) as missing:
            service.remove_item(ALICE, cart_id, sku)
        assert missing.value.details == {"sku": sku}
    assert service.get_cart(ALICE, cart_id) == cart


def test_delete_cart_deletes_it_and_its_lines(service, db):
    kept = service.create_cart(ALICE, [{"sku": "APPLE", "quantity": 1}])
    cart = service.create_cart(ALICE, [{"sku": "BREAD", "quantity": 2}])

    assert service.delete_cart(ALICE, cart["id"]) is None
    with pytest.raises(NotFound):
        service.get_cart(ALICE, cart["id"])
    with pytest.raises(NotFound):
        service.delete_cart(ALICE, cart["id"])
    assert stored_lines(db, cart["id"]) == []
    assert service.list_carts(ALICE)["items"] == [kept]


# --- states and ownership --------------------------------------------------------------------------------------


def test_a_checked_out_cart_cannot_be_changed(service, db):
    cart = service.create_cart(ALICE, [{"sku": "APPLE", "quantity": 1}])
    set_status(db, cart["id"], "checked_out")
    before = service.get_cart(ALICE, cart["id"])

    for change in [
        lambda: service.add_item(ALICE, cart["id"], "APPLE", 1),
        lambda: service.add_item(ALICE, cart["id"], "BREAD", 1),
        lambda: service.set_item(ALICE, cart["id"], "APPLE", 5),
        lambda: service.set_item(ALICE, cart["id"], "APPLE", 0),
        lambda: service.remove_item(ALICE, cart["id"], "APPLE"),
        lambda: service.delete_cart(ALICE, cart["id"]),
    ]:
        with pytest.raises(Conflict) as conflict:
            change()
        assert conflict.value.details == {"status": "checked_out"}
    assert service.get_cart(ALICE, cart["id"]) == before
    assert stored_lines(db, cart["id"])[0]["quantity"] == 1


@pytest.mark.parametrize("whose", ["another user's", "missing", "malformed"])
def test_carts_that_are_not_the_callers_are_not_found_by_every_method(service, whose):
    bobs = service.create_cart(BOB, [{"sku": "APPLE", "quantity": 1}])
    cart_id = {"another user's": bobs["id"], "missing": str(uuid.uuid4()), "malformed": "x' OR '1'='1"}[whose]

    calls = [
        lambda: service.get_cart(ALICE, cart_id),
        lambda: service.add_item(ALICE, cart_id, "APPLE", 1),
        lambda: service.set_item(ALICE, cart_id, "APPLE", 3),
        lambda: service.set_item(ALICE, cart_id, "APPLE", 0),
        lambda: service.remove_item(ALICE, cart_id, "APPLE"),
        lambda: service.delete_cart(ALICE, cart_id),
    ]
    for call in calls:
        with pytest.raises(NotFound) as missing:
            call()
        assert str(missing.value) == "the cart does not exist"  # the same answer in all three cases
    assert service.get_cart(BOB, bobs["id"]) == bobs
    assert service.list_carts(ALICE) == {"items": []}


def test_non_string_cart_ids_are_not_found(service):
    for cart_id in (None, 42, ["x"], {"id": "x"}):
        with pytest.raises(NotFound):
            service.get_cart(ALICE, cart_id)
        with pytest.raises(NotFound):
            service.delete_cart(ALICE, cart_id)


def test_health(service):
    assert service.health() == "ok"


def test_without_the_catalog_priced_answers_fail_fast_and_write_nothing(container_factory, config):
    container_factory(CartsService, config).start()
    with ServiceRpcProxy("carts", config) as service:
        empty = service.create_cart(ALICE)
        assert service.get_cart(ALICE, empty["id"]) == empty
        with pytest.raises(ServiceUnavailable):
            service.create_cart(ALICE, [{"sku": "APPLE", "quantity": 1}])
        with pytest.raises(ServiceUnavailable):
            service.add_item(ALICE, empty["id"], "APPLE", 1)
        assert service.list_carts(ALICE)["items"] == [empty]


# --- concurrency: two instances, several workers each ----------------------------------------------------------

SERVED_BY = []


class ServedBy(DependencyProvider):
    """Records which container ran each worker, to show that both instances took part."""

    def worker_setup(self, worker_ctx):
        SERVED_BY.append(id(self.container))


class ObservedCartsService(CartsService):
    served_by = ServedBy()


@pytest.fixture
def two_instances(container_factory, config):
    """A proxy to two carts containers (4 workers each) on one vhost and one database, plus the catalog."""
    SERVED_BY.clear()
    config = dict(config, max_workers=4)
    for service_class in (ObservedCartsService, ObservedCartsService, FakeCatalog):
        container_factory(service_class, config).start()
    with ServiceRpcProxy("carts", config) as proxy:
        yield proxy, config


def in_parallel(config, calls):
    """Run `calls` (functions of a carts proxy) at once, each from its own client; their results or errors."""

    def run(call):
        with ServiceRpcProxy("carts", config) as client:
            try:
                return call(client)
            except Exception as error:  # collected, asserted by the test
                return error

    pool = eventlet.GreenPool(len(calls))
    return list(pool.imap(run, calls))


def test_parallel_adds_to_one_line_on_two_instances_lose_nothing(two_instances):
    service, config = two_instances
    cart_id = service.create_cart(ALICE)["id"]
    SERVED_BY.clear()

    results = in_parallel(config, [lambda client: client.add_item(ALICE, cart_id, "APPLE", 1)] * 20)

    assert [r for r in results if isinstance(r, Exception)] == []
    assert quantities(service.get_cart(ALICE, cart_id)) == {"APPLE": 20}
    # Each add ran alone on the line: every answer shows a different count, 1 to 20.
    assert sorted(quantities(cart)["APPLE"] for cart in results) == list(range(1, 21))
    assert len(set(SERVED_BY)) == 2


def test_parallel_adds_never_take_a_line_over_999(two_instances):
    service, config = two_instances
    cart_id = service.create_cart(ALICE, [{"sku": "BREAD", "quantity": 995}])["id"]

    results = in_parallel(config, [lambda client: client.add_item(ALICE, cart_id, "BREAD", 2)] * 10)

    accepted = [r for r in results if isinstance(r, dict)]
    refused = [r for r in results if not isinstance(r, dict)]
    assert sorted(quantities(cart)["BREAD"] for cart in accepted) == [997, 999]
    assert len(refused) == 8 and all(isinstance(error, ValidationFailed) for error in refused)
    assert quantities(service.get_cart(ALICE, cart_id)) == {"BREAD": 999}


# --- call ids: each write applied once --------------------------------------------------------------------------


def test_every_write_repeated_with_its_call_id_answers_the_same_and_changes_nothing(service, db):
    def twice(method, *args):
        call_id = uuid.uuid4().hex
        first = getattr(service, method)(*args, call_id=call_id)
        assert getattr(service, method)(*args, call_id=call_id) == first, method
        return first

    cart = twice("create_cart", ALICE, [{"sku": "APPLE", "quantity": 1}])
    assert len(service.list_carts(ALICE)["items"]) == 1
    assert quantities(twice("add_item", ALICE, cart["id"], "APPLE", 2)) == {"APPLE": 3}
    assert quantities(twice("set_item", ALICE, cart["id"], "BREAD", 4)) == {"APPLE": 3, "BREAD": 4}
    assert quantities(twice("remove_item", ALICE, cart["id"], "BREAD")) == {"APPLE": 3}  # not NotFound the 2nd time
    assert [(line["sku"], line["quantity"]) for line in stored_lines(db, cart["id"])] == [("APPLE", 3)]
    assert twice("delete_cart", ALICE, cart["id"]) is None
    assert service.list_carts(ALICE)["items"] == []
    # A new call id is a new call: the cart is gone now.
    with pytest.raises(NotFound):
        service.delete_cart(ALICE, cart["id"], call_id=uuid.uuid4().hex)


def test_copies_of_one_add_item_call_sent_at_once_add_once(service, config):
    cart = service.create_cart(ALICE)
    call_id = uuid.uuid4().hex

    def add(_n):
        with ServiceRpcProxy("carts", config) as proxy:
            return proxy.add_item(ALICE, cart["id"], "CHEESE", 2, call_id=call_id)

    answers = list(eventlet.GreenPool(6).imap(add, range(6)))
    assert [quantities(answer) for answer in answers] == [{"CHEESE": 2}] * 6
    assert quantities(service.get_cart(ALICE, cart["id"])) == {"CHEESE": 2}


def test_a_malformed_call_id_is_refused_and_writes_nothing(service):
    with pytest.raises(ValidationFailed):
        service.create_cart(ALICE, call_id="not a call id")
    assert service.list_carts(ALICE)["items"] == []
