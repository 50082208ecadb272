"""Contract: Carts over HTTP — shape, arithmetic, limits, ownership, current prices, concurrency."""

import re
import uuid
from datetime import datetime

import eventlet
import pytest
from sqlalchemy import create_engine, text

from tests.e2e.conftest import assert_error
from tests.waiting import wait_until

ISO_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|\+00:00)$")


def new_cart(client, **body):
    response = client.post("/carts", json=body)
    assert response.status_code == 201, response.text
    return response.json()


def test_new_cart_has_the_contract_shape(user):
    cart = new_cart(user)
    assert set(cart) == {"id", "status", "items", "total_cents", "created_at", "updated_at"}
    assert uuid.UUID(cart["id"])
    assert (cart["status"], cart["items"], cart["total_cents"]) == ("open", [], 0)
    for stamp in (cart["created_at"], cart["updated_at"]):
        assert ISO_UTC.match(stamp), stamp
        datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    assert user.get(f"/carts/{cart['id']}").json() == cart


def test_cart_with_items_and_arithmetic(user, product):
    cart = new_cart(user, items=[{"sku": product["sku"], "quantity": 3}])
    assert cart["items"] == [
        {
            "sku": product["sku"],
            "name": product["name"],
            "quantity": 3,
            "unit_price_cents": 1250,
            "line_total_cents": 3750,
        }
    ]
    assert cart["total_cents"] == 3750


def test_add_item_adds_to_an_existing_line(user, product, admin):
    other = admin.post(
        "/products", json={"sku": f"O-{uuid.uuid4().hex[:8]}", "name": "Other", "price_cents": 5, "stock": 1}
    ).json()
    cart = new_cart(user)
    user.post(f"/carts/{cart['id']}/items", json={"sku": product["sku"], "quantity": 2})
    user.post(f"/carts/{cart['id']}/items", json={"sku": other["sku"], "quantity": 1})
    response = user.post(f"/carts/{cart['id']}/items", json={"sku": product["sku"], "quantity": 5})
    assert response.status_code == 200
    lines = {item["sku"]: item for item in response.json()["items"]}
    assert lines[product["sku"]]["quantity"] == 7
    assert lines[product["sku"]]["line_total_cents"] == 7 * 1250
    assert response.json()["total_cents"] == 7 * 1250 + 5


def test_put_sets_creates_and_zero_removes(user, product):
    cart = new_cart(user)
    path = f"/carts/{cart['id']}/items/{product['sku']}"
    assert user.put(path, json={"quantity": 4}).json()["items"][0]["quantity"] == 4
    assert user.put(path, json={"quantity": 999}).json()["items"][0]["quantity"] == 999
    assert user.put(path, json={"quantity": 1}).json()["items"][0]["quantity"] == 1
    emptied = user.put(path, json={"quantity": 0})
    assert emptied.status_code == 200 and emptied.json()["items"] == []


def test_delete_line_and_missing_line(user, product):
    cart = new_cart(user, items=[{"sku": product["sku"], "quantity": 1}])
    path = f"/carts/{cart['id']}/items/{product['sku']}"
    response = user.delete(path)
    assert response.status_code == 200 and response.json()["items"] == []
    assert_error(user.delete(path), 404, "not_found")


def test_delete_cart_is_204_then_gone(user):
    cart = new_cart(user)
    response = user.delete(f"/carts/{cart['id']}")
    assert response.status_code == 204 and response.content == b""
    assert_error(user.get(f"/carts/{cart['id']}"), 404, "not_found")
    assert_error(user.delete(f"/carts/{cart['id']}"), 404, "not_found")


def test_list_is_the_callers_carts_newest_first(system, user):
    first, second = new_cart(user), new_cart(user)
    new_cart(system.new_user())
    listed = user.get("/carts")
    assert listed.status_code == 200
    assert [cart["id"] for cart in listed.json()["items"]] == [second["id"], first["id"]]


@pytest.mark.parametrize("quantity", [0, 1000, -1, "2", 2.5, True, None])
def test_add_rejects_bad_quantities_and_changes_nothing(user, product, quantity):
    cart = new_cart(user, items=[{"sku": product["sku"], "quantity": 1}])
    error = assert_error(
        user.post(f"/carts/{cart['id']}/items", json={"sku": product["sku"], "quantity": quantity}),
        422,
        "validation_error",
    )
    assert "quantity" in error["details"]["fields"]
    assert user.get(f"/carts/{cart['id']}").json()["items"][0]["quantity"] == 1


@pytest.mark.parametrize("quantity", [1000, -1, "2", 2.5, False])
def test_put_rejects_bad_quantities(user, product, quantity):
    cart = new_cart(user)
    assert_error(
        user.put(f"/carts/{cart['id']}/items/{product['sku']}", json={"quantity": quantity}), 422, "validation_error"
    )
    assert user.get(f"/carts/{cart['id']}").json()["items"] == []


def test_a_line_never_exceeds_999(user, product):
    cart = new_cart(user, items=[{"sku": product["sku"], "quantity": 990}])
    error = assert_error(
        user.post(f"/carts/{cart['id']}/items", json={"sku": product["sku"], "quantity": 10}), 422, "validation_error"
    )
    assert "quantity" in error["details"]["fields"]
    assert user.get(f"/carts/{cart['id']}").json()["items"][0]["quantity"] == 990
    assert_error(
        user.post(
            "/carts",
            json={"items": [{"sku": product["sku"], "quantity": 500}, {"sku": product["sku"], "quantity": 500}]},
        ),
        422,
        "validation_error",
    )


def test_unknown_sku_is_422_unknown_product_and_nothing_is_created(user, product):
    before = len(user.get("/carts").json()["items"])
    missing = f"NOPE-{uuid.uuid4().hex[:8]}"
    assert_error(
        user.post("/carts", json={"items": [{"sku": product["sku"], "quantity": 1}, {"sku": missing, "quantity": 1}]}),
        422,
        "unknown_product",
    )
    assert len(user.get("/carts").json()["items"]) == before
    cart = new_cart(user)
    assert_error(user.post(f"/carts/{cart['id']}/items", json={"sku": missing, "quantity": 1}), 422, "unknown_product")
    assert_error(user.put(f"/carts/{cart['id']}/items/{missing}", json={"quantity": 1}), 422, "unknown_product")
    assert user.get(f"/carts/{cart['id']}").json()["items"] == []


def test_bad_item_bodies_are_422(user, product):
    cart = new_cart(user)
    for body in (
        {"quantity": 1},
        {"sku": product["sku"]},
        {"sku": "bad sku!", "quantity": 1},
        {"sku": product["sku"], "quantity": 1, "extra": True},
    ):
        assert_error(user.post(f"/carts/{cart['id']}/items", json=body), 422, "validation_error")
    for body in (
        {"items": "x"},
        {"items": [{"sku": product["sku"]}]},
        {"items": [{"sku": product["sku"], "quantity": "1"}]},
    ):
        assert_error(user.post("/carts", json=body), 422, "validation_error")


def test_a_price_change_reaches_every_open_cart(system, admin, user, product):
    carts = [(user, new_cart(user, items=[{"sku": product["sku"], "quantity": 2}]))]
    other = system.new_user()
    carts.append((other, new_cart(other, items=[{"sku": product["sku"], "quantity": 1}])))
    admin.patch(f"/products/{product['sku']}", json={"price_cents": 2000, "name": "Renamed widget"})

    # Carts shows the prices catalog last announced: the change arrives with its product_changed event.
    def line(client, cart):
        item = client.get(f"/carts/{cart['id']}").json()["items"][0]
        return item["name"], item["unit_price_cents"], item["line_total_cents"]

    for (client, cart), total in zip(carts, (4000, 2000), strict=True):
        wait_until(
            lambda client=client, cart=cart, total=total: line(client, cart) == ("Renamed widget", 2000, total),
            timeout=5,
            what="the new price in an open cart",
        )


def test_someone_elses_cart_is_404_everywhere(system, user, product):
    cart = new_cart(user, items=[{"sku": product["sku"], "quantity": 1}])
    stranger = system.new_user()
    base = f"/carts/{cart['id']}"
    for response in (
        stranger.get(base),
        stranger.post(f"{base}/items", json={"sku": product["sku"], "quantity": 1}),
        stranger.put(f"{base}/items/{product['sku']}", json={"quantity": 5}),
        stranger.delete(f"{base}/items/{product['sku']}"),
        stranger.delete(base),
    ):
        assert_error(response, 404, "not_found")
    assert user.get(base).json()["items"][0]["quantity"] == 1
    assert cart["id"] not in [c["id"] for c in stranger.get("/carts").json()["items"]]


def test_unknown_and_malformed_cart_ids_are_404(user):
    for cart_id in (str(uuid.uuid4()), "not-a-uuid", "1"):
        assert_error(user.get(f"/carts/{cart_id}"), 404, "not_found")


def test_carts_need_a_token(anon):
    assert_error(anon.get("/carts"), 401, "unauthorized")
    assert_error(anon.post("/carts", json={}), 401, "unauthorized")
    assert_error(anon.get(f"/carts/{uuid.uuid4()}"), 401, "unauthorized")


def test_a_checked_out_cart_cannot_change(system, user, product):
    cart = new_cart(user, items=[{"sku": product["sku"], "quantity": 1}])
    engine = create_engine(system.database_urls["carts"])
    with engine.begin() as connection:
        connection.execute(text("UPDATE carts SET status = 'checked_out' WHERE id = :id"), {"id": cart["id"]})
    engine.dispose()
    base = f"/carts/{cart['id']}"
    assert_error(user.post(f"{base}/items", json={"sku": product["sku"], "quantity": 1}), 409, "conflict")
    assert_error(user.put(f"{base}/items/{product['sku']}", json={"quantity": 3}), 409, "conflict")
    assert_error(user.delete(f"{base}/items/{product['sku']}"), 409, "conflict")
    assert_error(user.delete(base), 409, "conflict")
    frozen = user.get(base).json()
    assert frozen["status"] == "checked_out" and frozen["items"][0]["quantity"] == 1


def test_concurrent_adds_are_never_lost(system, user, product):
    cart = new_cart(user)
    path = f"/carts/{cart['id']}/items"

    def add_one(_):
        return system.client(user.token).post(path, json={"sku": product["sku"], "quantity": 1}).status_code

    statuses = list(eventlet.GreenPool(25).imap(add_one, range(25)))
    assert statuses == [200] * 25
    assert user.get(f"/carts/{cart['id']}").json()["items"][0]["quantity"] == 25


def test_a_cart_write_retried_with_its_idempotency_key_applies_once(system, user, product):
    sku = product["sku"]
    made = [user.post("/carts", json={}, headers={"Idempotency-Key": "open-1"}) for _ in range(2)]
    assert [response.status_code for response in made] == [201, 201]
    assert made[0].json() == made[1].json()
    cart = made[0].json()
    assert [item["id"] for item in user.get("/carts").json()["items"]].count(cart["id"]) == 1

    path = f"/carts/{cart['id']}/items"
    added = [user.post(path, json={"sku": sku, "quantity": 2}, headers={"Idempotency-Key": "add-1"}) for _ in range(3)]
    assert [response.status_code for response in added] == [200] * 3
    assert {response.json()["items"][0]["quantity"] for response in added} == {2}
    assert user.get(f"/carts/{cart['id']}").json()["items"][0]["quantity"] == 2
    # Another key (or none) is another request.
    assert (
        user.post(path, json={"sku": sku, "quantity": 2}, headers={"Idempotency-Key": "add-2"}).json()["items"][0][
            "quantity"
        ]
        == 4
    )
    assert user.post(path, json={"sku": sku, "quantity": 1}).json()["items"][0]["quantity"] == 5
    # A key is the caller's own: another user's request with the same key is not a repeat of this one.
    other = system.new_user()
    theirs = new_cart(other)
    response = other.post(
        f"/carts/{theirs['id']}/items", json={"sku": sku, "quantity": 2}, headers={"Idempotency-Key": "add-1"}
    )
    assert response.json()["items"][0]["quantity"] == 2


def test_a_malformed_idempotency_key_on_a_cart_write_is_422_and_changes_nothing(user, product):
    cart = new_cart(user)
    response = user.post(
        f"/carts/{cart['id']}/items", json={"sku": product["sku"], "quantity": 1}, headers={"Idempotency-Key": "a b"}
    )
    assert_error(response, 422, "validation_error")
    assert user.get(f"/carts/{cart['id']}").json()["items"] == []
