"""The orders service and its checkout saga in real containers on the real broker, with real catalog, payments
and carts containers, each on its own database (SQLite and PostgreSQL).

Everything is observed through the services' RPC interfaces: the order (status, failure_reason), catalog's
stock and stock holds, payments' net charges, the cart. Covered: the way to `confirmed`; each way to `failed`
(out of stock, declined card, the deadline); each step whose service is away (carts at checkout, payments at
charge and refund, catalog at commit and release), the order waiting, and the resume sweep finishing it once
the service is back; cancelling, also with payments away; idempotency keys and call ids. After every test the
cross-service audit is clean.
"""

import uuid

import pytest
from nameko.standalone.rpc import ClusterRpcProxy
from prometheus_client import REGISTRY
from sqlalchemy import func, select

from services.carts.service import CartsService
from services.catalog.service import CatalogService
from services.common.db import make_engine
from services.common.errors import Conflict, NotFound, ServiceUnavailable
from services.common.rpc import rpc
from services.orders.service import OrdersService
from services.payments.models import payment_methods
from services.payments.service import PaymentsService
from tests.waiting import wait_until

SERVICES = {
    "catalog": CatalogService,
    "payments": PaymentsService,
    "carts": CartsService,
    "orders": OrdersService,
}
# Short, so that a stopped service is noticed within a second and a stalled order is resumed soon after.
SETTINGS = {
    "RPC_TIMEOUT": 1,
    "SAGA_RESUME_AFTER_SECONDS": 0.5,
    "OUTBOX_POLL_SECONDS": 0.2,
    "EVENT_RETRY_SECONDS": 0.2,
}
SETTLE_SECONDS = 30  # for an order to settle, on two busy cores
GOOD, DECLINED = "4242424242424242", "4000000000000002"
# The charges and refunds `PaymentsAway` refused, in order: (method, order id).
REFUSED_BY_PAYMENTS_AWAY = []


class PaymentsAway(PaymentsService):
    """payments as orders' saga finds it when it is away: every charge and refund is answered ServiceUnavailable.
    Cards still register, on the real payments database: checkout registers the card before its first write, so a
    payments that is wholly away refuses the checkout itself (covered by the carts-away test's twin below)."""

    @rpc(expected_exceptions=ServiceUnavailable)
    def charge(self, order_id, amount_cents, payment_method_id, user_id):
        REFUSED_BY_PAYMENTS_AWAY.append(("charge", order_id))
        raise ServiceUnavailable("payments is away")

    @rpc(expected_exceptions=ServiceUnavailable)
    def refund(self, order_id):
        REFUSED_BY_PAYMENTS_AWAY.append(("refund", order_id))
        raise ServiceUnavailable("payments is away")


class Shop:
    """catalog, payments, carts and orders, each in its own container on its own fresh database, on the test's
    vhost. `rpc` calls any of them; `stop(name)` stops a service gracefully, `start(name)` starts it again on
    the same database. `stop("payments")` leaves `PaymentsAway` in its place until `start("payments")`."""

    def __init__(self, container_factory, configs, rpc):
        self.container_factory = container_factory
        self.configs = configs
        self.rpc = rpc
        self.containers = {}

    def start(self, name):
        if name == "payments" and "payments-away" in self.containers:
            self.stop("payments-away")
        container = self.container_factory(SERVICES[name], self.configs[name])
        container.start()
        self.containers[name] = container

    def stop(self, name):
        self.containers.pop(name).stop()
        if name == "payments":
            away = self.container_factory(PaymentsAway, self.configs["payments"])
            away.start()
            self.containers["payments-away"] = away

    # The observable state of an order, through the services' RPC interfaces.

    def order(self, user, order_id):
        return self.rpc.orders.get_order(user, order_id)

    def settled(self, user, order_id):
        """The order once it has left `pending`."""

        def left_pending():
            order = self.order(user, order_id)
            return order if order["status"] != "pending" else None

        return wait_until(left_pending, timeout=SETTLE_SECONDS, what=f"order {order_id} settled")

    def settled_audit(self):
        """orders' cross-service audit, once no order is left in its saga."""

        def settled():
            report = self.rpc.orders.audit()
            return None if report["checked"]["in_saga"] else report

        return wait_until(settled, timeout=SETTLE_SECONDS, what="no order left in its saga")

    def stock(self, sku):
        return self.rpc.catalog.get_product(sku)["stock"]

    def hold(self, order_id):
        """The order's stock hold in catalog: held, committed, released, or None."""
        return self.rpc.catalog.stock_audit()["holds"].get(order_id)

    def charged(self, order_id):
        """What payments has charged the order, net of refunds."""
        return self.rpc.payments.net_charges().get(order_id, 0)

    def cart_status(self, user, cart_id):
        return self.rpc.carts.get_cart(user, cart_id)["status"]

    # Setting the scene.

    def product(self, stock=10, price_cents=500):
        sku = f"O-{uuid.uuid4().hex[:10].upper()}"
        self.rpc.catalog.create_product(
            {"sku": sku, "name": f"Thing {sku}", "price_cents": price_cents, "stock": stock}
        )
        return sku

    def cart(self, user, *lines):
        return self.rpc.carts.create_cart(user, [{"sku": sku, "quantity": quantity} for sku, quantity in lines])["id"]

    def card(self, number=GOOD):
        """The card number a checkout pays with (orders registers it)."""
        return number

    def checkout(self, user, cart_id, card, key=None, call_id=None):
        """orders.checkout: the order as it answered."""
        return self.rpc.orders.checkout(user, cart_id, card, idempotency_key=key, call_id=call_id)["order"]

    def payment_methods(self):
        """How many payment methods payments has registered."""
        engine = make_engine(self.configs["payments"]["DATABASE_URL"])
        try:
            with engine.connect() as connection:
                return connection.execute(select(func.count()).select_from(payment_methods)).scalar()
        finally:
            engine.dispose()


def unanswered_calls(target):
    """How many of orders' calls to `target` found nothing consuming its queue (a process-wide counter of the
    containers' own metrics), or for payments how many `PaymentsAway` refused: a rise shows that the saga tried
    that step, and that the service was away."""
    if target == "payments":
        return len(REFUSED_BY_PAYMENTS_AWAY)
    labels = {"service": "orders", "target": target, "reason": "unavailable"}
    return REGISTRY.get_sample_value("cartmesh_rpc_client_failures_total", labels) or 0


def tried_again(target, since, times=2):
    """Wait until orders has found `target` away `times` more times than `since`: the saga's own try, and the
    resume sweep's at least once more."""
    wait_until(
        lambda: unanswered_calls(target) - since >= times,
        timeout=SETTLE_SECONDS,
        what=f"orders tried {target} {times} times",
    )


@pytest.fixture
def open_shop(container_factory, service_config, fresh_database, rabbit_config):
    """Factory: `open_shop(**orders_settings)` → a started Shop (orders with these settings besides SETTINGS).
    Each shop's audit must be clean, with no order left in its saga, when the test ends."""
    shops = []
    with ClusterRpcProxy({"AMQP_URI": rabbit_config["AMQP_URI"]}, timeout=15) as rpc:

        def make(**orders_settings):
            configs = {name: service_config(name, DATABASE_URL=fresh_database(name), **SETTINGS) for name in SERVICES}
            configs["orders"].update(orders_settings)
            shop = Shop(container_factory, configs, rpc)
            for name in SERVICES:
                shop.start(name)
            shops.append(shop)
            return shop

        yield make
        for shop in shops:
            report = shop.settled_audit()
            assert report["ok"], report["breaches"]


@pytest.fixture
def shop(open_shop):
    return open_shop()


@pytest.fixture
def user():
    return str(uuid.uuid4())


# --- the way to confirmed --------------------------------------------------------------------------------------


def test_an_order_is_confirmed_its_stock_sold_and_its_total_charged(shop, user):
    mug, cap = shop.product(stock=10, price_cents=250), shop.product(stock=5, price_cents=1000)
    cart_id = shop.cart(user, (mug, 2), (cap, 1))

    placed = shop.checkout(user, cart_id, shop.card())

    assert (placed["status"], placed["cart_id"], placed["failure_reason"]) == ("pending", cart_id, None)
    assert sorted((item["sku"], item["quantity"], item["unit_price_cents"]) for item in placed["items"]) == sorted(
        [(mug, 2, 250), (cap, 1, 1000)]
    )
    assert placed["total_cents"] == 1500
    assert shop.cart_status(user, cart_id) == "checked_out"
    confirmed = shop.settled(user, placed["id"])
    assert (confirmed["status"], confirmed["failure_reason"]) == ("confirmed", None)
    assert (confirmed["items"], confirmed["total_cents"]) == (placed["items"], 1500)
    assert (shop.stock(mug), shop.stock(cap)) == (8, 4)
    assert shop.hold(placed["id"]) == "committed"
    assert shop.charged(placed["id"]) == 1500
    assert shop.rpc.orders.list_orders(user)["items"] == [confirmed]


# --- the ways to failed ----------------------------------------------------------------------------------------


def test_a_line_out_of_stock_fails_the_order_charges_nothing_and_takes_no_stock(shop, user):
    plenty, scarce = shop.product(stock=10), shop.product(stock=1)
    cart_id = shop.cart(user, (plenty, 3), (scarce, 2))

    order = shop.settled(user, shop.checkout(user, cart_id, shop.card())["id"])

    assert (order["status"], order["failure_reason"]) == ("failed", "out_of_stock")
    assert (shop.stock(plenty), shop.stock(scarce)) == (10, 1)
    assert shop.hold(order["id"]) in (None, "released")
    assert shop.charged(order["id"]) == 0
    wait_until(lambda: shop.cart_status(user, cart_id) == "open", what="the cart reopened")


def test_a_declined_card_fails_the_order_releases_its_stock_and_reopens_the_cart(shop, user):
    sku = shop.product(stock=3)
    cart_id = shop.cart(user, (sku, 2))

    order = shop.settled(user, shop.checkout(user, cart_id, shop.card(DECLINED))["id"])

    assert (order["status"], order["failure_reason"]) == ("failed", "payment_declined")
    assert shop.hold(order["id"]) == "released"
    assert shop.stock(sku) == 3
    assert shop.charged(order["id"]) == 0
    wait_until(lambda: shop.cart_status(user, cart_id) == "open", what="the cart reopened")
    # The buyer can try again with another card.
    retry = shop.settled(user, shop.checkout(user, cart_id, shop.card())["id"])
    assert retry["status"] == "confirmed" and shop.stock(sku) == 1


def test_an_order_past_its_deadline_fails_with_timeout_and_everything_is_given_back(open_shop, user):
    shop = open_shop(ORDER_TIMEOUT_SECONDS=5)  # time enough to reserve first, even on a busy machine
    sku = shop.product(stock=4)
    cart_id = shop.cart(user, (sku, 3))
    card = shop.card()
    shop.stop("payments")
    try:
        order_id = shop.checkout(user, cart_id, card)["id"]
        wait_until(lambda: shop.hold(order_id) == "held", what="the stock held")  # the saga waits to charge
        assert shop.stock(sku) == 1
        # The deadline passes while payments is away: the sweep gives up on the order.
        wait_until(
            lambda: shop.order(user, order_id)["failure_reason"] == "timeout",
            timeout=SETTLE_SECONDS,
            what="the order timed out",
        )
    finally:
        shop.start("payments")

    order = shop.settled(user, order_id)
    assert (order["status"], order["failure_reason"]) == ("failed", "timeout")
    assert shop.hold(order_id) == "released" and shop.stock(sku) == 4
    assert shop.charged(order_id) == 0
    # A charge or reserve arriving late for the order takes nothing.
    method_id = shop.rpc.payments.register_card(user, GOOD)["payment_method_id"]
    assert shop.rpc.payments.charge(order_id, 1500, method_id, user)["status"] == "voided"
    with pytest.raises(Conflict):
        shop.rpc.catalog.reserve_stock(order_id, [{"sku": sku, "quantity": 3}])
    assert shop.charged(order_id) == 0 and shop.stock(sku) == 4
    wait_until(lambda: shop.cart_status(user, cart_id) == "open", what="the cart reopened")


# --- a step whose service is away: the order waits, and the resume sweep finishes it ---------------------------


def test_with_payments_away_the_order_waits_to_charge_and_the_sweep_confirms_it_when_payments_is_back(shop, user):
    sku = shop.product(stock=5, price_cents=700)
    cart_id = shop.cart(user, (sku, 2))
    card = shop.card()
    since = unanswered_calls("payments")
    shop.stop("payments")
    try:
        order_id = shop.checkout(user, cart_id, card)["id"]
        tried_again("payments", since)
        assert shop.order(user, order_id)["status"] == "pending"
        assert shop.hold(order_id) == "held" and shop.stock(sku) == 3
    finally:
        shop.start("payments")

    order = shop.settled(user, order_id)
    assert (order["status"], order["failure_reason"]) == ("confirmed", None)
    assert shop.charged(order_id) == 1400
    assert shop.hold(order_id) == "committed" and shop.stock(sku) == 3


def test_with_catalog_away_after_the_charge_the_order_waits_to_commit_and_is_confirmed_when_catalog_is_back(shop, user):
    sku = shop.product(stock=5, price_cents=700)
    cart_id = shop.cart(user, (sku, 1))
    card = shop.card()
    shop.stop("payments")  # holds the order before its charge, so that catalog can be stopped after its reserve
    order_id = shop.checkout(user, cart_id, card)["id"]
    wait_until(lambda: shop.hold(order_id) == "held", what="the stock held")
    since = unanswered_calls("catalog")
    shop.stop("catalog")
    try:
        shop.start("payments")
        wait_until(lambda: shop.charged(order_id) == 700, timeout=SETTLE_SECONDS, what="the order charged")
        tried_again("catalog", since)
        assert shop.order(user, order_id)["status"] == "pending"
    finally:
        shop.start("catalog")

    order = shop.settled(user, order_id)
    assert order["status"] == "confirmed"
    assert shop.hold(order_id) == "committed" and shop.stock(sku) == 4
    assert shop.charged(order_id) == 700


def test_with_payments_away_an_order_out_of_stock_waits_to_refund_and_fails_when_payments_is_back(shop, user):
    sku = shop.product(stock=1)
    cart_id = shop.cart(user, (sku, 2))
    card = shop.card()
    since = unanswered_calls("payments")
    shop.stop("payments")
    try:
        order_id = shop.checkout(user, cart_id, card)["id"]
        tried_again("payments", since)  # the refund that makes sure nothing is charged
        assert shop.order(user, order_id)["status"] == "pending"
    finally:
        shop.start("payments")

    order = shop.settled(user, order_id)
    assert (order["status"], order["failure_reason"]) == ("failed", "out_of_stock")
    assert shop.charged(order_id) == 0 and shop.stock(sku) == 1
    wait_until(lambda: shop.cart_status(user, cart_id) == "open", what="the cart reopened")


def test_with_catalog_away_a_declined_order_waits_to_release_its_stock_and_fails_when_catalog_is_back(shop, user):
    sku = shop.product(stock=4)
    cart_id = shop.cart(user, (sku, 3))
    card = shop.card(DECLINED)
    shop.stop("payments")  # holds the order before its charge, so that catalog can be stopped after its reserve
    order_id = shop.checkout(user, cart_id, card)["id"]
    wait_until(lambda: shop.hold(order_id) == "held", what="the stock held")
    since = unanswered_calls("catalog")
    shop.stop("catalog")
    try:
        shop.start("payments")
        tried_again("catalog", since)
        assert shop.order(user, order_id)["status"] == "pending"
    finally:
        shop.start("catalog")

    order = shop.settled(user, order_id)
    assert (order["status"], order["failure_reason"]) == ("failed", "payment_declined")
    assert shop.hold(order_id) == "released" and shop.stock(sku) == 4
    assert shop.charged(order_id) == 0
    wait_until(lambda: shop.cart_status(user, cart_id) == "open", what="the cart reopened")


def test_with_carts_away_checkout_is_unavailable_and_the_order_it_began_fails_holding_nothing(shop, user):
    sku = shop.product(stock=2)
    cart_id = shop.cart(user, (sku, 1))
    card = shop.card()
    shop.stop("carts")
    try:
        with pytest.raises(ServiceUnavailable):
            shop.checkout(user, cart_id, card)
        [order] = shop.rpc.orders.list_orders(user)["items"]
        order = shop.settled(user, order["id"])
    finally:
        shop.start("carts")

    assert (order["status"], order["failure_reason"]) == ("failed", "timeout")
    assert shop.charged(order["id"]) == 0 and shop.hold(order["id"]) in (None, "released")
    assert shop.stock(sku) == 2
    # The cart was never taken: it is open, and the next checkout goes through.
    assert shop.cart_status(user, cart_id) == "open"
    assert shop.settled(user, shop.checkout(user, cart_id, card)["id"])["status"] == "confirmed"


# --- cancelling ------------------------------------------------------------------------------------------------


def test_cancelling_a_confirmed_order_refunds_it_and_puts_its_stock_back(shop, user):
    sku = shop.product(stock=4)
    order_id = shop.checkout(user, shop.cart(user, (sku, 3)), shop.card())["id"]
    assert shop.settled(user, order_id)["status"] == "confirmed" and shop.stock(sku) == 1

    cancelled = shop.rpc.orders.cancel_order(user, order_id)

    assert cancelled["status"] == "cancelled"
    wait_until(lambda: shop.charged(order_id) == 0, what="the order refunded")
    wait_until(lambda: shop.stock(sku) == 4, what="the stock back")
    assert shop.hold(order_id) == "released"
    assert shop.order(user, order_id)["status"] == "cancelled"
    with pytest.raises(Conflict):
        shop.rpc.orders.cancel_order(user, order_id)
    with pytest.raises(NotFound):
        shop.rpc.orders.cancel_order(str(uuid.uuid4()), order_id)  # another user's order


def test_only_a_confirmed_order_can_be_cancelled(shop, user):
    sku = shop.product(stock=4)
    order_id = shop.checkout(user, shop.cart(user, (sku, 1)), shop.card(DECLINED))["id"]
    assert shop.settled(user, order_id)["status"] == "failed"

    with pytest.raises(Conflict):
        shop.rpc.orders.cancel_order(user, order_id)

    assert shop.order(user, order_id)["status"] == "failed"


def test_a_cancel_with_payments_away_is_recorded_and_the_sweep_refunds_and_restocks_when_payments_is_back(shop, user):
    sku = shop.product(stock=4, price_cents=300)
    order_id = shop.checkout(user, shop.cart(user, (sku, 2)), shop.card())["id"]
    assert shop.settled(user, order_id)["status"] == "confirmed"
    since = unanswered_calls("payments")
    shop.stop("payments")
    try:
        assert shop.rpc.orders.cancel_order(user, order_id)["status"] == "cancelled"
        tried_again("payments", since)
        assert shop.hold(order_id) == "committed" and shop.stock(sku) == 2  # nothing given back before the refund
    finally:
        shop.start("payments")

    wait_until(lambda: shop.stock(sku) == 4, timeout=SETTLE_SECONDS, what="the stock back")
    assert shop.charged(order_id) == 0
    assert shop.hold(order_id) == "released"
    assert shop.order(user, order_id)["status"] == "cancelled"


# --- idempotency keys ------------------------------------------------------------------------------------------


def test_a_repeated_idempotency_key_answers_the_same_order(shop, user):
    sku = shop.product(stock=5)
    cart_id = shop.cart(user, (sku, 1))
    card = shop.card()

    first = shop.rpc.orders.checkout(user, cart_id, card, idempotency_key="key-1")
    again = shop.rpc.orders.checkout(user, cart_id, card, idempotency_key="key-1")

    assert (first["created"], again["created"]) == (True, False)
    assert again["order"]["id"] == first["order"]["id"]
    order = shop.settled(user, first["order"]["id"])
    late = shop.rpc.orders.checkout(user, cart_id, card, idempotency_key="key-1")
    assert (late["created"], late["order"]) == (False, order)
    with pytest.raises(Conflict):  # another key is another order, and the cart is taken
        shop.checkout(user, cart_id, card, key="key-2")
    assert shop.rpc.orders.list_orders(user)["total"] == 1
    assert shop.charged(order["id"]) == 500 and shop.stock(sku) == 4


def test_one_key_sent_concurrently_makes_one_order_and_one_charge(shop, user):
    sku = shop.product(stock=5)
    cart_id = shop.cart(user, (sku, 1))
    card = shop.card()

    replies = [shop.rpc.orders.checkout.call_async(user, cart_id, card, idempotency_key="same") for _ in range(8)]
    answers = [reply.result() for reply in replies]

    assert len({answer["order"]["id"] for answer in answers}) == 1
    assert {answer["order"]["total_cents"] for answer in answers} == {500}  # every answer is the order complete
    assert sorted(answer["created"] for answer in answers) == [False] * 7 + [True]
    order_id = answers[0]["order"]["id"]
    assert shop.settled(user, order_id)["status"] == "confirmed"
    assert shop.rpc.orders.list_orders(user)["total"] == 1
    assert [amount for amount in shop.rpc.payments.net_charges().values() if amount] == [500]
    assert shop.stock(sku) == 4


def test_a_key_belongs_to_its_user(shop, user):
    sku = shop.product(stock=5)
    other = str(uuid.uuid4())
    card = shop.card()

    mine = shop.checkout(user, shop.cart(user, (sku, 1)), card, key="shared-key")
    theirs = shop.checkout(other, shop.cart(other, (sku, 1)), card, key="shared-key")

    assert mine["id"] != theirs["id"]
    assert shop.settled(user, mine["id"])["status"] == shop.settled(other, theirs["id"])["status"] == "confirmed"
    assert shop.stock(sku) == 3


def test_a_repeated_idempotency_key_registers_no_further_payment_method(shop, user):
    sku = shop.product(stock=5)
    cart_id = shop.cart(user, (sku, 1))
    first = shop.rpc.orders.checkout(user, cart_id, GOOD, idempotency_key="card-once")
    methods = shop.payment_methods()
    assert methods == 1

    for _ in range(3):  # the key is looked up before the card is registered
        again = shop.rpc.orders.checkout(user, cart_id, GOOD, idempotency_key="card-once")
        assert (again["created"], again["order"]["id"]) == (False, first["order"]["id"])
    assert shop.payment_methods() == methods
    assert shop.settled(user, first["order"]["id"])["status"] == "confirmed"


# --- call ids --------------------------------------------------------------------------------------------------


def test_a_repeated_checkout_call_answers_its_order_and_writes_nothing(shop, user):
    sku = shop.product(stock=5)
    cart_id = shop.cart(user, (sku, 1))
    call_id = uuid.uuid4().hex

    first = shop.rpc.orders.checkout(user, cart_id, GOOD, call_id=call_id)
    again = shop.rpc.orders.checkout(user, cart_id, GOOD, call_id=call_id)

    assert first["created"] and again == {"order": again["order"], "created": False}
    assert again["order"]["id"] == first["order"]["id"]
    assert shop.payment_methods() == 1
    assert shop.rpc.orders.list_orders(user)["total"] == 1
    assert shop.settled(user, first["order"]["id"])["status"] == "confirmed"


def test_a_repeated_cancel_call_answers_the_cancelled_order_instead_of_a_conflict(shop, user):
    sku = shop.product(stock=4, price_cents=300)
    order_id = shop.checkout(user, shop.cart(user, (sku, 1)), shop.card())["id"]
    assert shop.settled(user, order_id)["status"] == "confirmed"
    call_id = uuid.uuid4().hex

    first = shop.rpc.orders.cancel_order(user, order_id, call_id=call_id)
    again = shop.rpc.orders.cancel_order(user, order_id, call_id=call_id)

    assert first["status"] == again["status"] == "cancelled" and again["id"] == order_id
    with pytest.raises(Conflict):  # another call to cancel it is refused as before
        shop.rpc.orders.cancel_order(user, order_id, call_id=uuid.uuid4().hex)
    wait_until(lambda: shop.stock(sku) == 4, timeout=SETTLE_SECONDS, what="the stock back")
    assert shop.charged(order_id) == 0


def test_with_payments_wholly_away_checkout_is_refused_before_anything_is_written(shop, user):
    sku = shop.product(stock=5)
    cart_id = shop.cart(user, (sku, 1))
    shop.containers.pop("payments").stop()  # no stand-in: nothing answers payments' queue
    try:
        with pytest.raises(ServiceUnavailable):
            shop.rpc.orders.checkout(user, cart_id, GOOD, idempotency_key="away")
        assert shop.rpc.orders.list_orders(user)["total"] == 0
        assert shop.cart_status(user, cart_id) == "open"
    finally:
        shop.start("payments")
