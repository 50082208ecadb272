"""The carts service's plain rules: validation, merging, arithmetic, checkout and the cart's shape."""

from datetime import UTC, datetime, timedelta, timezone

import pytest

from services.carts import domain
from services.common import rules
from services.common.errors import Conflict, EmptyCart, ValidationFailed

CREATED = datetime(2026, 11, 28, 14, 20, 0, 123456, tzinfo=UTC)
UPDATED = datetime(2026, 11, 28, 14, 21, 0, tzinfo=UTC)
ORDER_ID = "0b5e4a8e-7c1f-4d2a-9a3b-1c2d3e4f5a6b"


def fields_of(failure):
    return failure.value.details["fields"]


@pytest.mark.parametrize("sku", ["A", "abc-DEF_123", "x" * 64])
def test_valid_skus_pass(sku):
    assert rules.validate_sku(sku) == sku


@pytest.mark.parametrize("sku", ["", "x" * 65, "has space", "semi;colon", "dot.ted", "ümlaut", "A\n", None, 12, True])
def test_invalid_skus_are_refused_with_the_field_named(sku):
    with pytest.raises(ValidationFailed) as failure:
        rules.validate_sku(sku)
    assert set(fields_of(failure)) == {"sku"}


@pytest.mark.parametrize("quantity", [1, 500, 999])
def test_quantities_in_range_pass(quantity):
    assert rules.validate_quantity(quantity) == quantity


@pytest.mark.parametrize("quantity", [0, -1, 1000, True, False, 1.0, 2.5, "3", None, [1]])
def test_quantities_that_are_not_integers_in_range_are_refused(quantity):
    with pytest.raises(ValidationFailed) as failure:
        rules.validate_quantity(quantity)
    assert set(fields_of(failure)) == {"quantity"}


def test_zero_is_allowed_only_when_the_minimum_says_so():
    assert rules.validate_quantity(0, minimum=0) == 0
    with pytest.raises(ValidationFailed):
        rules.validate_quantity(False, minimum=0)


@pytest.mark.parametrize("user_id", ["", None, 7, "u" * 65])
def test_user_id_must_be_a_short_string(user_id):
    with pytest.raises(ValidationFailed) as failure:
        rules.validate_user_id(user_id)
    assert set(fields_of(failure)) == {"user_id"}


def test_cart_ids_are_canonical_uuids_or_nothing():
    cart_id = domain.new_cart_id()
    assert rules.normalize_uuid(cart_id) == cart_id
    assert rules.normalize_uuid(cart_id.upper()) == cart_id
    for garbage in ["", "nope", cart_id.replace("-", ""), "{%s}" % cart_id, cart_id + "\n", "' OR 1=1 --", None, 5]:
        assert rules.normalize_uuid(garbage) is None


def test_merge_items_sums_repeated_skus():
    items = [{"sku": "B", "quantity": 2}, {"sku": "A", "quantity": 1}, {"sku": "B", "quantity": 997}]
    assert domain.merge_items(items) == {"A": 1, "B": 999}
    assert domain.merge_items(None) == {}
    assert domain.merge_items([]) == {}


def test_merge_items_refuses_a_sum_over_999_naming_the_item_that_breaks_it():
    items = [{"sku": "B", "quantity": 500}, {"sku": "B", "quantity": 500}]
    with pytest.raises(ValidationFailed) as failure:
        domain.merge_items(items)
    assert set(fields_of(failure)) == {"items[1].quantity"}


@pytest.mark.parametrize(
    "items, field",
    [
        ("A", "items"),
        ({"sku": "A", "quantity": 1}, "items"),
        (["A"], "items[0]"),
        ([{"sku": "A", "quantity": 1}, {"sku": "A b", "quantity": 1}], "items[1].sku"),
        ([{"quantity": 1}], "items[0].sku"),
        ([{"sku": "A"}], "items[0].quantity"),
        ([{"sku": "A", "quantity": 1.0}], "items[0].quantity"),
        ([{"sku": "A", "quantity": True}], "items[0].quantity"),
        ([{"sku": "A", "quantity": 0}], "items[0].quantity"),
        ([{"sku": "A", "quantity": 1, "price_cents": 1}], "items[0]"),
    ],
)
def test_merge_items_names_the_bad_field(items, field):
    with pytest.raises(ValidationFailed) as failure:
        domain.merge_items(items)
    assert set(fields_of(failure)) == {field}


def test_line_and_cart_totals():
    assert domain.line_total(3, 250) == 750
    assert domain.line_total(1, 0) == 0
    assert domain.cart_total([{"line_total_cents": 750}, {"line_total_cents": 25}]) == 775
    assert domain.cart_total([]) == 0


def test_timestamps_are_iso_utc_with_z():
    assert domain.iso_utc(CREATED) == "2026-11-28T14:20:00.123456Z"
    assert domain.iso_utc(UPDATED) == "2026-11-28T14:21:00.000000Z"
    # Another zone is converted, not just relabelled.
    assert domain.iso_utc(UPDATED.astimezone(timezone(timedelta(hours=2)))) == "2026-11-28T14:21:00.000000Z"


def cart_row(status, checked_out_by=None):
    return {
        "id": "c1",
        "user_id": "u1",
        "status": status,
        "created_at": CREATED,
        "updated_at": UPDATED,
        "checked_out_by": checked_out_by,
    }


LINES = [
    {"cart_id": "c1", "sku": "B", "quantity": 2, "name": "Old B", "unit_price_cents": 100},
    {"cart_id": "c1", "sku": "A", "quantity": 3, "name": "Old A", "unit_price_cents": 50},
]


def test_open_cart_uses_current_catalog_values_and_falls_back_to_stored_ones():
    products = {"B": {"sku": "B", "name": "New B", "price_cents": 120, "description": "", "stock": 5}}
    cart = domain.build_cart(cart_row(domain.OPEN), LINES, products)
    assert cart == {
        "id": "c1",
        "status": "open",
        "items": [
            {"sku": "A", "name": "Old A", "quantity": 3, "unit_price_cents": 50, "line_total_cents": 150},
            {"sku": "B", "name": "New B", "quantity": 2, "unit_price_cents": 120, "line_total_cents": 240},
        ],
        "total_cents": 390,
        "created_at": "2026-11-28T14:20:00.123456Z",
        "updated_at": "2026-11-28T14:21:00.000000Z",
    }


def test_checked_out_cart_keeps_its_stored_values():
    products = {"B": {"sku": "B", "name": "New B", "price_cents": 120}}
    cart = domain.build_cart(cart_row(domain.CHECKED_OUT), LINES, products)
    assert cart["status"] == "checked_out"
    assert [(i["sku"], i["name"], i["unit_price_cents"]) for i in cart["items"]] == [
        ("A", "Old A", 50),
        ("B", "Old B", 100),
    ]
    assert cart["total_cents"] == 350


def test_empty_cart_has_no_items_and_zero_total():
    cart = domain.build_cart(cart_row(domain.OPEN), [], {})
    assert cart["items"] == [] and cart["total_cents"] == 0


def test_products_by_sku_and_unknown_skus():
    products = domain.products_by_sku([{"sku": "A", "name": "a"}, {"sku": "C", "name": "c"}])
    assert set(products) == {"A", "C"}
    assert domain.unknown_skus({"D", "A", "B"}, products) == ["B", "D"]
    assert domain.unknown_skus([], products) == []


# --- checkout ---------------------------------------------------------------------------------------------------


def test_order_ids_are_canonical_uuids_stored_lower_case():
    assert rules.validate_order_id(ORDER_ID.upper()) == ORDER_ID
    assert rules.normalize_uuid(ORDER_ID) == ORDER_ID
    for garbage in ["", "order-1", ORDER_ID.replace("-", ""), ORDER_ID + " ", None, 7, [ORDER_ID]]:
        assert rules.normalize_uuid(garbage) is None
        with pytest.raises(ValidationFailed) as failure:
            rules.validate_order_id(garbage)
        assert set(fields_of(failure)) == {"order_id"}


def test_an_open_cart_with_lines_is_checked_out():
    assert domain.checkout_step(cart_row(domain.OPEN), LINES, ORDER_ID) == domain.CHECK_OUT


def test_an_open_cart_without_lines_cannot_be_checked_out():
    with pytest.raises(EmptyCart):
        domain.checkout_step(cart_row(domain.OPEN), [], ORDER_ID)


def test_the_same_order_checking_out_again_gets_the_cart_again_even_if_empty():
    cart = cart_row(domain.CHECKED_OUT, checked_out_by=ORDER_ID)
    assert domain.checkout_step(cart, LINES, ORDER_ID) == domain.ALREADY_CHECKED_OUT


@pytest.mark.parametrize("checked_out_by", ["5d9c0f3e-0000-4000-8000-000000000000", None])
def test_a_cart_checked_out_by_another_order_or_none_is_a_conflict(checked_out_by):
    with pytest.raises(Conflict) as conflict:
        domain.checkout_step(cart_row(domain.CHECKED_OUT, checked_out_by), LINES, ORDER_ID)
    assert conflict.value.details == {"status": "checked_out"}


def test_checkout_freezes_the_catalogs_values_and_keeps_stored_ones_for_skus_it_did_not_return():
    products = {
        "B": {"sku": "B", "name": "New B", "price_cents": 120},
        "Z": {"sku": "Z", "name": "Not in the cart", "price_cents": 1},
    }
    assert domain.frozen_values(LINES, products) == {"B": ("New B", 120)}
    assert domain.frozen_values(LINES, {}) == {}
