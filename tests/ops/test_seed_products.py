"""The demo catalog that `make seed` loads obeys the API's product rules (API.md), so seeding cannot be refused."""

import re

from scripts.seed import load_products

SKU = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


def whole_number(value):
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def test_the_demo_products_are_a_dozen_valid_products_with_distinct_skus():
    products = load_products()
    assert len(products) == 12
    assert len({product["sku"] for product in products}) == len(products)
    for product in products:
        assert set(product) == {"sku", "name", "description", "price_cents", "stock"}, product
        assert SKU.match(product["sku"]), product
        assert 1 <= len(product["name"]) <= 200, product
        assert isinstance(product["description"], str) and len(product["description"]) <= 2000, product
        assert whole_number(product["price_cents"]) and whole_number(product["stock"]), product
