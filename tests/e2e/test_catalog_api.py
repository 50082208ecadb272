"""Contract: Catalog over HTTP — browsing for anyone, writes for admins only, strict validation."""

import uuid

import pytest

from tests.e2e.conftest import assert_error


def new_sku():
    return f"T-{uuid.uuid4().hex[:12]}"


def test_create_and_read_a_product(admin, anon):
    sku = new_sku()
    body = {"sku": sku, "name": "Blue mug", "price_cents": 899, "stock": 3}
    created = admin.post("/products", json=body)
    assert created.status_code == 201
    assert created.json() == dict(body, description="")
    assert anon.get(f"/products/{sku}").json() == dict(body, description="")


def test_unknown_product_is_404(anon):
    assert_error(anon.get(f"/products/{new_sku()}"), 404, "not_found")


def test_duplicate_sku_is_409_and_keeps_the_first(admin, product):
    again = dict(product, name="Impostor")
    assert_error(admin.post("/products", json=again), 409, "conflict")
    assert admin.get(f"/products/{product['sku']}").json()["name"] == product["name"]


@pytest.mark.parametrize(
    "field, value",
    [
        ("price_cents", "10"),
        ("price_cents", 10.5),
        ("price_cents", True),
        ("price_cents", -1),
        ("stock", "3"),
        ("stock", 2.5),
        ("stock", False),
        ("stock", -5),
        ("name", ""),
        ("name", "n" * 201),
        ("name", 7),
        ("description", "d" * 2001),
        ("sku", "has space"),
        ("sku", "x" * 65),
        ("sku", ""),
        ("sku", "semi;colon"),
    ],
)
def test_create_rejects_bad_fields_and_stores_nothing(admin, anon, field, value):
    body = {"sku": new_sku(), "name": "Thing", "price_cents": 100, "stock": 1}
    body[field] = value
    error = assert_error(admin.post("/products", json=body), 422, "validation_error")
    assert field in error["details"]["fields"]
    if field != "sku":
        assert_error(anon.get(f"/products/{body['sku']}"), 404, "not_found")


@pytest.mark.parametrize("missing", ["sku", "name", "price_cents", "stock"])
def test_create_requires_fields(admin, missing):
    body = {"sku": new_sku(), "name": "Thing", "price_cents": 100, "stock": 1}
    del body[missing]
    error = assert_error(admin.post("/products", json=body), 422, "validation_error")
    assert missing in error["details"]["fields"]


def test_limits_are_inclusive(admin):
    body = {
        "sku": "x" * 60 + uuid.uuid4().hex[:4],
        "name": "n" * 200,
        "description": "d" * 2000,
        "price_cents": 0,
        "stock": 0,
    }
    assert admin.post("/products", json=body).status_code == 201


def test_writes_need_an_admin(anon, user, product):
    body = {"sku": new_sku(), "name": "Thing", "price_cents": 100, "stock": 1}
    assert_error(anon.post("/products", json=body), 401, "unauthorized")
    assert_error(user.post("/products", json=body), 403, "forbidden")
    assert_error(anon.patch(f"/products/{product['sku']}", json={"stock": 0}), 401, "unauthorized")
    assert_error(user.patch(f"/products/{product['sku']}", json={"stock": 0}), 403, "forbidden")
    assert anon.get(f"/products/{product['sku']}").json()["stock"] == product["stock"]


def test_patch_changes_only_what_it_names(admin, product):
    response = admin.patch(f"/products/{product['sku']}", json={"price_cents": 4321, "description": "new"})
    assert response.status_code == 200
    assert response.json() == dict(product, price_cents=4321, description="new")
    assert admin.patch(f"/products/{product['sku']}", json={"name": "Renamed", "stock": 0}).json() == dict(
        product, price_cents=4321, description="new", name="Renamed", stock=0
    )


def test_patch_rejects_bad_input_and_changes_nothing(admin, anon, product):
    for body in ({"price_cents": "5"}, {"stock": 1.5}, {"name": ""}, {"stock": True}, {"sku": "other"}):
        assert_error(admin.patch(f"/products/{product['sku']}", json=body), 422, "validation_error")
    assert anon.get(f"/products/{product['sku']}").json() == product
    assert_error(admin.patch(f"/products/{new_sku()}", json={"stock": 1}), 404, "not_found")


def test_list_is_a_page_in_sku_order(admin, anon):
    tag = uuid.uuid4().hex[:8]
    skus = [f"L-{tag}-{i}" for i in (3, 1, 2)]
    for sku in skus:
        admin.post("/products", json={"sku": sku, "name": f"Lamp {tag}", "price_cents": 1, "stock": 1})
    page = anon.get("/products", params={"q": tag}).json()
    assert set(page) == {"items", "total", "limit", "offset"}
    assert [item["sku"] for item in page["items"]] == sorted(skus)
    assert (page["total"], page["limit"], page["offset"]) == (3, 20, 0)
    second = anon.get("/products", params={"q": tag, "limit": 2, "offset": 1}).json()
    assert [item["sku"] for item in second["items"]] == sorted(skus)[1:]
    assert (second["total"], second["limit"], second["offset"]) == (3, 2, 1)


def test_search_is_case_insensitive_on_name_and_description(admin, anon):
    tag = uuid.uuid4().hex[:8]
    admin.post("/products", json={"sku": f"A-{tag}", "name": f"Red KETTLE {tag}", "price_cents": 1, "stock": 1})
    admin.post(
        "/products",
        json={"sku": f"B-{tag}", "name": "Plain", "description": f"a kettle {tag}", "price_cents": 1, "stock": 1},
    )
    admin.post("/products", json={"sku": f"C-{tag}", "name": f"Toaster {tag}", "price_cents": 1, "stock": 1})
    found = anon.get("/products", params={"q": f"kettle {tag}".upper()}).json()
    assert [item["sku"] for item in found["items"]] == [f"A-{tag}", f"B-{tag}"]
    assert anon.get("/products", params={"q": f"%{tag}"}).json()["total"] == 0  # wildcards are literal


@pytest.mark.parametrize(
    "params",
    [
        {"limit": 0},
        {"limit": 101},
        {"limit": "ten"},
        {"limit": "1.5"},
        {"offset": -1},
        {"offset": "x"},
    ],
)
def test_bad_pagination_is_422(anon, params):
    error = assert_error(anon.get("/products", params=params), 422, "validation_error")
    assert set(error["details"]["fields"]) == set(params)


def test_pagination_bounds_are_inclusive(anon):
    assert anon.get("/products", params={"limit": 1}).json()["limit"] == 1
    assert anon.get("/products", params={"limit": 100, "offset": 0}).json()["limit"] == 100
