"""Contract: Checkout and orders, end to end — the saga over the real services, with the cross-service audit
after every test (orders still in their saga are waited for first)."""

import uuid

import eventlet
import pytest
from nameko.containers import get_container_cls
from sqlalchemy import func, select

from services.common.db import make_engine
from services.common.errors import ServiceUnavailable
from services.common.rpc import rpc
from services.payments.models import payment_methods
from services.payments.service import PaymentsService
from tests.e2e.conftest import assert_error
from tests.waiting import wait_until

GOOD, DECLINED, NO_FUNDS = "4242424242424242", "4000000000000002", "4000000000009995"


@pytest.fixture(autouse=True)
def audited(system):
    """Every checkout test ends with the system consistent: nothing oversold, charged twice or held."""
    yield
    report = system.settled_audit()
    assert report["ok"], report["breaches"]


def stocked(admin, stock=10, price=500):
    sku = f"C-{uuid.uuid4().hex[:10]}"
    response = admin.post("/products", json={"sku": sku, "name": f"Thing {sku}", "price_cents": price, "stock": stock})
    assert response.status_code == 201, response.text
    return sku


def cart_with(client, *lines):
    response = client.post("/carts", json={"items": [{"sku": sku, "quantity": q} for sku, q in lines]})
    assert response.status_code == 201, response.text
    return response.json()


def checkout(client, cart, card=GOOD, key=None):
    headers = {"Idempotency-Key": key} if key else {}
    return client.post(f"/carts/{cart['id']}/checkout", json={"payment": {"card_number": card}}, headers=headers)


def settled(client, order_id, timeout=20):
    """The order once it has left `pending` (polled with a deadline)."""

    def left_pending():
        order = client.get(f"/orders/{order_id}").json()
        return order if order["status"] != "pending" else None

    return wait_until(left_pending, timeout=timeout, what=f"order {order_id} settled")


def stock_of(client, sku):
    return client.get(f"/products/{sku}").json()["stock"]


def test_happy_path(admin, user):
    a, b = stocked(admin, price=250), stocked(admin, price=1000)
    cart = cart_with(user, (a, 2), (b, 1))
    response = checkout(user, cart)
    assert response.status_code == 202
    order = response.json()
    assert set(order) == {
        "id",
        "cart_id",
        "status",
        "failure_reason",
        "items",
        "total_cents",
        "created_at",
        "updated_at",
    }
    assert (order["status"], order["cart_id"], order["failure_reason"]) == ("pending", cart["id"], None)
    assert order["items"] == cart["items"] and order["total_cents"] == 1500
    assert settled(user, order["id"])["status"] == "confirmed"
    assert (stock_of(user, a), stock_of(user, b)) == (8, 9)
    assert user.get(f"/carts/{cart['id']}").json()["status"] == "checked_out"
    listed = user.get("/orders").json()
    assert listed["items"][0]["id"] == order["id"] and listed["total"] >= 1


def test_prices_are_frozen_at_checkout(admin, user):
    sku = stocked(admin, price=300)
    cart = cart_with(user, (sku, 1))
    order = checkout(user, cart).json()
    admin.patch(f"/products/{sku}", json={"price_cents": 999})
    final = settled(user, order["id"])
    assert final["total_cents"] == 300 and final["items"][0]["unit_price_cents"] == 300
    assert user.get(f"/carts/{cart['id']}").json()["items"][0]["unit_price_cents"] == 300


@pytest.mark.parametrize("card", [DECLINED, NO_FUNDS])
def test_declined_cards_fail_and_release_everything(admin, user, card):
    sku = stocked(admin, stock=3)
    cart = cart_with(user, (sku, 2))
    order = settled(user, checkout(user, cart, card).json()["id"])
    assert (order["status"], order["failure_reason"]) == ("failed", "payment_declined")
    assert stock_of(user, sku) == 3
    wait_until(lambda: user.get(f"/carts/{cart['id']}").json()["status"] == "open")


def test_a_failed_order_leaves_the_cart_to_retry(admin, user):
    sku = stocked(admin)
    cart = cart_with(user, (sku, 1))
    settled(user, checkout(user, cart, DECLINED).json()["id"])
    wait_until(lambda: user.get(f"/carts/{cart['id']}").json()["status"] == "open")
    assert user.put(f"/carts/{cart['id']}/items/{sku}", json={"quantity": 2}).status_code == 200
    retry = settled(user, checkout(user, cart).json()["id"])
    assert retry["status"] == "confirmed" and retry["total_cents"] == 1000


def test_one_short_line_fails_the_whole_order_and_holds_nothing(admin, user):
    plenty, scarce = stocked(admin, stock=10), stocked(admin, stock=1)
    cart = cart_with(user, (plenty, 3), (scarce, 2))
    order = settled(user, checkout(user, cart).json()["id"])
    assert (order["status"], order["failure_reason"]) == ("failed", "out_of_stock")
    assert (stock_of(user, plenty), stock_of(user, scarce)) == (10, 1)


@pytest.mark.parametrize(
    "payment",
    [
        {"card_number": "4242424242424241"},
        {"card_number": "1234"},
        {"card_number": 4242424242424242},
        {"card_number": "4242 4242 4242 4242x"},
        {},
        None,
    ],
)
def test_bad_payment_is_422_and_nothing_happens(admin, user, payment):
    sku = stocked(admin)
    cart = cart_with(user, (sku, 1))
    body = {} if payment is None else {"payment": payment}
    assert_error(user.post(f"/carts/{cart['id']}/checkout", json=body), 422, "validation_error")
    assert user.get(f"/carts/{cart['id']}").json()["status"] == "open"
    assert stock_of(user, sku) == 10


def test_empty_cart_is_422_empty_cart(user):
    cart = cart_with(user)
    assert_error(checkout(user, cart), 422, "empty_cart")
    assert user.get(f"/carts/{cart['id']}").json()["status"] == "open"


def test_checkout_of_someone_elses_or_no_cart_is_404(system, admin, user):
    cart = cart_with(user, (stocked(admin), 1))
    assert_error(checkout(system.new_user(), cart), 404, "not_found")
    assert_error(checkout(user, {"id": str(uuid.uuid4())}), 404, "not_found")
    assert_error(checkout(system.client(), cart), 401, "unauthorized")


def test_checked_out_cart_is_409_unless_the_same_key_repeats(admin, user):
    cart = cart_with(user, (stocked(admin), 1))
    first = checkout(user, cart, key="key-1")
    assert first.status_code == 202
    again = checkout(user, cart, key="key-1")
    assert again.status_code in (200, 202) and again.json()["id"] == first.json()["id"]
    assert_error(checkout(user, cart), 409, "conflict")
    assert_error(checkout(user, cart, key="another-key"), 409, "conflict")
    assert_error(
        user.post(f"/carts/{cart['id']}/items", json={"sku": cart["items"][0]["sku"], "quantity": 1}), 409, "conflict"
    )
    settled(user, first.json()["id"])


def test_one_key_sent_concurrently_makes_one_order_and_one_charge(system, admin, user):
    sku = stocked(admin, stock=5)
    cart = cart_with(user, (sku, 1))

    def attempt(_):
        response = checkout(system.client(user.token), cart, key="same-key")
        return response.status_code, response.json().get("id")

    answers = list(eventlet.GreenPool(8).imap(attempt, range(8)))
    assert {status for status, _ in answers} <= {200, 202}
    assert len({order_id for _, order_id in answers}) == 1
    order_id = answers[0][1]
    assert settled(user, order_id)["status"] == "confirmed"
    assert user.get("/orders").json()["total"] == 1
    assert system.rpc("payments", "net_charges")[order_id] == 500
    assert stock_of(user, sku) == 4


def payment_methods_of(system, user_id):
    """How many payment methods payments keeps for `user_id`."""
    engine = make_engine(system.database_urls["payments"])
    try:
        with engine.connect() as connection:
            query = select(func.count()).select_from(payment_methods).where(payment_methods.c.user_id == user_id)
            return connection.execute(query).scalar()
    finally:
        engine.dispose()


def test_a_checkout_retried_with_its_key_registers_one_payment_method(system, admin, user):
    sku = stocked(admin, stock=5)
    cart = cart_with(user, (sku, 1))
    user_id = user.get("/me").json()["id"]
    first = checkout(user, cart, key="retry-me")
    assert first.status_code == 202, first.text
    assert payment_methods_of(system, user_id) == 1

    for _ in range(3):
        again = checkout(user, cart, key="retry-me")
        assert (again.status_code, again.json()["id"]) == (200, first.json()["id"])
    assert payment_methods_of(system, user_id) == 1
    assert settled(user, first.json()["id"])["status"] == "confirmed"
    assert system.rpc("payments", "net_charges")[first.json()["id"]] == 500


def test_twelve_buyers_race_for_five_units(system, admin):
    sku = stocked(admin, stock=5)
    buyers = [system.new_user() for _ in range(12)]
    carts = [cart_with(buyer, (sku, 1)) for buyer in buyers]

    def buy(index):
        response = checkout(buyers[index], carts[index])
        assert response.status_code == 202, response.text
        return settled(buyers[index], response.json()["id"], timeout=40)

    orders = list(eventlet.GreenPool(12).imap(buy, range(12)))
    outcomes = sorted((order["status"], order["failure_reason"]) for order in orders)
    assert outcomes == [("confirmed", None)] * 5 + [("failed", "out_of_stock")] * 7
    assert stock_of(admin, sku) == 0


def test_cancel_a_confirmed_order_refunds_and_restocks(system, admin, user):
    sku = stocked(admin, stock=4)
    order = settled(user, checkout(user, cart_with(user, (sku, 3))).json()["id"])
    assert order["status"] == "confirmed" and stock_of(user, sku) == 1
    response = user.post(f"/orders/{order['id']}/cancel")
    assert response.status_code == 200
    assert response.json()["status"] == "cancelled"
    wait_until(lambda: stock_of(user, sku) == 4)
    wait_until(lambda: system.rpc("payments", "net_charges")[order["id"]] == 0)
    assert_error(user.post(f"/orders/{order['id']}/cancel"), 409, "conflict")


def test_only_confirmed_orders_can_be_cancelled(admin, user):
    order = settled(user, checkout(user, cart_with(user, (stocked(admin), 1)), DECLINED).json()["id"])
    assert_error(user.post(f"/orders/{order['id']}/cancel"), 409, "conflict")


def test_orders_belong_to_their_buyer(system, admin, user):
    order = checkout(user, cart_with(user, (stocked(admin), 1))).json()
    stranger = system.new_user()
    assert_error(stranger.get(f"/orders/{order['id']}"), 404, "not_found")
    assert_error(stranger.post(f"/orders/{order['id']}/cancel"), 404, "not_found")
    assert stranger.get("/orders").json() == {"items": [], "total": 0, "limit": 20, "offset": 0}
    assert_error(user.get(f"/orders/{uuid.uuid4()}"), 404, "not_found")
    assert_error(user.get("/orders/not-a-uuid"), 404, "not_found")
    settled(user, order["id"])


def test_orders_are_paginated_newest_first(admin, user):
    sku = stocked(admin)
    ids = [settled(user, checkout(user, cart_with(user, (sku, 1))).json()["id"])["id"] for _ in range(3)]
    page = user.get("/orders", params={"limit": 2, "offset": 1}).json()
    assert [order["id"] for order in page["items"]] == [ids[1], ids[0]]
    assert (page["total"], page["limit"], page["offset"]) == (3, 2, 1)
    assert_error(user.get("/orders", params={"limit": 0}), 422, "validation_error")


class PaymentsRefusingCharges(PaymentsService):
    """payments as the saga finds it when it is away at the charge (cards still register: checkout needs that)."""

    @rpc(expected_exceptions=ServiceUnavailable)
    def charge(self, order_id, amount_cents, payment_method_id, user_id):
        raise ServiceUnavailable("payments is away")


def test_orders_crash_between_reserve_and_charge_then_settles(own_system):
    """orders dies with an order reserved but not charged (payments is away); started again with payments
    back, it resumes the saga from its database and the order settles."""
    system, admin, user = own_system, own_system.admin(), own_system.new_user()
    sku = stocked(admin, stock=2)
    cart = cart_with(user, (sku, 1))
    payments = system.stop("payments")
    away = get_container_cls(system.configs["payments"])(PaymentsRefusingCharges, system.configs["payments"])
    away.start()
    try:
        response = checkout(user, cart)
        assert response.status_code == 202, response.text
        order = response.json()
        wait_until(lambda: stock_of(user, sku) == 1)  # reserved: the saga now waits to charge
        assert user.get(f"/orders/{order['id']}").json()["status"] == "pending"
        system.kill("orders")
    finally:
        away.stop()
        system.start(payments)
    system.start("orders")
    final = settled(user, order["id"], timeout=30)
    assert final["status"] == "confirmed"
    assert system.rpc("payments", "net_charges")[order["id"]] == 500
    report = system.settled_audit()
    assert report["ok"], report["breaches"]
