"""The catalog's rules without broker or database: products, changes, listing pages."""

import pytest

from services.catalog.domain import (
    validate_changes,
    validate_new_product,
    validate_page,
)
from services.common.errors import ValidationFailed
from services.common.rules import MAX_AMOUNT, is_sku

GOOD = {"sku": "MUG-01_a", "name": "Mug", "description": "Blue", "price_cents": 1250, "stock": 3}


def fields_of(failure):
    return failure.value.details["fields"]


@pytest.mark.parametrize("sku", ["a", "A-Z_0-9", "x" * 64, "-", "_"])
def test_good_skus(sku):
    assert is_sku(sku)


@pytest.mark.parametrize("sku", ["", "x" * 65, "a b", "a/b", "mug.1", "ümlaut", "abc\n", "%", 12, None])
def test_bad_skus(sku):
    assert not is_sku(sku)


def test_good_product_is_returned_whole():
    assert validate_new_product(GOOD) == GOOD


def test_description_defaults_to_empty():
    product = {key: value for key, value in GOOD.items() if key != "description"}
    assert validate_new_product(product) == dict(product, description="")


def test_limits_are_inclusive():
    product = dict(GOOD, sku="x" * 64, name="n" * 200, description="d" * 2000, price_cents=0, stock=MAX_AMOUNT)
    assert validate_new_product(product) == product


@pytest.mark.parametrize(
    "field, value, reason",
    [
        ("sku", "bad sku", "must be 1 to 64 characters of A-Z a-z 0-9 - _"),
        ("sku", 7, "must be 1 to 64 characters of A-Z a-z 0-9 - _"),
        ("name", "", "must be 1 to 200 characters"),
        ("name", "n" * 201, "must be 1 to 200 characters"),
        ("name", "   ", "must not be blank"),
        ("name", None, "must be a string"),
        ("description", "d" * 2001, "must be at most 2000 characters"),
        ("description", None, "must be a string"),
        ("price_cents", True, f"must be a whole number from 0 to {MAX_AMOUNT}"),
        ("price_cents", False, f"must be a whole number from 0 to {MAX_AMOUNT}"),
        ("price_cents", 12.0, f"must be a whole number from 0 to {MAX_AMOUNT}"),
        ("price_cents", "1250", f"must be a whole number from 0 to {MAX_AMOUNT}"),
        ("price_cents", -1, f"must be a whole number from 0 to {MAX_AMOUNT}"),
        ("stock", MAX_AMOUNT + 1, f"must be a whole number from 0 to {MAX_AMOUNT}"),
        ("stock", None, f"must be a whole number from 0 to {MAX_AMOUNT}"),
    ],
)
def test_bad_field_is_named(field, value, reason):
    with pytest.raises(ValidationFailed) as failure:
        validate_new_product(dict(GOOD, **{field: value}))
    assert fields_of(failure) == {field: reason}


def test_unknown_and_missing_fields_are_named_together():
    with pytest.raises(ValidationFailed) as failure:
        validate_new_product({"sku": "A1", "colour": "red", "price_cents": "free"})
    assert fields_of(failure) == {
        "colour": "unknown field",
        "name": "is required",
        "stock": "is required",
        "price_cents": f"must be a whole number from 0 to {MAX_AMOUNT}",
    }


@pytest.mark.parametrize("product", [None, [], "MUG", 1])
def test_product_must_be_an_object(product):
    with pytest.raises(ValidationFailed) as failure:
        validate_new_product(product)
    assert fields_of(failure) == {"product": "must be an object"}


def test_good_changes():
    assert validate_changes({"stock": 0}) == {"stock": 0}
    assert validate_changes({"name": "N", "description": "", "price_cents": 1}) == {
        "name": "N",
        "description": "",
        "price_cents": 1,
    }


def test_empty_changes_are_refused():
    with pytest.raises(ValidationFailed) as failure:
        validate_changes({})
    assert "changes" in fields_of(failure)


@pytest.mark.parametrize(
    "changes, fields",
    [
        ({"sku": "OTHER"}, {"sku": "cannot be changed"}),
        ({"colour": "red", "stock": 1}, {"colour": "unknown field"}),
        ({"stock": True}, {"stock": f"must be a whole number from 0 to {MAX_AMOUNT}"}),
        (
            {"price_cents": 9.99, "name": ""},
            {"price_cents": f"must be a whole number from 0 to {MAX_AMOUNT}", "name": "must be 1 to 200 characters"},
        ),
        (None, {"changes": "must be an object"}),
        (["stock", 1], {"changes": "must be an object"}),
    ],
)
def test_bad_changes_are_named(changes, fields):
    with pytest.raises(ValidationFailed) as failure:
        validate_changes(changes)
    assert fields_of(failure) == fields


def test_page_defaults_and_bounds():
    assert validate_page(20, 0, None) == (20, 0, None)
    assert validate_page(1, 5, "mug") == (1, 5, "mug")
    assert validate_page(100, 0, "") == (100, 0, None)
    assert validate_page(100, 0, "q" * 200) == (100, 0, "q" * 200)


@pytest.mark.parametrize(
    "limit, offset, q, field",
    [
        (0, 0, None, "limit"),
        (101, 0, None, "limit"),
        (True, 0, None, "limit"),
        ("20", 0, None, "limit"),
        (2.0, 0, None, "limit"),
        (20, -1, None, "offset"),
        (20, 1.5, None, "offset"),
        (20, None, None, "offset"),
        (20, 0, 5, "q"),
        (20, 0, "q" * 201, "q"),
    ],
)
def test_bad_page(limit, offset, q, field):
    with pytest.raises(ValidationFailed) as failure:
        validate_page(limit, offset, q)
    assert list(fields_of(failure)) == [field]
