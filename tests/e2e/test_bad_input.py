"""The bad-input catalogue: hostile and broken requests over HTTP, one table of cases.

Each case is answered with the contract's error envelope (the status and code in the table), nothing is stored
or changed anywhere (the rows of every service's tables are counted before and after, and the user's cart and
the product read back through the services), and the system is healthy afterwards (GET /health 200).

Decisions the table records (docs/HOSTILE-INPUT.md, SECURITY.md):
- a key given twice in one JSON object is 400: readers disagree on which one wins, so neither is guessed;
- a new account's email is printable ASCII: a look-alike of another address in another script (Cyrillic "а",
  fullwidth "ａ", a zero-width space) is 422, and a differently-cased copy of a taken one is 409;
- a number with a fraction (1.5), a string ("2") or a boolean is not an integer; an integral number written 2.0
  or 1e1 is one, as in JSON Schema (test_an_integral_number_is_an_integer), and is still held to its range (1e3
  is over 999);
- free text (names, descriptions, passwords, the search) may hold any characters but NUL; SQL and template
  syntax in it is stored and shown verbatim, never interpreted (test_injection_in_free_text_is_kept_verbatim).
"""

import json
import uuid

import pytest
from sqlalchemy import create_engine, func, select, table
from sqlalchemy.pool import NullPool

from tests.e2e.conftest import assert_error

SQL = "' OR '1'='1' --"
DROP = "'; DROP TABLE products; --"
TEMPLATE = "{{7*7}}${7*7}<%= 7*7 %>#{7*7}"
SCRIPT = "<script>alert(1)</script>"
INJECTIONS = [SQL, DROP, TEMPLATE, SCRIPT, "%s%s%s%n", "1; SELECT pg_sleep(5)", "\\'\\\"", "../../etc/passwd"]
GOOD_CARD = "4242424242424242"
NO_ORDER = "5f0c2c8e-0d4e-4f5b-9a53-7c1d2e3f4a5b"
JSON = "application/json"

# The rows that a request could add, per service database: counted before and after every case.
COUNTED = {
    "accounts": ["users"],
    "catalog": ["products"],
    "carts": ["carts", "cart_lines"],
    "orders": ["orders"],
    "payments": ["payment_methods", "charges"],
}


def case(
    name,
    method,
    path,
    body=None,
    *,
    raw=None,
    content_type=JSON,
    headers=None,
    who="user",
    status=422,
    code="validation_error",
    field=None,
):
    """One row of the catalogue: the request (`body` as JSON, or `raw` bytes as they are), who sends it, and the
    answer expected; `field` is a field that a 422 must name in details.fields."""
    return pytest.param(
        dict(
            method=method,
            path=path,
            body=body,
            raw=raw,
            content_type=content_type,
            headers=headers or {},
            who=who,
            status=status,
            code=code,
            field=field,
        ),
        id=name,
    )


def deep(levels):
    return {"items": json.loads("[" * levels + "]" * levels)}


CATALOGUE = [
    # --- oversized and deeply nested ---------------------------------------------------------------------------
    case(
        "body over 64 KiB",
        "POST",
        "/products",
        who="admin",
        status=413,
        code="payload_too_large",
        body={"sku": "BIG-1", "name": "Big", "description": "d" * (70 * 1024), "price_cents": 1, "stock": 1},
    ),
    case("101 cart lines", "POST", "/carts", body={"items": [{"sku": "{sku}", "quantity": 1}] * 101}, field="items"),
    case("nested 40 deep", "POST", "/carts", body=deep(40), status=400, code="bad_request"),
    case("nested 20000 deep", "POST", "/carts", raw=b"[" * 20000 + b"]" * 20000, status=400, code="bad_request"),
    case(
        "nested objects 1000 deep",
        "POST",
        "/carts/{cart}/items",
        status=400,
        code="bad_request",
        raw=b'{"a":' * 1000 + b"1" + b"}" * 1000,
    ),
    case("long query value", "GET", "/products?q=" + "x" * 300, field="q"),
    # --- not UTF-8, not JSON -----------------------------------------------------------------------------------
    case(
        "invalid UTF-8",
        "POST",
        "/auth/register",
        who="anon",
        status=400,
        code="bad_request",
        raw=b'{"email": "\xff\xfe@example.com", "password": "long enough"}',
    ),
    case(
        "overlong UTF-8 slash",
        "POST",
        "/carts",
        raw=b'{"items": [{"sku": "\xc0\xaf", "quantity": 1}]}',
        status=400,
        code="bad_request",
    ),
    case("UTF-16 body", "POST", "/carts", raw='{"items": []}'.encode("utf-16"), status=400, code="bad_request"),
    case(
        "half a surrogate pair",
        "POST",
        "/products",
        who="admin",
        status=400,
        code="bad_request",
        raw=b'{"sku": "SUR-1", "name": "bad \\ud800 half", "price_cents": 1, "stock": 1}',
    ),
    case(
        "NaN", "POST", "/carts/{cart}/items", raw=b'{"sku": "{sku}", "quantity": NaN}', status=400, code="bad_request"
    ),
    case("Infinity", "PUT", "/carts/{cart}/items/{sku}", raw=b'{"quantity": Infinity}', status=400, code="bad_request"),
    case("JSON then garbage", "POST", "/carts", raw=b'{"items": []}\x00\x00', status=400, code="bad_request"),
    case("top-level array", "POST", "/auth/token", who="anon", raw=b"[]", status=400, code="bad_request"),
    case("top-level null", "POST", "/carts/{cart}/items", raw=b"null", status=400, code="bad_request"),
    case(
        "empty body where one is needed", "POST", "/auth/register", who="anon", raw=b"", status=400, code="bad_request"
    ),
    # --- NUL bytes ---------------------------------------------------------------------------------------------
    case(
        "NUL in a login email",
        "POST",
        "/auth/token",
        who="anon",
        body={"email": "nul\u0000@example.com", "password": "whatever1"},
        field="email",
    ),
    case(
        "NUL in a password",
        "POST",
        "/auth/register",
        who="anon",
        body={"email": "nul-pass@example.com", "password": "pass\u0000word"},
        field="password",
    ),
    case(
        "NUL in a product name",
        "POST",
        "/products",
        who="admin",
        body={"sku": "NUL-1", "name": "Mug\u0000", "price_cents": 1, "stock": 1},
        field="name",
    ),
    case(
        "NUL in a description change",
        "PATCH",
        "/products/{sku}",
        who="admin",
        body={"description": "\u0000"},
        field="description",
    ),
    case("NUL in the search", "GET", "/products?q=%00", who="anon", field="q"),
    case("NUL in a sku", "POST", "/carts/{cart}/items", body={"sku": "A\u0000", "quantity": 1}, field="sku"),
    case("NUL in a path sku", "GET", "/products/A%00", who="anon", status=404, code="not_found"),
    # --- huge integers -----------------------------------------------------------------------------------------
    case("quantity 10**30", "POST", "/carts/{cart}/items", body={"sku": "{sku}", "quantity": 10**30}, field="quantity"),
    case(
        "price 2**31",
        "POST",
        "/products",
        who="admin",
        body={"sku": "HUGE-1", "name": "Huge", "price_cents": 2**31, "stock": 1},
        field="price_cents",
    ),
    case("stock 2**63", "PATCH", "/products/{sku}", who="admin", body={"stock": 2**63}, field="stock"),
    case(
        "a 4000-digit number",
        "PATCH",
        "/products/{sku}",
        who="admin",
        raw=b'{"stock": ' + b"9" * 4000 + b"}",
        field="stock",
    ),
    case(
        "a 5000-digit number",
        "PATCH",
        "/products/{sku}",
        who="admin",
        raw=b'{"stock": ' + b"9" * 5000 + b"}",
        status=400,
        code="bad_request",
    ),
    case("limit of 30 digits", "GET", "/products?limit=" + "9" * 30, who="anon", field="limit"),
    case("offset -1", "GET", "/orders?offset=-1", field="offset"),
    case("quantity 1e3 (1000)", "PUT", "/carts/{cart}/items/{sku}", raw=b'{"quantity": 1e3}', field="quantity"),
    # --- negative and float quantities -------------------------------------------------------------------------
    case("add -1", "POST", "/carts/{cart}/items", body={"sku": "{sku}", "quantity": -1}, field="quantity"),
    case("add 0", "POST", "/carts/{cart}/items", body={"sku": "{sku}", "quantity": 0}, field="quantity"),
    case("add 1.5", "POST", "/carts/{cart}/items", body={"sku": "{sku}", "quantity": 1.5}, field="quantity"),
    case("add 2.5", "POST", "/carts/{cart}/items", body={"sku": "{sku}", "quantity": 2.5}, field="quantity"),
    case("add '2'", "POST", "/carts/{cart}/items", body={"sku": "{sku}", "quantity": "2"}, field="quantity"),
    case("add true", "POST", "/carts/{cart}/items", body={"sku": "{sku}", "quantity": True}, field="quantity"),
    case("add past 999", "POST", "/carts/{cart}/items", body={"sku": "{sku}", "quantity": 999}, field="quantity"),
    case("set -1", "PUT", "/carts/{cart}/items/{sku}", body={"quantity": -1}, field="quantity"),
    case("set 1000", "PUT", "/carts/{cart}/items/{sku}", body={"quantity": 1000}, field="quantity"),
    case("set 0.5", "PUT", "/carts/{cart}/items/{sku}", body={"quantity": 0.5}, field="quantity"),
    case(
        "new cart line -5",
        "POST",
        "/carts",
        body={"items": [{"sku": "{sku}", "quantity": -5}]},
        field="items.0.quantity",
    ),
    case(
        "price -1",
        "POST",
        "/products",
        who="admin",
        body={"sku": "NEG-1", "name": "Neg", "price_cents": -1, "stock": 1},
        field="price_cents",
    ),
    case("price 9.99", "PATCH", "/products/{sku}", who="admin", body={"price_cents": 9.99}, field="price_cents"),
    # --- unicode confusables in emails -------------------------------------------------------------------------
    case(
        "Cyrillic a in an email",
        "POST",
        "/auth/register",
        who="anon",
        body={"email": "\u0430dmin@cartmesh.test", "password": "long enough"},
        field="email",
    ),
    case(
        "fullwidth letters in an email",
        "POST",
        "/auth/register",
        who="anon",
        body={"email": "\uff41dmin@cartmesh.test", "password": "long enough"},
        field="email",
    ),
    case(
        "Cyrillic e in a domain",
        "POST",
        "/auth/register",
        who="anon",
        body={"email": "admin@cartmesh.t\u0435st", "password": "long enough"},
        field="email",
    ),
    case(
        "zero-width space in an email",
        "POST",
        "/auth/register",
        who="anon",
        body={"email": "admin\u200b@cartmesh.test", "password": "long enough"},
        field="email",
    ),
    case(
        "the admin's email in capitals",
        "POST",
        "/auth/register",
        who="anon",
        body={"email": "ADMIN@CARTMESH.TEST", "password": "long enough"},
        status=409,
        code="conflict",
    ),
    case(
        "log in as a look-alike of the admin",
        "POST",
        "/auth/token",
        who="anon",
        body={"email": "\u0430dmin@cartmesh.test", "password": "long enough"},
        status=401,
        code="unauthorized",
    ),
    # --- SQL and template injection in every field with a format (free text: see the test below) ------------
    case(
        "SQL in a login",
        "POST",
        "/auth/token",
        who="anon",
        body={"email": SQL, "password": SQL},
        status=401,
        code="unauthorized",
    ),
    case(
        "SQL in a new email",
        "POST",
        "/auth/register",
        who="anon",
        body={"email": SQL, "password": "long enough"},
        field="email",
    ),
    case(
        "template in a new email",
        "POST",
        "/auth/register",
        who="anon",
        body={"email": "{{7*7}}@${7*7}", "password": "long enough"},
        field="email",
    ),
    case(
        "SQL in a new sku",
        "POST",
        "/products",
        who="admin",
        body={"sku": DROP, "name": "x", "price_cents": 1, "stock": 1},
        field="sku",
    ),
    case("template in a line sku", "POST", "/carts/{cart}/items", body={"sku": TEMPLATE, "quantity": 1}, field="sku"),
    case(
        "SQL in a new cart's sku", "POST", "/carts", body={"items": [{"sku": SQL, "quantity": 1}]}, field="items.0.sku"
    ),
    case(
        "SQL in a card number",
        "POST",
        "/carts/{cart}/checkout",
        body={"payment": {"card_number": "4242' OR 1=1 --"}},
        field="payment.card_number",
    ),
    case(
        "SQL in an Idempotency-Key",
        "POST",
        "/carts/{cart}/checkout",
        headers={"Idempotency-Key": DROP},
        body={"payment": {"card_number": GOOD_CARD}},
        field="Idempotency-Key",
    ),
    case("SQL in a path sku", "GET", "/products/%27%20OR%20%271%27%3D%271", who="anon", status=404, code="not_found"),
    case("SQL in a path cart id", "GET", "/carts/%27%20OR%20%271%27%3D%271", status=404, code="not_found"),
    case("SQL in a path order id", "POST", "/orders/1%20OR%201=1/cancel", status=404, code="not_found"),
    case("SQL in the limit", "GET", "/products?limit=1%20OR%201=1", who="anon", field="limit"),
    case(
        "SQL in a bearer token",
        "GET",
        "/me",
        who="anon",
        headers={"Authorization": "Bearer ' OR 1=1 --"},
        status=401,
        code="unauthorized",
    ),
    case(
        "template in a bearer token",
        "GET",
        "/carts",
        who="anon",
        headers={"Authorization": "Bearer {{7*7}}"},
        status=401,
        code="unauthorized",
    ),
    # --- path traversal in skus and ids ------------------------------------------------------------------------
    case("encoded ../ as a sku", "GET", "/products/..%2F..%2Fetc%2Fpasswd", who="anon", status=404, code="not_found"),
    case(
        "%2e%2e%2f as a sku",
        "GET",
        "/products/%2e%2e%2f%2e%2e%2fetc%2fpasswd",
        who="anon",
        status=404,
        code="not_found",
    ),
    case("double-encoded ../ as a sku", "GET", "/products/%252e%252e%252f", who="anon", status=404, code="not_found"),
    case("%2e%2e as a line sku", "DELETE", "/carts/{cart}/items/%2e%2e", status=404, code="not_found"),
    case(
        "../ as a line sku",
        "PUT",
        "/carts/{cart}/items/..%2F..%2Fsecret",
        body={"quantity": 1},
        status=404,
        code="not_found",
    ),
    case("encoded ../ as a cart id", "GET", "/carts/..%2F..%2Fadmin", status=404, code="not_found"),
    case("%2e%2e%2f as an order id", "GET", "/orders/%2e%2e%2f%2e%2e%2forders", status=404, code="not_found"),
    case("backslashes as a cart id", "DELETE", "/carts/..%5C..%5Cwindows", status=404, code="not_found"),
    case("a cart id and a newline", "GET", "/carts/{cart}%0A", status=404, code="not_found"),
    case("a sku and a newline", "GET", "/products/{sku}%0A", who="anon", status=404, code="not_found"),
    case(
        "a sku in a body with ../", "POST", "/carts/{cart}/items", body={"sku": "../{sku}", "quantity": 1}, field="sku"
    ),
    # --- duplicate keys: refused, not guessed ------------------------------------------------------------------
    case(
        "email twice",
        "POST",
        "/auth/register",
        who="anon",
        status=400,
        code="bad_request",
        raw=b'{"email": "first@example.com", "email": "second@example.com", "password": "long enough"}',
    ),
    case(
        "quantity twice",
        "POST",
        "/carts/{cart}/items",
        status=400,
        code="bad_request",
        raw=b'{"sku": "{sku}", "quantity": 1, "quantity": 999}',
    ),
    case(
        "price twice",
        "PATCH",
        "/products/{sku}",
        who="admin",
        status=400,
        code="bad_request",
        raw=b'{"price_cents": 1, "price_cents": 100}',
    ),
    case(
        "card number twice, nested",
        "POST",
        "/carts/{cart}/checkout",
        status=400,
        code="bad_request",
        raw=b'{"payment": {"card_number": "4000000000000002", "card_number": "4242424242424242"}}',
    ),
    # --- fields nobody may set ---------------------------------------------------------------------------------
    case(
        "is_admin at registration",
        "POST",
        "/auth/register",
        who="anon",
        body={"email": "wannabe@example.com", "password": "long enough", "is_admin": True},
        field="is_admin",
    ),
    case(
        "a price with a cart line",
        "POST",
        "/carts/{cart}/items",
        body={"sku": "{sku}", "quantity": 1, "unit_price_cents": 0},
        field="unit_price_cents",
    ),
    case(
        "a total with a checkout",
        "POST",
        "/carts/{cart}/checkout",
        body={"payment": {"card_number": GOOD_CARD}, "total_cents": 1},
        field="total_cents",
    ),
    case("renaming a sku", "PATCH", "/products/{sku}", who="admin", body={"sku": "STOLEN"}, field="sku"),
    case("null for a name", "PATCH", "/products/{sku}", who="admin", body={"name": None}, field="name"),
    # --- wrong content types -----------------------------------------------------------------------------------
    case(
        "text/plain",
        "POST",
        "/carts",
        raw=b'{"items": []}',
        content_type="text/plain",
        status=415,
        code="unsupported_media_type",
    ),
    case(
        "form encoded",
        "POST",
        "/auth/token",
        who="anon",
        raw=b"email=a%40b.c&password=x",
        content_type="application/x-www-form-urlencoded",
        status=415,
        code="unsupported_media_type",
    ),
    case(
        "multipart",
        "POST",
        "/products",
        who="admin",
        raw=b"--x\r\n\r\n--x--\r\n",
        content_type="multipart/form-data; boundary=x",
        status=415,
        code="unsupported_media_type",
    ),
    case(
        "XML",
        "POST",
        "/carts/{cart}/items",
        raw=b"<line><sku>A</sku></line>",
        content_type="application/xml",
        status=415,
        code="unsupported_media_type",
    ),
    case(
        "JSON in latin-1",
        "POST",
        "/carts/{cart}/items",
        raw=b'{"sku": "{sku}", "quantity": 1}',
        content_type="application/json; charset=latin-1",
        status=415,
        code="unsupported_media_type",
    ),
    case(
        "gzipped JSON",
        "PUT",
        "/carts/{cart}/items/{sku}",
        raw=b'{"quantity": 1}',
        headers={"Content-Encoding": "gzip"},
        status=415,
        code="unsupported_media_type",
    ),
    case(
        "no content type",
        "POST",
        "/carts",
        raw=b'{"items": []}',
        content_type=None,
        status=415,
        code="unsupported_media_type",
    ),
    case(
        "JSON patch type",
        "PATCH",
        "/products/{sku}",
        who="admin",
        raw=b'{"stock": 1}',
        content_type="application/merge-patch+json",
        status=415,
        code="unsupported_media_type",
    ),
]


class Victims:
    """What the catalogue aims at: the admin, a user with an open cart of one line, and a product."""

    def __init__(self, system):
        self.system = system
        self.clients = {"anon": system.client(), "user": system.new_user(), "admin": system.admin()}
        self.user_id = self.clients["user"].get("/me").json()["id"]
        self.sku = f"VICTIM-{uuid.uuid4().hex[:8]}"
        created = self.clients["admin"].post(
            "/products", json={"sku": self.sku, "name": "Victim", "stock": 50, "price_cents": 300}
        )
        assert created.status_code == 201, created.text
        cart = self.clients["user"].post("/carts", json={"items": [{"sku": self.sku, "quantity": 3}]})
        assert cart.status_code == 201, cart.text
        self.cart = cart.json()["id"]

    def fill(self, text):
        return text.replace("{cart}", self.cart).replace("{sku}", self.sku).replace("{order}", NO_ORDER)

    def state(self):
        """Row counts of every table a request could add to, and the user's cart and the product as the services
        have them (not through the gateway's product cache)."""
        counts = {}
        for service, tables in COUNTED.items():
            engine = create_engine(self.system.database_urls[service], poolclass=NullPool)
            with engine.connect() as connection:
                for name in tables:
                    counts[name] = connection.execute(select(func.count()).select_from(table(name))).scalar()
            engine.dispose()
        return {
            "counts": counts,
            "cart": self.system.rpc("carts", "get_cart", self.user_id, self.cart),
            "product": self.system.rpc("catalog", "get_product", self.sku),
        }


@pytest.fixture(scope="module")
def victims(system):
    return Victims(system)


def send(victims, row):
    client = victims.clients[row["who"]]
    headers = dict(row["headers"])
    if row["content_type"]:
        headers["Content-Type"] = row["content_type"]
    if row["raw"] is not None:
        data = victims.fill(row["raw"].decode("latin-1")).encode("latin-1")
    elif row["body"] is not None:
        data = json.dumps(json.loads(victims.fill(json.dumps(row["body"])))).encode()
    else:
        data = None
    return client.request(row["method"], victims.fill(row["path"]), data=data, headers=headers)


@pytest.mark.parametrize("row", CATALOGUE)
def test_bad_input_is_refused_with_the_envelope_and_changes_nothing(victims, row):
    before = victims.state()
    response = send(victims, row)
    error = assert_error(response, row["status"], row["code"])
    if row["field"]:
        assert row["field"] in error["details"]["fields"], error
    assert victims.state() == before
    health = victims.clients["anon"].get("/health")
    assert health.status_code == 200, health.text


@pytest.mark.parametrize("text", INJECTIONS)
def test_injection_in_free_text_is_kept_verbatim(victims, text):
    """Names, descriptions, passwords and the search take any text but NUL: SQL or template syntax there is
    data, stored and shown exactly as sent, and the tables are all still there."""
    admin, anon = victims.clients["admin"], victims.clients["anon"]
    sku = f"INJ-{uuid.uuid4().hex[:8]}"
    created = admin.post(
        "/products", json={"sku": sku, "name": text, "description": text, "price_cents": 1, "stock": 1}
    )
    assert created.status_code == 201, created.text
    assert victims.system.rpc("catalog", "get_product", sku)["name"] == text
    assert anon.get(f"/products/{sku}").json()["description"] == text
    found = anon.get("/products", params={"q": text, "limit": 100})
    assert found.status_code == 200
    assert sku in {product["sku"] for product in found.json()["items"]}
    email = f"inj-{uuid.uuid4().hex[:8]}@example.com"
    password = (text * 2)[:128].ljust(8, "x")
    assert anon.post("/auth/register", json={"email": email, "password": password}).status_code == 201
    assert anon.post("/auth/token", json={"email": email, "password": password}).status_code == 200
    assert anon.post("/auth/token", json={"email": email, "password": SQL}).status_code == 401
    victims.state()  # every table still answers
    assert anon.get("/health").status_code == 200


def test_an_integral_number_is_an_integer(user, admin, product):
    """JSON Schema counts 2.0 and 1e1 as integers, and so does the gateway: the services get and store ints."""
    sku = product["sku"]
    changed = admin.patch(
        f"/products/{sku}", data=b'{"stock": 7.0, "price_cents": 1.2e3}', headers={"Content-Type": JSON}
    )
    assert changed.status_code == 200, changed.text
    assert (changed.json()["stock"], changed.json()["price_cents"]) == (7, 1200)
    assert type(changed.json()["stock"]) is int and type(changed.json()["price_cents"]) is int
    created = user.post("/carts", json={"items": [{"sku": sku, "quantity": 2.0}]})
    assert created.status_code == 201, created.text
    cart = created.json()["id"]
    added = user.post(
        f"/carts/{cart}/items", data=b'{"sku": "%s", "quantity": 1e1}' % sku.encode(), headers={"Content-Type": JSON}
    )
    assert added.status_code == 200, added.text
    [line] = added.json()["items"]
    assert line["quantity"] == 12 and type(line["quantity"]) is int
    put = user.put(f"/carts/{cart}/items/{sku}", json={"quantity": 3.0})
    assert put.status_code == 200, put.text
    assert put.json()["items"][0]["quantity"] == 3
