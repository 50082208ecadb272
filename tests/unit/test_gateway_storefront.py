"""The storefront's parts without a broker: which paths are pages, CSRF tokens and cookies, form fields, money,
escaping in the templates, the static files and the page CSP."""

from types import SimpleNamespace

import pytest
from nameko.exceptions import ConfigurationError
from werkzeug.datastructures import Headers
from werkzeug.test import EnvironBuilder
from werkzeug.wrappers import Request, Response

from gateway_http.ratelimit.policies import RateLimiter
from gateway_http.ratelimit.stores import MemoryStore
from gateway_http.routes import ROUTES
from gateway_http.security import PAGE_CSP, secure_headers
from gateway_http.storefront.forms import price_cents, price_text, whole_number
from gateway_http.storefront.pages import is_page_path, load_static, local_path, money, render
from gateway_http.storefront.session import PageSessions, csrf_secret, csrf_token, is_secure
from gateway_http.storefront.site import PAGES, SITE
from services.common.errors import Unauthorized
from tests.unit.test_gateway_router import FakeService

HOSTILE = "<script>alert(1)</script>"


@pytest.mark.parametrize(
    ("path", "page"),
    [
        ("/", True),
        ("/shop/cart", True),
        ("/account/login", True),
        ("/console", True),
        ("/static/storefront.css", True),
        ("/products", False),
        ("/products/SKU-1", False),
        ("/carts", False),
        ("/orders", False),
        ("/auth/token", False),
        ("/me", False),
        ("/health", False),
        ("/metrics", False),
        ("/openapi.json", False),
        ("/shopping", False),
        ("", False),
    ],
)
def test_which_paths_are_pages(path, page):
    assert is_page_path(path) is page


def test_no_page_takes_a_path_of_the_api_and_every_page_is_a_page_path():
    assert all(not is_page_path(route.path) for route in ROUTES)
    assert all(is_page_path(page.path) for page in PAGES)
    assert len({(page.method, page.path) for page in PAGES}) == len(PAGES)


def test_csrf_tokens_are_bound_to_a_session_and_a_secret():
    secret = csrf_secret({"JWT_SECRET": "a" * 32})
    token = csrf_token(secret, "session-1")
    assert token == csrf_token(secret, "session-1")
    assert token != csrf_token(secret, "session-2")
    assert token != csrf_token(csrf_secret({"JWT_SECRET": "b" * 32}), "session-1")
    assert len(token) == 43 and "=" not in token  # 256 bits, URL-safe
    # the key is not the JWT secret itself, and SESSION_SECRET, when given, is used instead
    assert secret != b"a" * 32
    assert csrf_secret({"JWT_SECRET": "a" * 32, "SESSION_SECRET": "own"}) == b"own"
    with pytest.raises(ConfigurationError):
        csrf_secret({"JWT_SECRET": " ", "SESSION_SECRET": ""})


@pytest.mark.parametrize(
    ("value", "secure"), [(None, True), (True, True), ("true", True), ("yes", True), ("false", False), (False, False)]
)
def test_cookies_are_secure_unless_configured_off(value, secure):
    assert is_secure(value) is secure


def page_sessions(**config):
    sessions = PageSessions()
    sessions.container = SimpleNamespace(config=dict({"JWT_SECRET": "x" * 32}, **config))
    sessions.setup()
    return sessions


def test_the_session_cookie_is_httponly_lax_and_secure_by_default():
    response = Response()
    page_sessions().set_cookie(response, "cartmesh_session", "token", 3600)
    cookie = response.headers["Set-Cookie"]
    for attribute in ("HttpOnly", "Secure", "SameSite=Lax", "Path=/", "Max-Age=3600"):
        assert attribute in cookie
    plain = Response()
    page_sessions(SESSION_COOKIE_SECURE=False).delete_cookie(plain, "cartmesh_session")
    assert "Secure" not in plain.headers["Set-Cookie"] and "Max-Age=0" in plain.headers["Set-Cookie"]


def test_a_csrf_token_is_checked_in_constant_time_against_the_binding():
    sessions = page_sessions()
    token = sessions.csrf_token("visit-1")
    assert sessions.valid_csrf("visit-1", token)
    assert not sessions.valid_csrf("visit-2", token)
    assert not sessions.valid_csrf("visit-1", None) and not sessions.valid_csrf("", sessions.csrf_token(""))


@pytest.mark.parametrize(
    ("text", "cents"),
    [
        ("12.50", 1250),
        ("12.5", 1250),
        ("12", 1200),
        ("$ 0.99", 99),
        (" 7.05 ", 705),
        ("0", 0),
        ("21474836.47", 2**31 - 1),
    ],
)
def test_a_typed_price_in_cents(text, cents):
    assert price_cents(text) == cents


@pytest.mark.parametrize("text", ["", "abc", "-1", "1.234", "1,50", "1e3", "21474836.48", "١٢", None])
def test_what_is_not_a_price(text):
    assert price_cents(text) is None


def test_prices_and_numbers_as_shown_and_typed():
    assert money(0) == "$0.00" and money(123456) == "$1,234.56" and money(-5) == "-$0.05"
    assert price_text(1250) == "12.50" and price_text(7) == "0.07"
    assert whole_number(" 42 ") == 42 and whole_number("4.2") == "4.2" and whole_number("") == ""


@pytest.mark.parametrize(
    ("target", "landing"),
    [
        ("/shop/cart?x=1", "/shop/cart?x=1"),
        ("//evil.example", "/"),
        ("https://evil.example", "/"),
        ("/\\evil.example", "/"),
        ("/\nSet-Cookie:x", "/"),
        ("", "/"),
        (None, "/"),
    ],
)
def test_only_local_paths_are_followed_after_log_in(target, landing):
    assert local_path(target) == landing


def page_context(**values):
    return dict(
        {"user": None, "csrf": "token", "csrf_field": "csrf_token", "cart_count": 0, "fragment": None}, **values
    )


def test_templates_escape_every_value():
    product = {"sku": "SKU-1", "name": HOSTILE, "description": '"><img src=x>', "price_cents": 100, "stock": 1}
    page = render("product.html", page_context(product=product, errors={}, quantity="1", added=None))
    assert HOSTILE not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "<img src=x>" not in page
    catalog = render(
        "catalog.html",
        page_context(products=[product], total=1, q='"><b>', page=1, pages=1, errors={}),
        fragment="catalog",
    )
    assert catalog.lstrip().startswith('<section id="catalog">') and "<html" not in catalog
    assert HOSTILE not in catalog and '"><b>' not in catalog


def test_the_static_files_are_htmx_the_stylesheet_and_the_icon():
    files = load_static()
    assert set(files) >= {"htmx-2.0.11.min.js", "htmx-LICENSE.txt", "storefront.css", "favicon.svg"}
    assert files["storefront.css"][1] == "text/css; charset=utf-8"
    assert files["htmx-2.0.11.min.js"][0].startswith(b"var htmx=")


def test_html_answers_get_the_page_csp_and_json_keeps_the_api_policy():
    page = secure_headers(Headers({"Content-Type": "text/html; charset=utf-8"}), 200, False)
    assert page["Content-Security-Policy"] == PAGE_CSP
    assert "'unsafe-inline'" not in PAGE_CSP and "'unsafe-eval'" not in PAGE_CSP
    api = secure_headers(Headers({"Content-Type": "application/json"}), 200, False)
    assert api["Content-Security-Policy"] == "default-src 'none'; frame-ancestors 'none'"


# --- the page pipeline, without a broker ------------------------------------------------------------------


def page_service(**kwargs):
    service = FakeService(**kwargs)
    service.page_sessions = page_sessions(SESSION_COOKIE_SECURE=False)
    return service


def serve(service, method, path, **kwargs):
    return SITE.dispatch(service, Request(EnvironBuilder(method=method, path=path, **kwargs).get_environ()))


def test_an_address_over_its_rate_limit_gets_a_429_page_before_anything_else():
    service = page_service(rate_limit=RateLimiter(MemoryStore(), per_address=1, per_user=0, window=60))
    assert serve(service, "GET", "/account/login").status_code == 200
    for path in ("/account/login", "/shop/no-such-page"):
        refused = serve(service, "GET", path)
        assert refused.status_code == 429 and refused.mimetype == "text/html"
        assert refused.headers["Retry-After"] and refused.headers["X-Request-ID"] == "req-1"


def test_refusals_are_pages_with_their_status_and_headers():
    service = page_service()
    wrong_method = serve(service, "PUT", "/account/login")
    assert wrong_method.status_code == 405 and wrong_method.headers["Allow"] == "GET, HEAD, POST"
    assert wrong_method.mimetype == "text/html" and b"Traceback" not in wrong_method.data
    too_big = serve(service, "POST", "/account/login", data="x" * 500, content_type="application/x-www-form-urlencoded")
    assert too_big.status_code == 413 and too_big.mimetype == "text/html"


def test_a_shoppers_form_sends_an_anonymous_visitor_to_log_in_before_any_csrf_check():
    answer = serve(page_service(), "POST", "/shop/cart/items", data={"sku": "A", "quantity": "1"})
    assert answer.status_code == 303
    assert answer.headers["Location"] == "/account/login?next=%2Fshop%2Fcart%2Fitems"


def test_an_anonymous_form_needs_the_visits_token():
    service = page_service()
    page = serve(service, "GET", "/account/login")
    visit = page.headers["Set-Cookie"].split(";")[0].split("=", 1)[1]
    token = service.page_sessions.csrf_token(visit)
    assert f'value="{token}"' in page.get_data(as_text=True)
    form = {"email": "a@example.com", "password": "x", "csrf_token": token}
    assert serve(service, "POST", "/account/login", data=form).status_code == 403  # no visit cookie
    headers = {"Cookie": f"cartmesh_visit={visit}"}
    service.accounts.answer = Unauthorized("no")
    assert serve(service, "POST", "/account/login", data=form, headers=headers).status_code == 401  # the form ran
