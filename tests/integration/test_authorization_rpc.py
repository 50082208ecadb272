"""Authorisation in depth: the carts and orders services check ownership themselves, on the user id they are
given, so a bug in one gateway route could not hand one user another's cart or order.

On a whole running system (tests/e2e/conftest.py `running_system`, once per database backend), Bob has an open
cart with a line, a checked-out cart and its confirmed order (placed with an Idempotency-Key). Alice then tries
every door onto them — the services' RPC methods called directly with her user id, and every HTTP route with her
token — and each one answers NotFound (404 over HTTP), exactly as for something that does not exist (API.md),
while everything of Bob's, read back through the services, is unchanged.
"""

import uuid

import pytest

from conftest import POSTGRES_ADMIN_URL
from services.common.errors import Forbidden, NotFound, ValidationFailed
from tests.e2e.conftest import assert_error, running_system
from tests.waiting import wait_until

GOOD_CARD = "4242424242424242"
BOB_KEY = "bob-checkout-1"


class World:
    """Alice and Bob on one running system, with Bob's cart, checked-out cart and order."""

    def __init__(self, system):
        self.system = system
        admin = system.admin()
        self.sku = f"AUTHZ-{uuid.uuid4().hex[:8]}"
        assert (
            admin.post(
                "/products", json={"sku": self.sku, "name": "Lock", "price_cents": 700, "stock": 100}
            ).status_code
            == 201
        )
        self.alice, self.bob = system.new_user(), system.new_user()
        self.alice_id = self.alice.get("/me").json()["id"]
        self.bob_id = self.bob.get("/me").json()["id"]
        self.bob_cart = self._cart(self.bob)
        self.bob_checked_out = self._cart(self.bob)
        placed = self.bob.post(
            f"/carts/{self.bob_checked_out}/checkout",
            headers={"Idempotency-Key": BOB_KEY},
            json={"payment": {"card_number": GOOD_CARD}},
        )
        assert placed.status_code == 202, placed.text
        self.bob_order = placed.json()["id"]
        self._wait_confirmed(self.bob_order)
        self.alice_cart = self._cart(self.alice)

    def _cart(self, client):
        response = client.post("/carts", json={"items": [{"sku": self.sku, "quantity": 2}]})
        assert response.status_code == 201, response.text
        return response.json()["id"]

    def _wait_confirmed(self, order_id, timeout=20):
        wait_until(
            lambda: self.rpc("orders", "get_order", self.bob_id, order_id)["status"] == "confirmed",
            timeout=timeout,
            what=f"order {order_id} confirmed",
        )

    def rpc(self, service, method, *args, **kwargs):
        return self.system.rpc(service, method, *args, **kwargs)

    def bobs_things(self, stock=True):
        """Everything of Bob's that a door could change, read through the services as Bob (and the stock his
        cart's product has left, which an order of anyone's would take)."""
        things = {
            "carts": self.rpc("carts", "list_carts", self.bob_id),
            "orders": self.rpc("orders", "list_orders", self.bob_id),
        }
        if stock:
            things["stock"] = self.rpc("catalog", "get_product", self.sku)["stock"]
        return things

    def alices_things(self):
        return {
            "carts": self.rpc("carts", "list_carts", self.alice_id),
            "orders": self.rpc("orders", "list_orders", self.alice_id),
        }


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def world(request, vhost_pipeline, tmp_path_factory):
    if request.param == "postgresql" and not POSTGRES_ADMIN_URL:
        pytest.skip("TEST_POSTGRES_URL is not set: PostgreSQL variant not run")
    folder = tmp_path_factory.mktemp(f"authz-{request.param}")
    with running_system(request.param, vhost_pipeline, folder) as system:
        yield World(system)


# Every RPC method of carts and orders that takes an owner, called as Alice on Bob's cart or order:
# (service, method, arguments from the world).
RPC_DOORS = {
    "carts.get_cart": ("carts", "get_cart", lambda w: (w.alice_id, w.bob_cart)),
    "carts.get_cart checked out": ("carts", "get_cart", lambda w: (w.alice_id, w.bob_checked_out)),
    "carts.get_cart upper case": ("carts", "get_cart", lambda w: (w.alice_id, w.bob_cart.upper())),
    "carts.add_item": ("carts", "add_item", lambda w: (w.alice_id, w.bob_cart, w.sku, 1)),
    "carts.add_item new sku": ("carts", "add_item", lambda w: (w.alice_id, w.bob_cart, "OTHER", 1)),
    "carts.set_item": ("carts", "set_item", lambda w: (w.alice_id, w.bob_cart, w.sku, 5)),
    "carts.set_item to 0": ("carts", "set_item", lambda w: (w.alice_id, w.bob_cart, w.sku, 0)),
    "carts.remove_item": ("carts", "remove_item", lambda w: (w.alice_id, w.bob_cart, w.sku)),
    "carts.delete_cart": ("carts", "delete_cart", lambda w: (w.alice_id, w.bob_cart)),
    "carts.delete_cart checked out": ("carts", "delete_cart", lambda w: (w.alice_id, w.bob_checked_out)),
    "carts.checkout_cart": ("carts", "checkout_cart", lambda w: (w.alice_id, w.bob_cart, str(uuid.uuid4()))),
    # With the very order id that checked Bob's cart out: a repeat of that checkout must still be Bob's alone.
    "carts.checkout_cart bob's order": (
        "carts",
        "checkout_cart",
        lambda w: (w.alice_id, w.bob_checked_out, w.bob_order),
    ),
    "orders.checkout": ("orders", "checkout", lambda w: (w.alice_id, w.bob_cart, GOOD_CARD)),
    "orders.checkout with bob's key": (
        "orders",
        "checkout",
        lambda w: (w.alice_id, w.bob_cart, GOOD_CARD, BOB_KEY),
    ),
    "orders.get_order": ("orders", "get_order", lambda w: (w.alice_id, w.bob_order)),
    "orders.get_order upper case": ("orders", "get_order", lambda w: (w.alice_id, w.bob_order.upper())),
    "orders.cancel_order": ("orders", "cancel_order", lambda w: (w.alice_id, w.bob_order)),
}


@pytest.mark.parametrize("door", RPC_DOORS)
def test_every_rpc_door_refuses_another_users_cart_or_order_and_changes_nothing(world, door):
    service, method, arguments = RPC_DOORS[door]
    bobs, alices = world.bobs_things(), world.alices_things()
    with pytest.raises(NotFound):
        world.rpc(service, method, *arguments(world))
    assert world.bobs_things() == bobs
    assert world.alices_things() == alices


def test_lists_hold_only_the_callers_own(world):
    alices = world.alices_things()
    assert [cart["id"] for cart in alices["carts"]["items"]] == [world.alice_cart]
    assert alices["orders"]["items"] == [] and alices["orders"]["total"] == 0
    bobs = world.bobs_things()
    assert {cart["id"] for cart in bobs["carts"]["items"]} == {world.bob_cart, world.bob_checked_out}
    assert [order["id"] for order in bobs["orders"]["items"]] == [world.bob_order]


NOT_USER_IDS = [None, "", 7, ["x"], {"id": "x"}, "u" * 65]
# Every method that takes an owner, with that owner replaced by something that is not a user id.
OWNER_DOORS = {
    "carts.list_carts": ("carts", "list_carts", lambda w, owner: (owner,)),
    "carts.get_cart": ("carts", "get_cart", lambda w, owner: (owner, w.bob_cart)),
    "carts.add_item": ("carts", "add_item", lambda w, owner: (owner, w.bob_cart, w.sku, 1)),
    "carts.delete_cart": ("carts", "delete_cart", lambda w, owner: (owner, w.bob_cart)),
    "orders.list_orders": ("orders", "list_orders", lambda w, owner: (owner,)),
    "orders.get_order": ("orders", "get_order", lambda w, owner: (owner, w.bob_order)),
    "orders.cancel_order": ("orders", "cancel_order", lambda w, owner: (owner, w.bob_order)),
    "orders.checkout": ("orders", "checkout", lambda w, owner: (owner, w.bob_cart, GOOD_CARD)),
}


@pytest.mark.parametrize("owner", NOT_USER_IDS, ids=repr)
@pytest.mark.parametrize("door", OWNER_DOORS)
def test_an_owner_that_is_not_a_user_id_is_refused(world, door, owner):
    """Refused as a validation error before any query: never a driver error, never a match."""
    service, method, arguments = OWNER_DOORS[door]
    bobs = world.bobs_things()
    with pytest.raises(ValidationFailed) as refused:
        world.rpc(service, method, *arguments(world, owner))
    assert set(refused.value.details["fields"]) == {"user_id"}
    assert world.bobs_things() == bobs


def test_an_idempotency_key_is_per_user(world):
    """Carol sending Bob's key gets an order of her own, for her own cart: never Bob's order, never a refusal."""
    carol = world.system.new_user()
    carol_id = carol.get("/me").json()["id"]
    bobs = world.bobs_things(stock=False)
    cart = world._cart(carol)
    placed = world.rpc("orders", "checkout", carol_id, cart, GOOD_CARD, idempotency_key=BOB_KEY)
    assert placed["created"] is True and placed["order"]["id"] != world.bob_order
    assert placed["order"]["cart_id"] == cart
    assert world.bobs_things(stock=False) == bobs
    again = world.rpc("orders", "checkout", carol_id, cart, GOOD_CARD, idempotency_key=BOB_KEY)
    assert (again["created"], again["order"]["id"]) == (False, placed["order"]["id"])


def test_a_payment_method_is_charged_for_its_owner_only(world):
    """Alice cannot pay with Bob's payment method, even knowing its id: payments refuses the charge and charges
    nothing; Bob's own charge on it goes through."""
    bob_method = world.rpc("payments", "register_card", world.bob_id, GOOD_CARD)["payment_method_id"]
    charges = world.rpc("payments", "net_charges")
    alices_order, bobs_order = str(uuid.uuid4()), str(uuid.uuid4())
    with pytest.raises(Forbidden):
        world.rpc("payments", "charge", alices_order, 100, bob_method, world.alice_id)
    assert world.rpc("payments", "net_charges") == charges
    assert world.rpc("payments", "charge", bobs_order, 100, bob_method, world.bob_id)["status"] == "succeeded"
    world.rpc("payments", "refund", bobs_order)  # what the audit expects of a charge without an order


# --- the same doors over HTTP, with Alice's token --------------------------------------------------------------------

HTTP_DOORS = {
    "GET cart": ("GET", "/carts/{bob_cart}", None, {}),
    "GET checked-out cart": ("GET", "/carts/{bob_checked_out}", None, {}),
    "add item": ("POST", "/carts/{bob_cart}/items", {"sku": "{sku}", "quantity": 1}, {}),
    "set item": ("PUT", "/carts/{bob_cart}/items/{sku}", {"quantity": 5}, {}),
    "set item to 0": ("PUT", "/carts/{bob_cart}/items/{sku}", {"quantity": 0}, {}),
    "remove item": ("DELETE", "/carts/{bob_cart}/items/{sku}", None, {}),
    "delete cart": ("DELETE", "/carts/{bob_cart}", None, {}),
    "checkout": ("POST", "/carts/{bob_cart}/checkout", {"payment": {"card_number": GOOD_CARD}}, {}),
    "checkout with bob's key": (
        "POST",
        "/carts/{bob_checked_out}/checkout",
        {"payment": {"card_number": GOOD_CARD}},
        {"Idempotency-Key": BOB_KEY},
    ),
    "GET order": ("GET", "/orders/{bob_order}", None, {}),
    "cancel order": ("POST", "/orders/{bob_order}/cancel", None, {}),
}


def _fill(template, world):
    names = {
        "bob_cart": world.bob_cart,
        "bob_checked_out": world.bob_checked_out,
        "bob_order": world.bob_order,
        "sku": world.sku,
    }
    if isinstance(template, str):
        return template.format(**names)
    if isinstance(template, dict):
        return {key: _fill(value, world) for key, value in template.items()}
    return template


@pytest.mark.parametrize("door", HTTP_DOORS)
def test_every_http_door_answers_404_for_another_users_cart_or_order_and_changes_nothing(world, door):
    method, path, body, headers = HTTP_DOORS[door]
    bobs, alices = world.bobs_things(), world.alices_things()
    kwargs = {"json": _fill(body, world)} if body is not None else {}
    response = world.alice.request(method, _fill(path, world), headers=dict(headers), **kwargs)
    assert_error(response, 404, "not_found")
    assert world.bobs_things() == bobs
    assert world.alices_things() == alices


def test_http_lists_hold_only_the_callers_own(world):
    carts = world.alice.get("/carts").json()["items"]
    orders = world.alice.get("/orders").json()
    assert world.bob_cart not in {cart["id"] for cart in carts}
    assert world.bob_checked_out not in {cart["id"] for cart in carts}
    assert world.bob_order not in {order["id"] for order in orders["items"]}
