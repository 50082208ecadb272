"""The catalog's stock-hold rules without broker or database: order ids, hold lines, the audit's invariants."""

import pytest

from services.catalog.domain import MAX_LINES, stock_breaches, validate_lines
from services.common.errors import ValidationFailed
from services.common.rules import validate_order_id

ORDER_ID = "0b7e6f0c-3f55-4a8e-9c61-2f1d2a4b5c6d"


def fields_of(failure):
    return failure.value.details["fields"]


def test_order_ids_are_canonical_uuids_stored_lower_case():
    assert validate_order_id(ORDER_ID) == ORDER_ID
    assert validate_order_id(ORDER_ID.upper()) == ORDER_ID


@pytest.mark.parametrize(
    "order_id",
    [None, 7, "", "not-a-uuid", ORDER_ID + "0", ORDER_ID.replace("-", ""), f"{{{ORDER_ID}}}", ORDER_ID + "\n"],
)
def test_bad_order_ids_are_refused(order_id):
    with pytest.raises(ValidationFailed) as failure:
        validate_order_id(order_id)
    assert fields_of(failure) == {"order_id": "must be a UUID string"}


def test_lines_come_back_in_sku_order():
    lines = [{"sku": "b", "quantity": 999}, {"sku": "B", "quantity": 1}, {"sku": "a", "quantity": 2}]
    assert validate_lines(lines) == [
        {"sku": "B", "quantity": 1},
        {"sku": "a", "quantity": 2},
        {"sku": "b", "quantity": 999},
    ]


@pytest.mark.parametrize("lines", [None, [], (), "MUG", {"sku": "MUG", "quantity": 1}])
def test_lines_must_be_a_non_empty_list(lines):
    with pytest.raises(ValidationFailed) as failure:
        validate_lines(lines)
    assert fields_of(failure) == {"lines": "must be a non-empty list"}


def test_too_many_lines_are_refused():
    with pytest.raises(ValidationFailed) as failure:
        validate_lines([{"sku": f"S{n}", "quantity": 1} for n in range(MAX_LINES + 1)])
    assert list(fields_of(failure)) == ["lines"]


def test_every_bad_line_is_named():
    lines = [
        {"sku": "OK", "quantity": 1},
        {"sku": "OK", "quantity": 2},  # repeated sku
        {"sku": "bad sku", "quantity": 0},  # both fields bad
        {"sku": "F", "quantity": 1.0},
        {"sku": "T", "quantity": True},
        {"sku": "BIG", "quantity": 1000},
        {"sku": "X", "quantity": 1, "price": 5},  # unknown field
        "MUG",
        {"quantity": 1},
    ]
    with pytest.raises(ValidationFailed) as failure:
        validate_lines(lines)
    whole = "must be a whole number from 1 to 999"
    sku_rule = "must be 1 to 64 characters of A-Z a-z 0-9 - _"
    assert fields_of(failure) == {
        "lines[1].sku": "appears in an earlier line",
        "lines[2].sku": sku_rule,
        "lines[2].quantity": whole,
        "lines[3].quantity": whole,
        "lines[4].quantity": whole,
        "lines[5].quantity": whole,
        "lines[6].price": "unknown field",
        "lines[7]": "must be an object with sku and quantity",
        "lines[8].sku": sku_rule,
    }


def counts(sku="MUG", stock=3, on_hand=10, held=4, committed=3):
    return {"sku": sku, "stock": stock, "on_hand": on_hand, "held": held, "committed": committed}


def test_balanced_stock_has_no_breaches():
    assert stock_breaches([counts(), counts(sku="EMPTY", stock=0, on_hand=0, held=0, committed=0)]) == []


def test_on_hand_that_does_not_add_up_is_named_with_its_numbers():
    assert stock_breaches([counts(), counts(sku="PLATE", stock=4)]) == [
        "product PLATE: on_hand 10 != stock 4 + held 4 + committed 3 (= 11)"
    ]


def test_negative_stock_is_a_breach_even_when_it_adds_up():
    assert stock_breaches([counts(stock=-1, on_hand=6)]) == ["product MUG: stock -1 is below zero"]
