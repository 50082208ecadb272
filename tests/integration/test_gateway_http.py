"""The gateway in a real container on the real broker, over real HTTP, in front of fake backends.

The fakes below answer with the docs/SERVICES.md interfaces from memory and raise the common errors, so every
row of the Conventions table (API.md) that the gateway produces or passes through can be provoked here.
"""

import json
import logging
import socket
import time
import uuid

import eventlet
import jwt
import pytest
import requests
from nameko.exceptions import ConfigurationError
from nameko.rpc import rpc
from prometheus_client.parser import text_string_to_metric_families

from gateway_http.routes import ROUTES
from gateway_http.service import GatewayService
from services.common.context import RequestId
from services.common.errors import EXPECTED, Conflict, NotFound, Unauthorized, UnknownProduct, ValidationFailed
from services.common.tokens import issue_token
from tests.waiting import wait_until

SECRET = "gateway-test-secret-that-is-long-enough"
JSON = "application/json; charset=utf-8"


# --- fake backends: state is per test (reset by the `gateway` fixture), shared by all workers --------------


class Store:
    users = {}
    products = {}
    carts = {}
    seen_request_ids = []
    slow_seconds = 0.0  # how long catalog's get_product("slow") and health() take

    @classmethod
    def reset(cls):
        cls.users, cls.products, cls.carts, cls.seen_request_ids = {}, {}, {}, []
        cls.slow_seconds = 0.0


class FakeAccounts:
    name = "accounts"
    request_id = RequestId()

    @rpc(expected_exceptions=EXPECTED)
    def register(self, email, password, call_id=None):
        if any(user["email"].lower() == email.lower() for user in Store.users.values()):
            raise Conflict("that email is already registered")
        if len(password) < 8:
            raise ValidationFailed.field("password", "too short")
        user = {"id": str(uuid.uuid4()), "email": email, "password": password, "is_admin": False}
        Store.users[user["id"]] = user
        return {"id": user["id"], "email": email}

    @rpc(expected_exceptions=EXPECTED)
    def issue_token(self, email, password):
        for user in Store.users.values():
            if user["email"].lower() == email.lower() and user["password"] == password:
                return {"access_token": issue_token(SECRET, user, 60), "token_type": "bearer", "expires_in": 60}
        raise Unauthorized("wrong email or password")

    @rpc(expected_exceptions=EXPECTED)
    def get_user(self, user_id):
        Store.seen_request_ids.append(self.request_id)
        user = Store.users.get(user_id)
        if user is None:
            raise NotFound("no such user")
        return {"id": user["id"], "email": user["email"], "is_admin": user["is_admin"]}

    @rpc
    def health(self):
        return "ok"


class FakeCatalog:
    name = "catalog"
    request_id = RequestId()

    @rpc(expected_exceptions=EXPECTED)
    def list_products(self, limit=20, offset=0, q=None):
        items = [
            product
            for sku, product in sorted(Store.products.items())
            if not q or q.lower() in (product["name"] + product["description"]).lower()
        ]
        return {"items": items[offset : offset + limit], "total": len(items), "limit": limit, "offset": offset}

    @rpc(expected_exceptions=EXPECTED)
    def get_product(self, sku):
        Store.seen_request_ids.append(self.request_id)
        if sku == "boom":
            raise RuntimeError("secret internals at /srv/catalog/db.py line 12")
        if sku == "slow":
            eventlet.sleep(Store.slow_seconds)
        if sku not in Store.products:
            raise NotFound(f"no product {sku}")
        return Store.products[sku]

    @rpc(expected_exceptions=EXPECTED)
    def create_product(self, product, call_id=None):
        if product["sku"] in Store.products:
            raise Conflict("that sku exists")
        Store.products[product["sku"]] = dict(product)
        return Store.products[product["sku"]]

    @rpc(expected_exceptions=EXPECTED)
    def update_product(self, sku, changes, call_id=None):
        if sku not in Store.products:
            raise NotFound(f"no product {sku}")
        Store.products[sku].update(changes)
        return Store.products[sku]

    @rpc
    def health(self):
        eventlet.sleep(Store.slow_seconds)
        return "ok"


class FakeCarts:
    name = "carts"

    @rpc(expected_exceptions=EXPECTED)
    def list_carts(self, user_id):
        mine = [cart for cart in Store.carts.values() if cart["owner"] == user_id]
        return {"items": [self._view(cart) for cart in reversed(mine)]}

    @rpc(expected_exceptions=EXPECTED)
    def create_cart(self, user_id, items=None, call_id=None):
        cart = {"id": str(uuid.uuid4()), "owner": user_id, "status": "open", "lines": {}}
        for line in items or []:
            self._add(cart, line["sku"], line["quantity"])
        Store.carts[cart["id"]] = cart
        return self._view(cart)

    @rpc(expected_exceptions=EXPECTED)
    def get_cart(self, user_id, cart_id):
        return self._view(self._mine(user_id, cart_id))

    @rpc(expected_exceptions=EXPECTED)
    def add_item(self, user_id, cart_id, sku, quantity, call_id=None):
        cart = self._open(user_id, cart_id)
        self._add(cart, sku, quantity)
        return self._view(cart)

    @rpc(expected_exceptions=EXPECTED)
    def set_item(self, user_id, cart_id, sku, quantity, call_id=None):
        cart = self._open(user_id, cart_id)
        cart["lines"].pop(sku, None)
        if quantity:
            self._add(cart, sku, quantity)
        return self._view(cart)

    @rpc(expected_exceptions=EXPECTED)
    def remove_item(self, user_id, cart_id, sku, call_id=None):
        cart = self._open(user_id, cart_id)
        if cart["lines"].pop(sku, None) is None:
            raise NotFound("no such line")
        return self._view(cart)

    @rpc(expected_exceptions=EXPECTED)
    def delete_cart(self, user_id, cart_id, call_id=None):
        self._open(user_id, cart_id)
        del Store.carts[cart_id]

    @rpc
    def health(self):
        return "ok"

    @staticmethod
    def _mine(user_id, cart_id):
        cart = Store.carts.get(cart_id)
        if cart is None or cart["owner"] != user_id:
            raise NotFound("no such cart")
        return cart

    def _open(self, user_id, cart_id):
        cart = self._mine(user_id, cart_id)
        if cart["status"] != "open":
            raise Conflict("the cart is checked out")
        return cart

    @staticmethod
    def _add(cart, sku, quantity):
        if sku not in Store.products:
            raise UnknownProduct(f"no product {sku}", {"sku": sku})
        total = cart["lines"].get(sku, 0) + quantity
        if total > 999:
            raise ValidationFailed.field("quantity", "a line holds at most 999")
        cart["lines"][sku] = total

    @staticmethod
    def _view(cart):
        items = [
            {
                "sku": sku,
                "name": Store.products[sku]["name"],
                "quantity": quantity,
                "unit_price_cents": Store.products[sku]["price_cents"],
                "line_total_cents": quantity * Store.products[sku]["price_cents"],
            }
            for sku, quantity in sorted(cart["lines"].items())
        ]
        return {
            "id": cart["id"],
            "status": cart["status"],
            "items": items,
            "total_cents": sum(item["line_total_cents"] for item in items),
            "created_at": "2026-11-28T14:20:00.000000Z",
            "updated_at": "2026-11-28T14:20:00.000000Z",
        }


class FakePayments:
    """Only what /health asks: checkout runs against the real services in tests/e2e."""

    name = "payments"

    @rpc
    def health(self):
        return "ok"


class FakeOrders:
    name = "orders"

    @rpc
    def health(self):
        return "ok"


ALL_BACKENDS = (FakeAccounts, FakeCatalog, FakeCarts, FakePayments, FakeOrders)


# --- HTTP fixture ------------------------------------------------------------------------------------------


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def bearer(user_id=None, admin=False, secret=SECRET, ttl=60, now=None):
    user = {"id": user_id or str(uuid.uuid4()), "email": "someone@example.com", "is_admin": admin}
    return {"Authorization": f"Bearer {issue_token(secret, user, ttl, now=now)}"}


class Http:
    """A `requests` session on the gateway's real port."""

    def __init__(self, base_url):
        self.base_url = base_url
        self.session = requests.Session()

    def request(self, method, path, **kwargs):
        kwargs.setdefault("timeout", 10)
        return self.session.request(method, self.base_url + path, **kwargs)

    def get(self, path, **kwargs):
        return self.request("GET", path, **kwargs)

    def post(self, path, **kwargs):
        return self.request("POST", path, **kwargs)


@pytest.fixture
def gateway(runner_factory, service_config):
    """Factory: `gateway(*backends, **config)` starts the gateway with those fake backends → `Http`."""
    Store.reset()
    clients = []

    def start(*backends, **overrides):
        port = free_port()
        config = service_config("gateway", WEB_SERVER_ADDRESS=f"127.0.0.1:{port}", JWT_SECRET=SECRET, **overrides)
        runner_factory(config, GatewayService, *backends).start()
        client = Http(f"http://127.0.0.1:{port}")
        clients.append(client)
        return client

    yield start
    for client in clients:
        client.session.close()


def assert_error(response, status, code):
    """`response` is the error envelope with `status` and `code`, as JSON with a request id; its body."""
    assert response.status_code == status, response.text
    assert response.headers["Content-Type"] == JSON
    assert response.headers["X-Request-ID"]
    body = response.json()
    assert set(body) == {"error"}
    assert body["error"]["code"] == code
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    return body["error"]


# --- tests -------------------------------------------------------------------------------------------------


def test_accounts_through_the_gateway_and_health_ok(gateway):
    http = gateway(*ALL_BACKENDS)
    credentials = {"email": "ada@example.com", "password": "correct horse"}

    registered = http.post("/auth/register", json=credentials)
    assert registered.status_code == 201
    assert registered.headers["Content-Type"] == JSON
    assert registered.json() == {"id": registered.json()["id"], "email": "ada@example.com"}
    duplicate = assert_error(
        http.post("/auth/register", json=dict(credentials, email="ADA@example.com")), 409, "conflict"
    )
    assert duplicate["message"] == "that email is already registered"

    short = assert_error(
        http.post("/auth/register", json={"email": "b@example.com", "password": "short"}), 422, "validation_error"
    )
    assert list(short["details"]["fields"]) == ["password"]
    typed = assert_error(
        http.post("/auth/register", json={"email": 7, "password": "long enough", "x": 1}), 422, "validation_error"
    )
    assert set(typed["details"]["fields"]) == {"email", "x"}

    assert_error(http.post("/auth/token", json=dict(credentials, password="wrong password")), 401, "unauthorized")
    token = http.post("/auth/token", json=credentials)
    assert token.status_code == 200 and token.json()["token_type"] == "bearer"

    me = http.get("/me", headers={"Authorization": f"Bearer {token.json()['access_token']}"})
    assert me.status_code == 200
    assert me.json() == {"id": registered.json()["id"], "email": "ada@example.com", "is_admin": False}
    # A valid token whose user is gone is a credentials problem.
    assert_error(http.get("/me", headers=bearer()), 401, "unauthorized")

    health = http.get("/health")
    assert health.status_code == 200
    assert health.json() == {
        "status": "ok",
        "services": {"accounts": "ok", "catalog": "ok", "carts": "ok", "payments": "ok", "orders": "ok"},
    }


def test_bad_tokens_are_401(gateway):
    http = gateway(FakeAccounts)
    claims = {
        "sub": str(uuid.uuid4()),
        "admin": True,
        "iss": "cartmesh-accounts",
        "aud": "cartmesh-api",
        "iat": int(time.time()),
        "exp": int(time.time()) + 60,
    }
    alg_none = jwt.encode(claims, None, algorithm="none")
    cases = {
        "missing": {},
        "not bearer": {"Authorization": "Basic YWRhOnNlY3JldA=="},
        "no token": {"Authorization": "Bearer"},
        "two tokens": {"Authorization": "Bearer abc def"},
        "garbage": {"Authorization": "Bearer not.a.jwt"},
        "expired": bearer(now=time.time() - 3600),
        "forged": bearer(secret="another-secret-of-a-reasonable-length"),
        "alg none": {"Authorization": f"Bearer {alg_none}"},
    }
    for case, headers in cases.items():
        response = http.get("/me", headers=headers)
        assert_error(response, 401, "unauthorized")
        assert response.headers["WWW-Authenticate"].startswith("Bearer"), case


def test_catalog_rules_and_admin_only_writes(gateway):
    http = gateway(FakeCatalog)
    product = {"sku": "tea-01", "name": "Green tea", "price_cents": 450, "stock": 3}

    assert_error(http.post("/products", json=product), 401, "unauthorized")
    assert_error(http.post("/products", json=product, headers=bearer()), 403, "forbidden")
    admin = bearer(admin=True)
    created = http.post("/products", json=product, headers=admin)
    assert created.status_code == 201
    assert created.json() == dict(product, description="")
    assert_error(http.post("/products", json=product, headers=admin), 409, "conflict")

    for wrong in ("450", 4.5, True, None, -1, 2**31):
        fields = assert_error(
            http.post("/products", json=dict(product, sku="x", price_cents=wrong), headers=admin),
            422,
            "validation_error",
        )["details"]["fields"]
        assert list(fields) == ["price_cents"], wrong
    fields = assert_error(
        http.post("/products", json={"sku": "bad sku!", "name": "", "description": "d" * 2001}, headers=admin),
        422,
        "validation_error",
    )["details"]["fields"]
    assert set(fields) == {"sku", "name", "description", "price_cents", "stock"}

    assert http.get("/products/tea-01").json()["name"] == "Green tea"
    assert_error(http.get("/products/nope"), 404, "not_found")
    assert_error(http.get("/products/bad!sku"), 404, "not_found")
    assert_error(http.get("/products/" + "a" * 65), 404, "not_found")

    patched = http.request("PATCH", "/products/tea-01", json={"price_cents": 500}, headers=admin)
    assert patched.status_code == 200 and patched.json()["price_cents"] == 500
    assert patched.json()["name"] == "Green tea"
    empty = assert_error(http.request("PATCH", "/products/tea-01", json={}, headers=admin), 422, "validation_error")
    assert list(empty["details"]["fields"]) == ["body"]
    assert_error(http.request("PATCH", "/products/tea-01", json={"name": None}, headers=admin), 422, "validation_error")
    assert_error(http.request("PATCH", "/products/nope", json={"stock": 1}, headers=admin), 404, "not_found")

    page = http.get("/products", params={"limit": "1", "offset": "0", "q": "TEA"})
    assert page.status_code == 200
    assert page.json() == {
        "items": [dict(product, description="", price_cents=500)],
        "total": 1,
        "limit": 1,
        "offset": 0,
    }
    for query, field in [
        ("limit=abc", "limit"),
        ("limit=2.5", "limit"),
        ("limit=0", "limit"),
        ("limit=101", "limit"),
        ("offset=-1", "offset"),
        ("limit=%202", "limit"),
        ("limt=5", "limt"),
        ("limit=1&limit=2", "limit"),
    ]:
        fields = assert_error(http.get(f"/products?{query}"), 422, "validation_error")["details"]["fields"]
        assert list(fields) == [field], query


def test_cart_rules_and_service_errors_pass_through(gateway):
    http = gateway(FakeCatalog, FakeCarts)
    Store.products["tea-01"] = {
        "sku": "tea-01",
        "name": "Green tea",
        "description": "",
        "price_cents": 450,
        "stock": 10,
    }
    owner, stranger = bearer(), bearer()

    empty = http.post("/carts", headers=owner)  # no body at all counts as {}
    assert empty.status_code == 201 and empty.json()["items"] == []
    cart = http.post("/carts", json={"items": [{"sku": "tea-01", "quantity": 2}]}, headers=owner).json()
    assert cart["total_cents"] == 900
    path = f"/carts/{cart['id']}"

    for wrong in ("2", 2.5, True, 0, 1000):
        fields = assert_error(
            http.post(f"{path}/items", json={"sku": "tea-01", "quantity": wrong}, headers=owner),
            422,
            "validation_error",
        )["details"]["fields"]
        assert list(fields) == ["quantity"], wrong
    nested = assert_error(
        http.post("/carts", json={"items": [{"sku": "tea-01", "quantity": "1"}]}, headers=owner),
        422,
        "validation_error",
    )
    assert nested["details"]["fields"] == {"items.0.quantity": "Input should be a valid integer"}

    added = http.post(f"{path}/items", json={"sku": "tea-01", "quantity": 3}, headers=owner)
    assert added.status_code == 200 and added.json()["items"][0]["quantity"] == 5
    over = assert_error(
        http.post(f"{path}/items", json={"sku": "tea-01", "quantity": 999}, headers=owner), 422, "validation_error"
    )
    assert over["details"] == {"fields": {"quantity": "a line holds at most 999"}}
    unknown = assert_error(
        http.post(f"{path}/items", json={"sku": "nope", "quantity": 1}, headers=owner), 422, "unknown_product"
    )
    assert unknown["details"] == {"sku": "nope"}

    assert (
        http.request("PUT", f"{path}/items/tea-01", json={"quantity": 7}, headers=owner).json()["total_cents"]
        == 7 * 450
    )
    assert_error(
        http.request("PUT", f"{path}/items/tea-01", json={"quantity": -1}, headers=owner), 422, "validation_error"
    )
    assert http.request("DELETE", f"{path}/items/tea-01", headers=owner).json()["items"] == []
    assert_error(http.request("DELETE", f"{path}/items/tea-01", headers=owner), 404, "not_found")

    # Another user's cart is exactly a missing one; a malformed id too, before any call.
    assert_error(http.get(path, headers=stranger), 404, "not_found")
    assert_error(http.get("/carts/not-a-uuid", headers=owner), 404, "not_found")
    assert_error(http.request("PUT", f"{path}/items/bad!sku", json={"quantity": 1}, headers=owner), 404, "not_found")
    assert http.get(path.upper().replace("/CARTS/", "/carts/"), headers=owner).json()["id"] == cart["id"]
    assert [c["id"] for c in http.get("/carts", headers=owner).json()["items"]] == [cart["id"], empty.json()["id"]]
    assert http.get("/carts", headers=stranger).json() == {"items": []}

    Store.carts[cart["id"]]["status"] = "checked_out"
    assert_error(http.post(f"{path}/items", json={"sku": "tea-01", "quantity": 1}, headers=owner), 409, "conflict")
    deleted = http.request("DELETE", f"/carts/{empty.json()['id']}", headers=owner)
    assert deleted.status_code == 204
    assert deleted.content == b"" and "Content-Type" not in deleted.headers
    assert deleted.headers["X-Request-ID"]


def test_http_level_errors_are_enveloped(gateway):
    http = gateway(FakeCarts, FakeAccounts, MAX_BODY_BYTES=1024)
    owner = bearer()

    assert_error(http.get("/nowhere"), 404, "not_found")
    assert_error(http.get("/auth"), 404, "not_found")  # ("/" is the storefront's page, not the API's)
    assert_error(http.get("/carts/"), 404, "not_found")
    wrong_method = http.request("DELETE", "/products")
    assert_error(wrong_method, 405, "method_not_allowed")
    assert wrong_method.headers["Allow"] == "GET, HEAD, POST"

    # 413: a declared length over the limit, and a chunked body that runs past it.
    assert_error(
        http.post(
            "/carts", data=b"{" + b" " * 1100 + b"}", headers=dict(owner, **{"Content-Type": "application/json"})
        ),
        413,
        "payload_too_large",
    )
    chunks = (b" " * 256 for _ in range(8))
    assert_error(
        http.post("/carts", data=chunks, headers=dict(owner, **{"Content-Type": "application/json"})),
        413,
        "payload_too_large",
    )
    exactly = b"{" + b" " * 1022 + b"}"
    assert (
        http.post("/carts", data=exactly, headers=dict(owner, **{"Content-Type": "application/json"})).status_code
        == 201
    )
    small_chunks = (part for part in (b'{"items"', b": []}"))
    assert (
        http.post("/carts", data=small_chunks, headers=dict(owner, **{"Content-Type": "application/json"})).status_code
        == 201
    )

    # 415 for a body that is not JSON by its content type; a charset of UTF-8 is fine.
    assert_error(
        http.post("/carts", data=b"{}", headers=dict(owner, **{"Content-Type": "text/plain"})),
        415,
        "unsupported_media_type",
    )
    assert_error(http.post("/carts", data=b"{}", headers=owner), 415, "unsupported_media_type")
    assert_error(
        http.post("/carts", data=b"{}", headers=dict(owner, **{"Content-Type": "application/json; charset=latin-1"})),
        415,
        "unsupported_media_type",
    )
    assert (
        http.post(
            "/carts", data=b"{}", headers=dict(owner, **{"Content-Type": "application/json; charset=UTF-8"})
        ).status_code
        == 201
    )

    # 400 for what is not a JSON object.
    as_json = dict(owner, **{"Content-Type": "application/json"})
    for body in (b"{", b"[]", b'"text"', b"null", b"NaN", b'{"items": [}', b"\xff\xfe{}"):
        assert_error(http.post("/carts", data=body, headers=as_json), 400, "bad_request")
    assert_error(http.post("/auth/register", headers=as_json), 400, "bad_request")  # no body where one is needed


def test_request_ids(gateway):
    http = gateway(FakeCatalog, FakeAccounts, CACHE_MAX_ENTRIES=0)  # every read must reach the backend
    Store.products["tea-01"] = {"sku": "tea-01", "name": "Tea", "description": "", "price_cents": 1, "stock": 1}

    echoed = http.get("/products/tea-01", headers={"X-Request-ID": "client-id-123"})
    assert echoed.status_code == 200
    assert echoed.headers["X-Request-ID"] == "client-id-123"
    assert Store.seen_request_ids == ["client-id-123"]  # the same id reached the backend

    generated = http.get("/products/tea-01")
    insane = http.get("/products/tea-01", headers={"X-Request-ID": "no spaces; or <tags> allowed"})
    too_long = http.get("/products/tea-01", headers={"X-Request-ID": "a" * 129})
    ids = [generated.headers["X-Request-ID"], insane.headers["X-Request-ID"], too_long.headers["X-Request-ID"]]
    assert len(set(ids)) == 3 and "no spaces; or <tags> allowed" not in ids and "a" * 129 not in ids
    assert Store.seen_request_ids[1:] == ids

    # Errors carry it too, whether the gateway or a service refused.
    for response in (
        http.get("/nowhere", headers={"X-Request-ID": "e1"}),
        http.get("/me", headers={"X-Request-ID": "e2"}),
        http.get("/products/nope", headers={"X-Request-ID": "e3"}),
    ):
        assert response.headers["X-Request-ID"] == response.request.headers["X-Request-ID"]


def test_a_bug_in_a_backend_is_a_generic_500(gateway, caplog):
    http = gateway(FakeCatalog)
    with caplog.at_level(logging.ERROR, logger="gateway_http"):
        response = http.get("/products/boom", headers={"X-Request-ID": "bug-report-1"})
    error = assert_error(response, 500, "internal_error")
    assert "details" not in error
    for leak in ("RuntimeError", "secret", "Traceback", "/srv/catalog"):
        assert leak not in response.text
    logged = [record for record in caplog.records if record.name.startswith("gateway_http") and record.exc_info]
    assert len(logged) == 1 and "bug-report-1" in logged[0].getMessage()
    assert "RuntimeError" in caplog.text  # the log has the rest


def test_missing_backend_is_503_and_health_names_it(gateway):
    http = gateway(FakeAccounts, FakeCatalog, FakePayments, FakeOrders)  # carts is not running

    assert_error(http.get("/carts", headers=bearer()), 503, "service_unavailable")
    health = http.get("/health")
    assert health.status_code == 503
    assert health.headers["Content-Type"] == JSON
    assert health.json() == {
        "status": "degraded",
        "services": {"accounts": "ok", "catalog": "ok", "carts": "unavailable", "payments": "ok", "orders": "ok"},
    }


def test_slow_backend_is_504_and_health_says_timeout(gateway):
    http = gateway(*ALL_BACKENDS, RPC_TIMEOUT=0.5, HEALTH_TIMEOUT=0.5)
    Store.slow_seconds = 1.5

    started = time.monotonic()
    assert_error(http.get("/products/slow"), 504, "gateway_timeout")
    assert time.monotonic() - started < 1.4  # the gateway gave up, it did not wait for the answer
    health = http.get("/health")
    assert health.status_code == 503
    assert health.json()["services"] == {
        "accounts": "ok",
        "catalog": "timeout",
        "carts": "ok",
        "payments": "ok",
        "orders": "ok",
    }


def test_openapi_document_matches_the_route_table(gateway):
    http = gateway()  # served by the gateway alone
    response = http.get("/openapi.json")
    assert response.status_code == 200 and response.headers["Content-Type"] == JSON
    document = response.json()

    assert document["openapi"].startswith("3.1")
    assert document["info"]["title"] and document["info"]["version"]
    served = {(route.method.lower(), route.path) for route in ROUTES}
    described = {(method, path) for path, operations in document["paths"].items() for method in operations}
    assert described == served
    schemas = document["components"]["schemas"]
    assert document["components"]["securitySchemes"]["bearerAuth"] == {
        "type": "http",
        "scheme": "bearer",
        "bearerFormat": "JWT",
    }
    for route in ROUTES:
        operation = document["paths"][route.path][route.method.lower()]
        assert str(route.status) in operation["responses"]
        assert bool(operation["security"]) == (route.auth != "none")
        if route.body is not None:
            ref = operation["requestBody"]["content"]["application/json"]["schema"]["$ref"]
            assert schemas[ref.rsplit("/", 1)[1]] == _published_schema(route.body, schemas)
        assert {p["name"] for p in operation.get("parameters", []) if p["in"] == "path"} == set(route.path_params)
    # Every reference points at something that exists.
    for ref in _refs(document):
        node = document
        for part in ref.removeprefix("#/").split("/"):
            node = node[part]
    assert schemas["ErrorEnvelope"]["properties"]["error"]
    quantity = schemas["NewLine"]["properties"]["quantity"]
    assert (quantity["type"], quantity["minimum"], quantity["maximum"]) == ("integer", 1, 999)


def test_gateway_refuses_to_start_without_a_jwt_secret(container_factory, service_config):
    config = service_config("gateway", WEB_SERVER_ADDRESS=f"127.0.0.1:{free_port()}", JWT_SECRET="")
    container = container_factory(GatewayService, config)
    with pytest.raises(ConfigurationError, match="JWT_SECRET"):
        container.start()


def test_gateway_refuses_to_start_with_a_trusted_proxy_that_is_not_an_address(container_factory, service_config):
    config = service_config(
        "gateway",
        WEB_SERVER_ADDRESS=f"127.0.0.1:{free_port()}",
        JWT_SECRET=SECRET,
        TRUSTED_PROXIES="10.0.0.0/8, proxy.example.com",
    )
    container = container_factory(GatewayService, config)
    with pytest.raises(ConfigurationError, match="TRUSTED_PROXIES"):
        container.start()


def _refs(node):
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref":
                yield value
            else:
                yield from _refs(value)
    elif isinstance(node, list):
        for item in node:
            yield from _refs(item)


def _published_schema(model, schemas):
    """The model's own JSON Schema with its $defs references pointed at components/schemas, as published."""
    schema = json.loads(json.dumps(model.model_json_schema(ref_template="#/components/schemas/{model}")))
    schema.pop("$defs", None)
    return schema


# --- operations: /metrics and /services --------------------------------------------------------------------


def test_metrics_are_prometheus_text_by_route_template(gateway):
    http = gateway(*ALL_BACKENDS)
    cart_id = str(uuid.uuid4())
    assert http.get(f"/carts/{cart_id}", headers=bearer()).status_code == 404
    assert http.get("/nowhere").status_code == 404

    response = http.get("/metrics")

    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    assert response.headers["X-Request-ID"]
    samples = {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }
    labels = dict(service="gateway", method="GET", route="/carts/{id}", status="404")
    assert samples[("cartmesh_http_requests_total", frozenset(labels.items()))] >= 1
    unmatched = dict(labels, route="unmatched")
    assert samples[("cartmesh_http_requests_total", frozenset(unmatched.items()))] >= 1
    assert cart_id not in response.text and "/nowhere" not in response.text
    assert (
        http.get("/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"})
        .headers["Content-Type"]
        .startswith("application/openmetrics-text")
    )


def test_services_counts_the_instances_on_each_rpc_queue(gateway, container_factory, service_config):
    http = gateway(*ALL_BACKENDS)
    container_factory(FakeCarts, service_config("carts")).start()  # a second carts instance

    def carts_row():
        response = http.get("/services")
        assert response.status_code == 200 and response.headers["Content-Type"] == JSON
        rows = {row["name"]: row for row in response.json()["services"]}
        assert set(rows) == {"accounts", "catalog", "carts", "payments", "orders"}
        return rows["carts"]

    def counted_twice():
        row = carts_row()
        assert row["instances"] == 2, row
        return row

    # The management API samples queue figures every few seconds: poll, with a deadline.
    row = wait_until(counted_twice, timeout=15, interval=0.25, what="two carts instances counted")
    assert row == {"name": "carts", "instances": 2, "queue_depth": 0}


def test_services_is_503_when_the_management_api_does_not_answer(gateway):
    http = gateway(*ALL_BACKENDS, RABBITMQ_API_URI=f"http://guest:guest@127.0.0.1:{free_port()}/api")

    assert_error(http.get("/services"), 503, "service_unavailable")
    assert http.get("/health").status_code == 200  # the services themselves are fine
