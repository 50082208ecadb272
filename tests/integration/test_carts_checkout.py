"""Checkout of carts in real containers on the real broker and a real database (SQLite and PostgreSQL):
`checkout_cart`, `reopen_cart` and the `orders.order_failed` handler, with the fake catalog of
test_carts_service."""

import uuid

import pytest
from nameko.standalone.events import event_dispatcher
from nameko.standalone.rpc import ServiceRpcProxy
from nameko.testing.services import entrypoint_waiter
from sqlalchemy import insert, select

from services.carts.models import carts, processed_events
from services.carts.service import CartsService
from services.common.clock import utcnow
from services.common.errors import Conflict, EmptyCart, NotFound, ValidationFailed
from tests.integration.test_carts_service import (  # noqa: F401 -- fixtures are found by name
    ALICE,
    BOB,
    FakeCatalog,
    announce,
    carts_container,
    catalog,
    config,
    db,
    db_url,
    in_parallel,
    product,
    service,
    stored_lines,
    two_instances,
)
from tests.waiting import wait_until

HANDLER = "carts.reopen_after_failed_order"


def new_order_id():
    return str(uuid.uuid4())


def cart_row(db, cart_id):
    with db.connect() as connection:
        return dict(connection.execute(select(carts).where(carts.c.id == cart_id)).mappings().one())


def frozen_lines(db, cart_id):
    return [(line["sku"], line["name"], line["unit_price_cents"]) for line in stored_lines(db, cart_id)]


# --- checkout_cart --------------------------------------------------------------------------------------------


def test_checkout_freezes_the_catalogs_current_values(service, db, catalog):
    cart = service.create_cart(ALICE, [{"sku": "APPLE", "quantity": 2}, {"sku": "BREAD", "quantity": 1}])
    catalog["APPLE"] = product("APPLE", "Green apple", 150)  # changed since the line was written
    order_id = new_order_id()

    checked_out = service.checkout_cart(ALICE, cart["id"], order_id)

    assert checked_out["status"] == "checked_out"
    assert checked_out["items"] == [
        {"sku": "APPLE", "name": "Green apple", "quantity": 2, "unit_price_cents": 150, "line_total_cents": 300},
        {"sku": "BREAD", "name": "Bread", "quantity": 1, "unit_price_cents": 250, "line_total_cents": 250},
    ]
    assert checked_out["total_cents"] == 550
    assert checked_out["updated_at"] > cart["updated_at"]
    assert cart_row(db, cart["id"])["checked_out_by"] == order_id
    assert frozen_lines(db, cart["id"]) == [("APPLE", "Green apple", 150), ("BREAD", "Bread", 250)]

    # Later catalog changes do not touch the frozen cart, nor a repeat of the same order's checkout.
    catalog["APPLE"] = product("APPLE", "Golden apple", 999)
    del catalog["BREAD"]
    assert service.get_cart(ALICE, cart["id"]) == checked_out
    assert service.list_carts(ALICE)["items"] == [checked_out]
    assert service.checkout_cart(ALICE, cart["id"], order_id) == checked_out
    assert service.checkout_cart(ALICE, cart["id"], order_id.upper()) == checked_out


def test_checkout_keeps_the_stored_values_of_a_sku_the_catalog_no_longer_has(service, db, catalog):
    cart = service.create_cart(ALICE, [{"sku": "CHEESE", "quantity": 1}, {"sku": "APPLE", "quantity": 1}])
    del catalog["CHEESE"]
    catalog["APPLE"] = product("APPLE", "Apple", 130)

    checked_out = service.checkout_cart(ALICE, cart["id"], new_order_id())

    assert [(i["sku"], i["name"], i["unit_price_cents"]) for i in checked_out["items"]] == [
        ("APPLE", "Apple", 130),
        ("CHEESE", "Cheese", 799),
    ]
    assert frozen_lines(db, cart["id"]) == [("APPLE", "Apple", 130), ("CHEESE", "Cheese", 799)]


def test_an_empty_cart_is_not_checked_out(service, db):
    cart = service.create_cart(ALICE)

    with pytest.raises(EmptyCart):
        service.checkout_cart(ALICE, cart["id"], new_order_id())

    assert service.get_cart(ALICE, cart["id"]) == cart
    assert cart_row(db, cart["id"])["checked_out_by"] is None
    service.add_item(ALICE, cart["id"], "APPLE", 1)  # still open
    assert service.checkout_cart(ALICE, cart["id"], new_order_id())["status"] == "checked_out"


@pytest.mark.parametrize("whose", ["another user's", "missing", "malformed"])
def test_checkout_of_a_cart_that_is_not_the_callers_is_not_found(service, whose):
    bobs = service.create_cart(BOB, [{"sku": "APPLE", "quantity": 1}])
    cart_id = {"another user's": bobs["id"], "missing": str(uuid.uuid4()), "malformed": "nope"}[whose]

    with pytest.raises(NotFound) as missing:
        service.checkout_cart(ALICE, cart_id, new_order_id())

    assert str(missing.value) == "the cart does not exist"
    assert service.get_cart(BOB, bobs["id"]) == bobs


def test_a_cart_checked_out_by_another_order_is_a_conflict(service, db):
    cart = service.create_cart(ALICE, [{"sku": "BREAD", "quantity": 3}])
    first = new_order_id()
    checked_out = service.checkout_cart(ALICE, cart["id"], first)

    with pytest.raises(Conflict) as conflict:
        service.checkout_cart(ALICE, cart["id"], new_order_id())

    assert conflict.value.details == {"status": "checked_out"}
    assert cart_row(db, cart["id"])["checked_out_by"] == first
    assert service.get_cart(ALICE, cart["id"]) == checked_out


def test_checkout_refuses_a_bad_order_id_and_changes_nothing(service, db):
    cart = service.create_cart(ALICE, [{"sku": "BREAD", "quantity": 1}])
    for order_id in ("", "order-1", None, 42):
        with pytest.raises(ValidationFailed) as failure:
            service.checkout_cart(ALICE, cart["id"], order_id)
        assert list(failure.value.details["fields"]) == ["order_id"]
    assert service.get_cart(ALICE, cart["id"]) == cart
    assert cart_row(db, cart["id"])["checked_out_by"] is None


def test_concurrent_checkouts_by_different_orders_let_exactly_one_win(two_instances, db):
    service, config = two_instances
    cart = service.create_cart(ALICE, [{"sku": "APPLE", "quantity": 1}, {"sku": "CHEESE", "quantity": 2}])
    order_ids = [new_order_id() for _ in range(8)]

    results = in_parallel(
        config,
        [lambda client, order_id=order_id: client.checkout_cart(ALICE, cart["id"], order_id) for order_id in order_ids],
    )

    won = [order_id for order_id, result in zip(order_ids, results, strict=True) if isinstance(result, dict)]
    lost = [result for result in results if not isinstance(result, dict)]
    assert len(won) == 1
    assert len(lost) == 7 and all(isinstance(error, Conflict) for error in lost), lost
    assert cart_row(db, cart["id"])["checked_out_by"] == won[0]
    assert service.get_cart(ALICE, cart["id"]) == results[order_ids.index(won[0])]


def test_concurrent_repeats_of_one_orders_checkout_all_answer_the_same_cart(two_instances, db):
    service, config = two_instances
    cart = service.create_cart(ALICE, [{"sku": "BREAD", "quantity": 2}])
    order_id = new_order_id()

    results = in_parallel(config, [lambda client: client.checkout_cart(ALICE, cart["id"], order_id)] * 4)

    assert all(isinstance(result, dict) for result in results), results
    assert len({repr(result) for result in results}) == 1 and results[0]["status"] == "checked_out"
    assert cart_row(db, cart["id"])["checked_out_by"] == order_id


# --- reopen_cart ----------------------------------------------------------------------------------------------


def test_reopen_cart_by_the_order_that_checked_it_out_opens_it(service, carts_container, config, db, catalog):
    cart = service.create_cart(ALICE, [{"sku": "APPLE", "quantity": 2}])
    order_id = new_order_id()
    service.checkout_cart(ALICE, cart["id"], order_id)
    catalog["APPLE"] = product("APPLE", "Apple", 140, version=2)
    with entrypoint_waiter(carts_container, "remember_product"):
        announce(config, catalog["APPLE"])

    assert service.reopen_cart(cart["id"], order_id) is None

    reopened = service.get_cart(ALICE, cart["id"])
    assert reopened["status"] == "open" and reopened["items"][0]["unit_price_cents"] == 140  # current again
    assert cart_row(db, cart["id"])["checked_out_by"] is None
    assert service.add_item(ALICE, cart["id"], "APPLE", 1)["items"][0]["quantity"] == 3
    assert service.checkout_cart(ALICE, cart["id"], new_order_id())["status"] == "checked_out"


def test_reopen_cart_by_another_order_or_of_an_open_cart_changes_nothing(service, db):
    cart = service.create_cart(ALICE, [{"sku": "APPLE", "quantity": 1}])
    open_cart = service.create_cart(ALICE, [{"sku": "BREAD", "quantity": 1}])
    order_id = new_order_id()
    checked_out = service.checkout_cart(ALICE, cart["id"], order_id)

    for cart_id, other in [
        (cart["id"], new_order_id()),
        (cart["id"], "garbage"),
        (cart["id"], None),
        (open_cart["id"], new_order_id()),
        ("garbage", order_id),
        (str(uuid.uuid4()), order_id),
    ]:
        assert service.reopen_cart(cart_id, other) is None

    assert service.get_cart(ALICE, cart["id"]) == checked_out
    assert cart_row(db, cart["id"])["checked_out_by"] == order_id
    assert service.get_cart(ALICE, open_cart["id"]) == open_cart


def test_an_order_that_released_its_cart_cannot_check_it_out_late(service, db):
    # orders gave up waiting for checkout_cart and failed the order; its event may overtake the slow call.
    cart = service.create_cart(ALICE, [{"sku": "APPLE", "quantity": 1}])
    failed = new_order_id()
    service.reopen_cart(cart["id"], failed)

    with pytest.raises(Conflict):
        service.checkout_cart(ALICE, cart["id"], failed)

    assert service.get_cart(ALICE, cart["id"])["status"] == "open"
    retry = new_order_id()
    assert service.checkout_cart(ALICE, cart["id"], retry)["status"] == "checked_out"
    assert cart_row(db, cart["id"])["checked_out_by"] == retry


def test_a_release_racing_its_orders_checkout_always_leaves_the_cart_open(two_instances, db):
    service, config = two_instances
    pairs = [(service.create_cart(ALICE, [{"sku": "APPLE", "quantity": 1}])["id"], new_order_id()) for _ in range(5)]
    calls = []
    for cart_id, order_id in pairs:
        calls.append(lambda client, c=cart_id, o=order_id: client.checkout_cart(ALICE, c, o))
        calls.append(lambda client, c=cart_id, o=order_id: client.reopen_cart(c, o))

    results = in_parallel(config, calls)

    assert all(result is None or isinstance(result, (dict, Conflict)) for result in results), results
    for cart_id, _ in pairs:
        assert (cart_row(db, cart_id)["status"], cart_row(db, cart_id)["checked_out_by"]) == ("open", None)


# --- the orders.order_failed handler ---------------------------------------------------------------------------


@pytest.fixture
def events(container_factory, config):
    """A proxy to one carts container that handles events one at a time (so they apply in the order sent), the
    catalog, and `fail(order_id, cart_id, event_id)`, which sends orders' `order_failed` event."""
    config = dict(config, max_workers=1)
    container_factory(CartsService, config).start()
    container_factory(FakeCatalog, config).start()
    dispatch = event_dispatcher(config)

    def fail(order_id, cart_id, event_id=None):
        event_id = event_id or str(uuid.uuid4())
        order = {
            "id": order_id,
            "cart_id": cart_id,
            "status": "failed",
            "failure_reason": "payment_declined",
            "items": [],
            "total_cents": 0,
            "created_at": "2026-01-01T00:00:00.000000Z",
            "updated_at": "2026-01-01T00:00:00.000000Z",
        }
        dispatch("orders", "order_failed", {"order": order, "event_id": event_id})
        return event_id

    with ServiceRpcProxy("carts", config) as proxy:
        yield proxy, fail


def checked_out_cart(service, order_id):
    cart = service.create_cart(ALICE, [{"sku": "APPLE", "quantity": 1}])
    return service.checkout_cart(ALICE, cart["id"], order_id)["id"]


def is_open(service, cart_id):
    return lambda: service.get_cart(ALICE, cart_id)["status"] == "open"


def processed(db, event_id):
    with db.connect() as connection:
        return (
            connection.execute(select(processed_events.c.handler).where(processed_events.c.event_id == event_id))
            .scalars()
            .all()
        )


def test_a_failed_orders_cart_opens_again(events, db):
    service, fail = events
    order_id = new_order_id()
    cart_id = checked_out_cart(service, order_id)

    event_id = fail(order_id, cart_id.upper())  # as the buyer spelled it

    wait_until(is_open(service, cart_id))
    assert cart_row(db, cart_id)["checked_out_by"] is None
    assert processed(db, event_id) == [HANDLER]


def test_a_redelivered_event_is_applied_once(events, db):
    service, fail = events
    failed = new_order_id()
    cart_id = checked_out_cart(service, failed)
    event_id = fail(failed, cart_id)
    wait_until(is_open(service, cart_id))
    retry = new_order_id()
    service.checkout_cart(ALICE, cart_id, retry)

    fail(failed, cart_id, event_id)  # the same event again
    marker = checked_out_cart(service, new_order_id())
    fail(cart_row(db, marker)["checked_out_by"], marker)  # handled after the repeat (one worker)
    wait_until(is_open(service, marker))

    assert cart_row(db, cart_id)["status"] == "checked_out"
    assert cart_row(db, cart_id)["checked_out_by"] == retry
    assert processed(db, event_id) == [HANDLER]


def test_an_event_already_recorded_as_processed_is_skipped(events, db):
    service, fail = events
    order_id = new_order_id()
    cart_id = checked_out_cart(service, order_id)
    event_id = str(uuid.uuid4())
    with db.begin() as connection:  # as if a first delivery had been applied
        connection.execute(insert(processed_events).values(event_id=event_id, handler=HANDLER, processed_at=utcnow()))

    fail(order_id, cart_id, event_id)
    marker = checked_out_cart(service, new_order_id())
    fail(cart_row(db, marker)["checked_out_by"], marker)
    wait_until(is_open(service, marker))

    assert cart_row(db, cart_id)["checked_out_by"] == order_id
