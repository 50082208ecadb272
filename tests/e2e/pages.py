"""A browser's view of the storefront over plain HTTP (requests with a cookie jar), for the page tests."""

import html
import re
import uuid

import requests

CSRF = re.compile(r'name="csrf_token" value="([^"]*)"')
PASSWORD = "correct horse"


def csrf_of(page):
    """The CSRF token of the first form on `page` (its HTML)."""
    match = CSRF.search(page)
    assert match, "the page has no form with a CSRF token"
    return html.unescape(match.group(1))


def field_of(page, name):
    """The value of the hidden or text input `name` on `page`."""
    match = re.search(rf'name="{re.escape(name)}" value="([^"]*)"', page)
    assert match, f"the page has no field {name}"
    return html.unescape(match.group(1))


class Shopper:
    """One browser: its own cookies; answers are not followed unless asked (`follow=True`)."""

    def __init__(self, system):
        self.base_url = system.base_url
        self.http = requests.Session()
        self.email = None

    def get(self, path, follow=False, **kwargs):
        return self.http.get(self.base_url + path, allow_redirects=follow, timeout=15, **kwargs)

    def post(self, path, data=None, follow=False, **kwargs):
        return self.http.post(self.base_url + path, data=data, allow_redirects=follow, timeout=15, **kwargs)

    def submit(self, form_page, action, fields, follow=False, **kwargs):
        """Post `fields` to `action` with the CSRF token of the page at `form_page`, as the browser would."""
        page = self.get(form_page)
        assert page.status_code == 200, page.text
        return self.post(action, dict(fields, csrf_token=csrf_of(page.text)), follow=follow, **kwargs)

    def register(self, email=None):
        self.email = email or f"shopper-{uuid.uuid4().hex[:10]}@example.com"
        answer = self.submit("/account/register", "/account/register", {"email": self.email, "password": PASSWORD})
        assert answer.status_code == 303, answer.text
        return self

    def login(self, email, password):
        answer = self.submit("/account/login", "/account/login", {"email": email, "password": password, "next": "/"})
        assert answer.status_code == 303, answer.text
        self.email = email
        return self

    def add(self, sku, quantity=1):
        answer = self.submit(f"/shop/products/{sku}", "/shop/cart/items", {"sku": sku, "quantity": str(quantity)})
        assert answer.status_code == 303 and answer.headers["Location"] == "/shop/cart", answer.text
        return answer

    def cart_page(self):
        page = self.get("/shop/cart")
        assert page.status_code == 200, page.text
        return page.text

    def checkout(self, card_number):
        page = self.cart_page()
        return self.post(
            "/shop/checkout",
            {
                "csrf_token": csrf_of(page),
                "cart_id": field_of(page, "cart_id"),
                "idempotency_key": field_of(page, "idempotency_key"),
                "card_number": card_number,
            },
        )


def new_product(admin, name=None, price_cents=1250, stock=50, description=""):
    """A product made through the API by `admin` (a tests.e2e.conftest Client)."""
    sku = f"PAGE-{uuid.uuid4().hex[:10]}"
    answer = admin.post(
        "/products",
        json={
            "sku": sku,
            "name": name or f"Teapot {sku}",
            "description": description,
            "price_cents": price_cents,
            "stock": stock,
        },
    )
    assert answer.status_code == 201, answer.text
    return answer.json()
