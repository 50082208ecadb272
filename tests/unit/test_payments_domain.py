"""The payments rules without broker or database: Luhn, card checks, the test-card table, charge shapes."""

from datetime import UTC, datetime, timedelta, timezone

import pytest

from services.common.clock import iso_utc
from services.common.errors import ValidationFailed
from services.common.rules import MAX_CHARGE_CENTS as MAX_AMOUNT
from services.common.rules import normalize_uuid as normalize_payment_method_id
from services.common.rules import validate_order_id
from services.payments.domain import (
    CARD_DECLINED,
    DECLINED,
    INSUFFICIENT_FUNDS,
    REFUNDED,
    SUCCEED,
    SUCCEEDED,
    VOIDED,
    card_verdict,
    charge_answer,
    charge_outcome,
    charge_record,
    last4,
    luhn_valid,
    net_amount,
    validate_amount,
    validate_card_number,
)

ORDER_ID = "0b9f4c1e-5d0a-4c39-9a3e-1f2d3c4b5a69"


@pytest.mark.parametrize(
    "digits",
    [
        "79927398713",  # the textbook example
        "4242424242424242",
        "4000000000000002",
        "4000000000009995",
        "4111111111111111",
        "5555555555554444",
        "378282246310005",
        "6011111111111117",
        "3530111333300000",
        "123456789015",
        "4000000000000000006",
        "0000000000000000",
    ],
)
def test_luhn_accepts_valid_numbers(digits):
    assert luhn_valid(digits)


@pytest.mark.parametrize(
    "digits",
    [
        "79927398710",
        "4242424242424241",
        "4111111111111112",
        "5555555555554445",
        "378282246310006",
        "123456789012",
        "4000000000000000007",
        "4242424242424224",  # two digits swapped: what the check exists to catch
    ],
)
def test_luhn_refuses_invalid_numbers(digits):
    assert not luhn_valid(digits)


@pytest.mark.parametrize("card", ["4242424242424242", "123456789015", "4000000000000000006", "378282246310005"])
def test_a_valid_card_number_is_accepted_as_given(card):
    assert validate_card_number(card) == card


@pytest.mark.parametrize(
    "card, reason",
    [
        (None, "must be a string of 12 to 19 digits"),
        (4242424242424242, "must be a string of 12 to 19 digits"),
        (["4242424242424242"], "must be a string of 12 to 19 digits"),
        ("", "must be 12 to 19 digits, nothing else"),
        ("79927398713", "must be 12 to 19 digits, nothing else"),  # Luhn-valid, 11 digits
        ("42424242424242424242", "must be 12 to 19 digits, nothing else"),  # 20 digits
        ("4242 4242 4242 4242", "must be 12 to 19 digits, nothing else"),
        ("4242-4242-4242-4242", "must be 12 to 19 digits, nothing else"),
        ("4242424242424242\n", "must be 12 to 19 digits, nothing else"),
        (" 4242424242424242", "must be 12 to 19 digits, nothing else"),
        ("424242424242424\u0662", "must be 12 to 19 digits, nothing else"),  # an Arabic-Indic digit
        ("4242424242424241", "is not a valid card number (Luhn check failed)"),
    ],
)
def test_an_invalid_card_number_fails_on_its_field_without_repeating_it(card, reason):
    with pytest.raises(ValidationFailed) as failure:
        validate_card_number(card)
    assert failure.value.details == {"fields": {"card_number": reason}}
    if isinstance(card, str) and len(card) > 4:
        assert card.strip() not in str(failure.value)
        assert card.strip() not in str(failure.value.details)


@pytest.mark.parametrize(
    "card, verdict",
    [
        ("4242424242424242", SUCCEED),
        ("4000000000000002", CARD_DECLINED),
        ("4000000000009995", INSUFFICIENT_FUNDS),
        ("5555555555554444", SUCCEED),
        ("4111111111111111", SUCCEED),
    ],
)
def test_the_test_card_table(card, verdict):
    assert card_verdict(card) == verdict


def test_last4_is_the_last_four_digits():
    assert last4("4000000000009995") == "9995"
    assert last4("123456789015") == "9015"


@pytest.mark.parametrize(
    "verdict, outcome",
    [
        (SUCCEED, (SUCCEEDED, None)),
        (CARD_DECLINED, (DECLINED, CARD_DECLINED)),
        (INSUFFICIENT_FUNDS, (DECLINED, INSUFFICIENT_FUNDS)),
    ],
)
def test_charge_outcome_follows_the_verdict(verdict, outcome):
    assert charge_outcome(verdict) == outcome


@pytest.mark.parametrize("amount", [1, 1999, MAX_AMOUNT])
def test_a_positive_whole_amount_is_accepted(amount):
    assert validate_amount(amount) == amount


@pytest.mark.parametrize("amount", [0, -1, True, False, 1.0, 1.5, "100", None, MAX_AMOUNT + 1])
def test_any_other_amount_fails_on_its_field(amount):
    with pytest.raises(ValidationFailed) as failure:
        validate_amount(amount)
    assert list(failure.value.details["fields"]) == ["amount_cents"]


def test_an_order_id_is_a_uuid_string_stored_in_lower_case():
    assert validate_order_id(ORDER_ID) == ORDER_ID
    assert validate_order_id(ORDER_ID.upper()) == ORDER_ID


@pytest.mark.parametrize(
    "order_id",
    [None, 7, "", "order-1", ORDER_ID + "0", "{" + ORDER_ID + "}", ORDER_ID.replace("-", ""), ORDER_ID + "\n"],
)
def test_anything_else_is_not_an_order_id(order_id):
    with pytest.raises(ValidationFailed) as failure:
        validate_order_id(order_id)
    assert failure.value.details == {"fields": {"order_id": "must be a UUID string"}}


@pytest.mark.parametrize(
    "value, expected",
    [
        (ORDER_ID, ORDER_ID),
        (ORDER_ID.upper(), ORDER_ID),
        (None, None),
        (42, None),
        ("4242424242424242", None),
    ],
)
def test_a_payment_method_id_is_normalized_or_none(value, expected):
    assert normalize_payment_method_id(value) == expected


NOON = datetime(2026, 11, 28, 12, 0, 0, 123, tzinfo=UTC)


def row(status, reason=None, amount_cents=1500, last4="4242", refunded_at=None):
    return {
        "order_id": ORDER_ID,
        "status": status,
        "reason": reason,
        "amount_cents": amount_cents,
        "last4": last4,
        "created_at": NOON,
        "refunded_at": refunded_at,
        "payment_method_id": "pm",
    }


@pytest.mark.parametrize(
    "stored, answered",
    [
        (row(SUCCEEDED), {"status": SUCCEEDED, "reason": None, "amount_cents": 1500, "last4": "4242"}),
        (
            row(DECLINED, CARD_DECLINED, last4="0002"),
            {"status": DECLINED, "reason": CARD_DECLINED, "amount_cents": 1500, "last4": "0002"},
        ),
        (row(REFUNDED, refunded_at=NOON), {"status": VOIDED, "reason": None, "amount_cents": 1500, "last4": "4242"}),
        (row(VOIDED, amount_cents=0, last4=None), {"status": VOIDED, "reason": None, "amount_cents": 0, "last4": None}),
    ],
)
def test_charge_answers_the_recorded_result_and_a_refunded_charge_reads_voided(stored, answered):
    assert charge_answer(stored) == dict(answered, order_id=ORDER_ID)


def test_the_charge_record_has_its_real_status_and_iso_timestamps():
    assert charge_record(row(REFUNDED, refunded_at=NOON)) == {
        "order_id": ORDER_ID,
        "status": REFUNDED,
        "reason": None,
        "amount_cents": 1500,
        "last4": "4242",
        "created_at": "2026-11-28T12:00:00.000123Z",
        "refunded_at": "2026-11-28T12:00:00.000123Z",
    }
    assert charge_record(row(SUCCEEDED))["refunded_at"] is None


@pytest.mark.parametrize(
    "stored, net",
    [
        (row(SUCCEEDED), 1500),
        (row(REFUNDED), 0),
        (row(DECLINED, CARD_DECLINED), 0),
        (row(VOIDED, amount_cents=0), 0),
    ],
)
def test_only_a_succeeded_charge_counts_net(stored, net):
    assert net_amount(stored) == net


def test_iso_utc_converts_to_utc_and_keeps_none():
    assert iso_utc(NOON.astimezone(timezone(timedelta(hours=2)))) == "2026-11-28T12:00:00.000123Z"
    assert iso_utc(None) is None
