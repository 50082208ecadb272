"""`make seed`: loads the demo catalog (scripts/seed_products.json, 12 products) into a running Cartmesh.

    ADMIN_EMAIL=admin@example.com ADMIN_PASSWORD=... .venv/bin/python -m scripts.seed

It talks only to the public HTTP API of the gateway at `GATEWAY_URL` (default http://localhost:8000), logged in
as the administrator whose credentials are in `ADMIN_EMAIL` and `ADMIN_PASSWORD`: the same two variables that
make the accounts service create that administrator at start-up, so start the system (`make run` or
`docker compose up`) with them set too. There is no default administrator.

Running it again is harmless: a product whose sku exists already gets the demo name, description and price
back with a PATCH if they differ, and is left alone if not; its stock is never touched again, since
by then it is the shop's live stock (reserved units included). Exit status: 0 done, 1 the API refused or could
not be reached, 2 credentials missing.
"""

import json
import os
import sys

import requests

PRODUCTS_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "seed_products.json")
DEFAULT_GATEWAY_URL = "http://localhost:8000"
TIMEOUT = 15  # seconds per request
# What a re-run brings back to the demo values; stock is left as the shop has it.
CONTENT_FIELDS = ("name", "description", "price_cents")


class SeedError(Exception):
    """The API refused a step or could not be reached; the message says which and why."""


def load_products(path=PRODUCTS_FILE):
    with open(path) as products_file:
        return json.load(products_file)


def _explain(response):
    """The API's error message from its error envelope, else the start of the body."""
    try:
        error = response.json()["error"]
        return f"{response.status_code} {error['code']}: {error['message']}"
    except (ValueError, KeyError, TypeError):
        return f"{response.status_code}: {response.text[:200]}"


class Seeder:
    """Creates or updates products through the gateway at `base_url` as one logged-in administrator."""

    def __init__(self, base_url, session=None):
        self.base_url = base_url.rstrip("/")
        self.http = session or requests.Session()

    def request(self, method, path, **kwargs):
        try:
            return self.http.request(method, self.base_url + path, timeout=TIMEOUT, **kwargs)
        except requests.RequestException as exc:
            raise SeedError(f"cannot reach the gateway at {self.base_url} ({exc}); is the system running?")

    def login(self, email, password):
        response = self.request("POST", "/auth/token", json={"email": email, "password": password})
        if response.status_code != 200:
            raise SeedError(
                f"cannot log in as {email}: {_explain(response)} (is the system started with the "
                "same ADMIN_EMAIL and ADMIN_PASSWORD?)"
            )
        self.http.headers["Authorization"] = f"Bearer {response.json()['access_token']}"

    def put_product(self, product):
        """Creates `product`, or brings an existing one's content back to it; "created", "updated" or
        "unchanged"."""
        sku = product["sku"]
        current = self.get_product(sku)
        if current is None:
            response = self.request("POST", "/products", json=product)
            if response.status_code == 201:
                return "created"
            if response.status_code != 409:  # 409: made by someone else since we looked
                raise SeedError(f"creating {sku} failed: {_explain(response)}")
            current = self.get_product(sku)
            if current is None:
                raise SeedError(f"creating {sku} was refused as a duplicate, yet it cannot be read back")
        changes = {
            field: product[field]
            for field in CONTENT_FIELDS
            if field in product and current.get(field) != product[field]
        }
        if not changes:
            return "unchanged"
        response = self.request("PATCH", f"/products/{sku}", json=changes)
        if response.status_code != 200:
            raise SeedError(f"updating {sku} failed: {_explain(response)}")
        return "updated"

    def get_product(self, sku):
        """The product with `sku`, or None if the catalog has none."""
        response = self.request("GET", f"/products/{sku}")
        if response.status_code == 404:
            return None
        if response.status_code != 200:
            raise SeedError(f"reading {sku} failed: {_explain(response)}")
        return response.json()


def seed(base_url, email, password, products):
    """Puts every product of `products` into the catalog; {"created": n, "updated": n, "unchanged": n}."""
    seeder = Seeder(base_url)
    seeder.login(email, password)
    counts = {"created": 0, "updated": 0, "unchanged": 0}
    for product in products:
        outcome = seeder.put_product(product)
        counts[outcome] += 1
        print(f"{product['sku']}: {outcome}")
    return counts


def main(environ=None):
    environ = os.environ if environ is None else environ
    email, password = environ.get("ADMIN_EMAIL"), environ.get("ADMIN_PASSWORD")
    if not email or not password:
        print(
            "seed: set ADMIN_EMAIL and ADMIN_PASSWORD to the administrator's credentials (the system must "
            "have been started with the same two variables)",
            file=sys.stderr,
        )
        return 2
    base_url = environ.get("GATEWAY_URL") or DEFAULT_GATEWAY_URL
    try:
        counts = seed(base_url, email, password, load_products())
    except SeedError as exc:
        print(f"seed: {exc}", file=sys.stderr)
        return 1
    print(
        f"seed: {counts['created']} created, {counts['updated']} updated, {counts['unchanged']} unchanged at {base_url}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
