"""The storefront's pages and forms over HTTP, on the whole running system (both database backends): status,
redirects, cookies, CSRF, escaping of hostile values, the console's refusals, fragments for htmx, the product
cache, and the headers every page carries. tests/e2e/test_storefront_browser.py drives the same pages in
Chromium."""

import re
import uuid

import pytest
from prometheus_client import REGISTRY

from tests.e2e.conftest import ADMIN_EMAIL
from tests.e2e.pages import PASSWORD, Shopper, csrf_of, field_of, new_product
from tests.waiting import wait_until

HOSTILE = "<script>alert(1)</script>"
HOSTILE_DESCRIPTION = '"><img src=x onerror=alert(2)> hostile'
GOOD_CARD, DECLINED_CARD = "4242424242424242", "4000000000000002"
HTMX = {"HX-Request": "true"}


@pytest.fixture
def shopper(system):
    return Shopper(system).register()


@pytest.fixture
def operator(system):
    return Shopper(system).login(ADMIN_EMAIL, system.admin_password)


def order_id_of(answer):
    assert answer.status_code == 303, answer.text
    match = re.fullmatch(r"/account/orders/([0-9a-f-]{36})", answer.headers["Location"])
    assert match, answer.headers["Location"]
    return match.group(1)


def status_of(shopper, order_id):
    fragment = shopper.get(f"/account/orders/{order_id}/status", headers=dict(HTMX, **{"HX-Target": "order-status"}))
    assert fragment.status_code == 200 and "<html" not in fragment.text
    return re.search(r'class="order-status">(\w+)<', fragment.text).group(1), fragment.text


def settled(shopper, order_id):
    """The order's status fragment once it is no longer pending."""
    found = {}

    def done():
        found["status"], found["fragment"] = status_of(shopper, order_id)
        return found["status"] != "pending"

    wait_until(done, timeout=20)
    return found["status"], found["fragment"]


# --- every page is HTML with the page headers ---------------------------------------------------------------


def test_the_catalog_is_a_page_with_the_page_headers_and_a_visit_cookie(system, admin):
    item = new_product(admin)
    answer = Shopper(system).get("/?q=" + item["sku"])
    assert answer.status_code == 200
    assert answer.headers["Content-Type"] == "text/html; charset=utf-8"
    csp = answer.headers["Content-Security-Policy"]
    assert "script-src 'self'" in csp and "style-src 'self'" in csp and "unsafe-inline" not in csp
    assert "frame-ancestors 'none'" in csp and "form-action 'self'" in csp
    assert answer.headers["X-Content-Type-Options"] == "nosniff" and answer.headers["X-Frame-Options"] == "DENY"
    assert answer.headers["Cache-Control"] == "no-store"
    assert answer.headers["X-Request-ID"]
    cookie = answer.headers["Set-Cookie"]
    assert cookie.startswith("cartmesh_visit=") and "HttpOnly" in cookie and "SameSite=Lax" in cookie
    assert item["name"] in answer.text and "$12.50" in answer.text
    assert '<script src="/static/htmx-2.0.11.min.js" defer></script>' in answer.text
    assert "<script>" not in answer.text  # no inline script anywhere


@pytest.mark.parametrize(
    "path", ["/", "/account/login", "/account/register", "/static/storefront.css", "/static/htmx-2.0.11.min.js"]
)
def test_pages_open_to_anyone(system, path):
    assert Shopper(system).get(path).status_code == 200


def test_search_and_pagination(system, admin):
    word = f"kettle{uuid.uuid4().hex[:8]}"
    for _ in range(13):
        new_product(admin, name=f"{word} {uuid.uuid4().hex[:6]}")
    visitor = Shopper(system)
    first = visitor.get(f"/?q={word}")
    assert first.status_code == 200
    assert first.text.count('class="card"') == 12 and "13 products matching" in first.text
    assert "Page 1 of 2" in first.text and 'rel="next"' in first.text
    second = visitor.get(f"/?q={word}&page=2")
    assert second.text.count('class="card"') == 1 and 'rel="prev"' in second.text
    # htmx asks for the results only
    fragment = visitor.get(f"/?q={word}", headers=dict(HTMX, **{"HX-Target": "catalog"}))
    assert fragment.text.lstrip().startswith('<section id="catalog">') and "<html" not in fragment.text
    # a page number that is not one is the first page, never an error
    assert visitor.get(f"/?q={word}&page=abc").text.count('class="card"') == 12
    too_long = visitor.get("/?q=" + "x" * 201)
    assert too_long.status_code == 422 and "at most 200 characters" in too_long.text


def test_the_catalog_page_is_served_from_the_product_cache(system, admin):
    item = new_product(admin)
    labels = {"service": "gateway", "cache": "product_pages", "result": "hit"}
    visitor = Shopper(system)

    def read_twice_and_hit():
        # A miss fills the page, the read after it is a hit; the product's own product_changed event may still
        # arrive between the two and drop the page (as it should), so the pair is tried again until it does not.
        assert visitor.get("/?q=" + item["sku"]).status_code == 200
        hits = REGISTRY.get_sample_value("cartmesh_cache_requests_total", labels) or 0
        assert visitor.get("/?q=" + item["sku"]).status_code == 200
        return REGISTRY.get_sample_value("cartmesh_cache_requests_total", labels) == hits + 1

    wait_until(read_twice_and_hit, what="a catalog page answered from the cache")


# --- escaping ---------------------------------------------------------------------------------------------


def test_hostile_names_are_escaped_on_every_page_that_shows_them(system, admin, shopper, operator):
    word = uuid.uuid4().hex
    item = new_product(admin, name=HOSTILE, description=f"{HOSTILE_DESCRIPTION} {word}")
    shopper.add(item["sku"], 1)
    pages = [
        shopper.get("/?q=" + word),
        shopper.get(f"/shop/products/{item['sku']}"),
        shopper.get("/shop/cart"),
        operator.get("/console/products?q=" + word),
        operator.get(f"/console/products/{item['sku']}"),
    ]
    for page in pages:
        assert page.status_code == 200, page.url
        assert HOSTILE not in page.text and "<img src=x" not in page.text, page.url
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page.text, page.url
    order_id = order_id_of(shopper.checkout(GOOD_CARD))
    order_page = shopper.get(f"/account/orders/{order_id}")
    assert HOSTILE not in order_page.text and "&lt;script&gt;" in order_page.text
    # the search box reflects the query escaped, too
    reflected = shopper.get("/", params={"q": '"><script>alert(3)</script>'})
    assert "<script>alert(3)" not in reflected.text and "&lt;script&gt;alert(3)" in reflected.text


# --- sessions, log in, log out ----------------------------------------------------------------------------


def test_register_sets_the_session_cookie_and_log_out_clears_it(system):
    shopper = Shopper(system)
    page = shopper.get("/account/register")
    answer = shopper.post(
        "/account/register",
        {"csrf_token": csrf_of(page.text), "email": f"new-{uuid.uuid4().hex[:8]}@example.com", "password": PASSWORD},
    )
    assert answer.status_code == 303 and answer.headers["Location"] == "/"
    cookie = answer.headers["Set-Cookie"]
    assert cookie.startswith("cartmesh_session=") and "HttpOnly" in cookie and "SameSite=Lax" in cookie
    assert "Path=/" in cookie and "Max-Age=" in cookie
    assert "Secure" not in cookie  # this gateway runs with SESSION_COOKIE_SECURE off (plain HTTP on loopback)
    assert shopper.get("/shop/cart").status_code == 200

    out = shopper.submit("/", "/account/logout", {})
    assert out.status_code == 303 and out.headers["Location"] == "/"
    assert re.match(r'cartmesh_session=(""|);', out.headers["Set-Cookie"]) and "Max-Age=0" in out.headers["Set-Cookie"]
    assert "cartmesh_session" not in shopper.http.cookies
    assert shopper.get("/shop/cart").status_code == 303


def test_log_in_with_a_wrong_password_shows_the_form_again(system, shopper):
    visitor = Shopper(system)
    answer = visitor.submit("/account/login", "/account/login", {"email": shopper.email, "password": "wrong password"})
    assert answer.status_code == 401 and "The email or the password is wrong." in answer.text
    assert "cartmesh_session" not in answer.headers.get("Set-Cookie", "")
    assert f'value="{shopper.email}"' in answer.text  # the email is kept, the password is not


@pytest.mark.parametrize(
    ("next_path", "landing"),
    [("/shop/cart", "/shop/cart"), ("//evil.example/", "/"), ("https://evil.example/", "/"), ("/\\evil", "/")],
)
def test_log_in_goes_back_only_to_a_page_of_this_shop(system, shopper, next_path, landing):
    visitor = Shopper(system)
    answer = visitor.submit(
        "/account/login", "/account/login", {"email": shopper.email, "password": PASSWORD, "next": next_path}
    )
    assert answer.status_code == 303 and answer.headers["Location"] == landing


def test_a_dead_session_token_is_logged_out(system):
    visitor = Shopper(system)
    visitor.http.cookies.set("cartmesh_session", "not-a-token")
    answer = visitor.get("/")
    assert answer.status_code == 200 and "Log in" in answer.text
    assert "cartmesh_session=" in answer.headers["Set-Cookie"] and "Max-Age=0" in answer.headers["Set-Cookie"]


@pytest.mark.parametrize(
    "path",
    ["/shop/cart", "/account/orders", f"/account/orders/{uuid.uuid4()}", "/console", "/console/products"],
)
def test_pages_that_need_a_session_send_to_the_log_in_page(system, path):
    answer = Shopper(system).get(path)
    assert answer.status_code == 303
    assert answer.headers["Location"].startswith("/account/login?next=")


# --- CSRF -------------------------------------------------------------------------------------------------


def test_a_form_without_its_csrf_token_is_refused(system, admin, shopper):
    item = new_product(admin)
    for data in (
        {"sku": item["sku"], "quantity": "1"},
        {"sku": item["sku"], "quantity": "1", "csrf_token": ""},
        {"sku": item["sku"], "quantity": "1", "csrf_token": "forged"},
    ):
        answer = shopper.post("/shop/cart/items", data)
        assert answer.status_code == 403 and "did not come from this shop" in answer.text
        assert answer.headers["Content-Type"] == "text/html; charset=utf-8"
    # another session's token is refused too
    other = Shopper(system).register()
    stolen = csrf_of(other.get(f"/shop/products/{item['sku']}").text)
    assert (
        shopper.post("/shop/cart/items", {"sku": item["sku"], "quantity": "1", "csrf_token": stolen}).status_code == 403
    )
    assert "Your cart is empty" in shopper.cart_page()  # nothing was added


def test_log_in_and_register_forms_are_bound_to_the_visit(system, shopper):
    stranger = Shopper(system)  # never saw our page: no visit cookie, a token made for someone else
    token = csrf_of(Shopper(system).get("/account/login").text)
    answer = stranger.post("/account/login", {"csrf_token": token, "email": shopper.email, "password": PASSWORD})
    assert answer.status_code == 403
    assert stranger.post("/account/logout", {}).status_code == 403


# --- the console ------------------------------------------------------------------------------------------


CONSOLE_PAGES = [
    "/console",
    "/console/services",
    "/console/products",
    "/console/events",
    "/console/orders",
    "/console/audit",
]


@pytest.mark.parametrize("path", CONSOLE_PAGES)
def test_a_shopper_gets_403_on_the_console(shopper, path):
    answer = shopper.get(path)
    assert answer.status_code == 403 and "Only an administrator may see the console." in answer.text
    assert answer.headers["Content-Type"] == "text/html; charset=utf-8"


def test_a_shopper_cannot_post_to_the_console(system, admin, shopper):
    item = new_product(admin)
    token = csrf_of(shopper.get("/").text)
    answer = shopper.post(f"/console/products/{item['sku']}", {"csrf_token": token, "name": "Mine", "price": "0.01"})
    assert answer.status_code == 403
    assert shopper.post("/console/events/carts/replay", {"csrf_token": token}).status_code == 403
    assert admin.get(f"/products/{item['sku']}").json()["name"] == item["name"]


@pytest.mark.parametrize("path", CONSOLE_PAGES)
def test_every_console_page_opens_for_the_admin(operator, path):
    answer = operator.get(path)
    assert answer.status_code == 200, answer.text
    assert 'href="/console/products"' in answer.text


def test_the_console_shows_the_service_map_and_order_counts(operator):
    page = operator.get("/console").text
    for name in ("accounts", "carts", "catalog", "orders", "payments"):
        assert f'data-service="{name}"' in page
    assert 'hx-get="/console/services" hx-trigger="every 2s"' in page
    assert "/console/orders?status=confirmed" in page
    fragment = operator.get("/console/services", headers=dict(HTMX, **{"HX-Target": "service-map"}))
    assert fragment.text.lstrip().startswith('<section id="service-map"') and "<html" not in fragment.text


def test_an_admin_creates_and_edits_a_product_and_the_shop_shows_it(system, operator):
    sku = f"CONSOLE-{uuid.uuid4().hex[:8]}"
    created = operator.submit(
        "/console/products",
        "/console/products",
        {"sku": sku, "name": "Copper kettle", "description": "Boils.", "price": "19.90", "stock": "7"},
    )
    assert created.status_code == 303 and created.headers["Location"] == f"/console/products/{sku}?notice=created"
    visitor = Shopper(system)
    assert "$19.90" in visitor.get(f"/shop/products/{sku}").text  # read once: now in the product cache
    edited = operator.submit(
        f"/console/products/{sku}",
        f"/console/products/{sku}",
        {"name": "Copper kettle", "description": "Boils fast.", "price": "17.5", "stock": "9"},
    )
    assert edited.status_code == 303
    page = visitor.get(f"/shop/products/{sku}").text
    assert "$17.50" in page and "Boils fast." in page and "9 in stock" in page
    assert "The product was saved." in operator.get(edited.headers["Location"]).text


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"price": "abc"}, "Price must be an amount such as 12.50"),
        ({"price": "-1"}, "Price must be an amount such as 12.50"),
        ({"stock": "-3"}, "Stock "),
        ({"name": "   "}, "Name must not be blank"),
        ({"sku": "no spaces allowed"}, "Sku must be 1 to 64 characters"),
    ],
)
def test_a_bad_product_form_is_shown_again_with_the_reason(operator, fields, message):
    form = dict({"sku": f"BAD-{uuid.uuid4().hex[:8]}", "name": "Ok", "description": "", "price": "1.00", "stock": "1"})
    form.update(fields)
    answer = operator.submit("/console/products", "/console/products", form)
    assert answer.status_code == 422, answer.text
    assert message in answer.text
    assert f'value="{form["sku"]}"' in answer.text  # what was typed is kept


def test_a_taken_sku_is_409_on_the_form(admin, operator):
    item = new_product(admin)
    answer = operator.submit(
        "/console/products",
        "/console/products",
        {"sku": item["sku"], "name": "Again", "description": "", "price": "1", "stock": "1"},
    )
    assert answer.status_code == 409 and "is taken by another product" in answer.text


def test_editing_a_product_that_does_not_exist_is_404(operator):
    assert operator.get("/console/products/NO-SUCH-SKU-EVER").status_code == 404
    answer = operator.submit(
        "/console", "/console/products/NO-SUCH-SKU-EVER", {"name": "x", "price": "1", "stock": "1"}
    )
    assert answer.status_code == 404 and answer.headers["Content-Type"] == "text/html; charset=utf-8"


def test_replaying_a_service_that_parks_nothing_is_404(operator):
    assert operator.submit("/console", "/console/events/accounts/replay", {}).status_code == 404
    assert operator.submit("/console", "/console/events/Carts!/replay", {}).status_code == 404


def test_recent_orders_filter_by_status(operator):
    page = operator.get("/console/orders?status=confirmed")
    assert page.status_code == 200 and 'aria-current="page">confirmed' in page.text
    assert operator.get("/console/orders?status=<b>").status_code == 200  # not a status: all of them


# --- shopping over HTTP -----------------------------------------------------------------------------------


def test_cart_and_checkout_without_javascript(system, admin, shopper):
    tea, pot = new_product(admin, price_cents=250), new_product(admin, price_cents=1000)
    shopper.add(tea["sku"], 1)
    shopper.add(pot["sku"], 2)
    page = shopper.cart_page()
    assert "$22.50" in page and '<span id="cart-badge" class="badge">3</span>' in page
    cart_id = field_of(page, "cart_id")
    changed = shopper.post(
        f"/shop/cart/items/{tea['sku']}", {"csrf_token": csrf_of(page), "cart_id": cart_id, "quantity": "4"}
    )
    assert changed.status_code == 303 and changed.headers["Location"] == "/shop/cart"
    assert "$30.00" in shopper.cart_page()
    removed = shopper.post(f"/shop/cart/items/{pot['sku']}/remove", {"csrf_token": csrf_of(page), "cart_id": cart_id})
    assert removed.status_code == 303
    page = shopper.cart_page()
    assert "$10.00" in page and pot["name"] not in page

    order_id = order_id_of(shopper.checkout(GOOD_CARD))
    status, fragment = settled(shopper, order_id)
    assert status == "confirmed" and "hx-trigger" not in fragment  # settled: the page stops polling
    history = shopper.get("/account/orders").text
    assert order_id[:8] in history and "confirmed" in history
    assert "Your cart is empty" in shopper.cart_page()

    cancelled = shopper.submit(f"/account/orders/{order_id}", f"/account/orders/{order_id}/cancel", {})
    assert cancelled.status_code == 303
    assert status_of(shopper, order_id)[0] == "cancelled"
    again = shopper.submit(f"/account/orders/{order_id}", f"/account/orders/{order_id}/cancel", {})
    assert again.status_code == 409 and "cannot be cancelled" in again.text


def test_another_shoppers_order_is_not_found(system, admin, shopper):
    shopper.add(new_product(admin)["sku"], 1)
    order_id = order_id_of(shopper.checkout(GOOD_CARD))
    stranger = Shopper(system).register()
    for path in (f"/account/orders/{order_id}", f"/account/orders/{order_id}/status"):
        assert stranger.get(path).status_code == 404
    cancel = stranger.submit("/account/orders", f"/account/orders/{order_id}/cancel", {})
    assert cancel.status_code == 404
    assert shopper.get(f"/account/orders/{order_id}").status_code == 200


def test_a_checkout_form_posted_twice_places_one_order(admin, shopper):
    shopper.add(new_product(admin)["sku"], 1)
    page = shopper.cart_page()
    form = {
        "csrf_token": csrf_of(page),
        "cart_id": field_of(page, "cart_id"),
        "idempotency_key": field_of(page, "idempotency_key"),
        "card_number": GOOD_CARD,
    }
    assert order_id_of(shopper.post("/shop/checkout", form)) == order_id_of(shopper.post("/shop/checkout", form))


def test_the_declined_card_fails_the_order_and_opens_the_cart_again(admin, shopper):
    item = new_product(admin)
    shopper.add(item["sku"], 2)
    order_id = order_id_of(shopper.checkout(DECLINED_CARD))
    status, fragment = settled(shopper, order_id)
    assert status == "failed" and "payment_declined" in fragment
    wait_until(lambda: item["name"] in shopper.cart_page())  # carts reopens it on the order_failed event


def test_htmx_gets_the_changed_cart_with_the_badge(admin, shopper):
    item = new_product(admin, price_cents=300)
    shopper.add(item["sku"], 1)
    page = shopper.cart_page()
    answer = shopper.post(
        f"/shop/cart/items/{item['sku']}",
        {"csrf_token": csrf_of(page), "cart_id": field_of(page, "cart_id"), "quantity": "5"},
        headers=dict(HTMX, **{"HX-Target": "cart"}),
    )
    assert answer.status_code == 200 and "<html" not in answer.text
    assert answer.text.lstrip().startswith('<section id="cart">') and "$15.00" in answer.text
    assert 'id="cart-badge" class="badge" hx-swap-oob="true">5<' in answer.text


@pytest.mark.parametrize(
    ("quantity", "status", "message"),
    [("0", 422, "greater than or equal to 1"), ("abc", 422, "valid integer"), ("1000", 422, "less than or equal")],
)
def test_a_bad_quantity_shows_the_product_again(admin, shopper, quantity, status, message):
    item = new_product(admin)
    answer = shopper.submit(
        f"/shop/products/{item['sku']}", "/shop/cart/items", {"sku": item["sku"], "quantity": quantity}
    )
    assert answer.status_code == status and message in answer.text
    assert item["name"] in answer.text


def test_a_bad_line_quantity_shows_the_cart_again(admin, shopper):
    item = new_product(admin)
    shopper.add(item["sku"], 1)
    page = shopper.cart_page()
    answer = shopper.post(
        f"/shop/cart/items/{item['sku']}",
        {"csrf_token": csrf_of(page), "cart_id": field_of(page, "cart_id"), "quantity": "1000"},
    )
    assert answer.status_code == 422 and "Quantity " in answer.text and "$12.50" in answer.text


@pytest.mark.parametrize(
    ("card", "message"),
    [("1234", "must be 12 to 19 digits"), ("4242424242424241", "is not a valid card number")],
)
def test_a_bad_card_number_shows_the_cart_again(admin, shopper, card, message):
    shopper.add(new_product(admin)["sku"], 1)
    answer = shopper.checkout(card)
    assert answer.status_code == 422 and message in answer.text
    assert "Place order" in answer.text


def test_a_bad_registration_is_shown_again(system, shopper):
    visitor = Shopper(system)
    short = visitor.submit("/account/register", "/account/register", {"email": "a@example.com", "password": "short"})
    assert short.status_code == 422 and "at least 8 characters" in short.text
    taken = visitor.submit("/account/register", "/account/register", {"email": shopper.email, "password": PASSWORD})
    assert taken.status_code == 409 and "already has an account" in taken.text


def test_malformed_forms_are_4xx_pages(system, shopper):
    token = csrf_of(shopper.get("/").text)
    as_json = shopper.post("/shop/cart/items", json={"csrf_token": token})
    assert as_json.status_code == 415
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    twice = shopper.post("/shop/cart/items", data=f"csrf_token={token}&sku=A&sku=B", headers=form)
    assert twice.status_code == 400 and "more than once" in twice.text
    not_utf8 = shopper.post(
        "/shop/cart/items",
        data=f"csrf_token={token}&sku=%ff",
        headers=form,
    )
    assert not_utf8.status_code == 400 and not_utf8.headers["Content-Type"].startswith("text/html")


# --- paths ------------------------------------------------------------------------------------------------


def test_pages_and_the_api_keep_to_their_own_paths(system, anon):
    assert anon.get("/products").headers["Content-Type"] == "application/json; charset=utf-8"
    missing = Shopper(system).get("/shop/nothing-here")
    assert missing.status_code == 404 and missing.headers["Content-Type"] == "text/html; charset=utf-8"
    assert Shopper(system).post("/", {}).status_code == 405
    paths = anon.get("/openapi.json").json()["paths"]
    assert not [path for path in paths if path == "/" or path.split("/")[1] in ("shop", "account", "console", "static")]


def test_static_files_are_cacheable_and_only_those_in_the_folder(system):
    visitor = Shopper(system)
    htmx = visitor.get("/static/htmx-2.0.11.min.js")
    assert htmx.headers["Content-Type"].startswith(("application/javascript", "text/javascript"))
    assert htmx.headers["Cache-Control"] == "public, max-age=3600" and "Set-Cookie" not in htmx.headers
    for path in ("/static/nothing.js", "/static/..%2fpages.py", "/static/../service.py", "/static/.hidden"):
        assert visitor.get(path).status_code == 404, path


def test_page_requests_are_counted_by_page_template(shopper):
    order = f"/account/orders/{uuid.uuid4()}"
    assert shopper.get(order).status_code == 404
    labels = {"service": "gateway", "method": "GET", "route": "/account/orders/{id}", "status": "404"}
    assert REGISTRY.get_sample_value("cartmesh_http_requests_total", labels) >= 1
