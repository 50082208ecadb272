"""The payments service's rules as plain functions: card checks, the test-card table, charge outcomes and the
shapes the RPC methods answer. Nothing here touches the broker or the database; identifiers and limits shared with
other services (uuid, card number shape, the largest charge) are `services.common.rules`.

A card number is only ever held in memory while it is checked: what is kept (and logged) is its last four
digits and the provider's verdict for it.
"""

import uuid

from services.common.clock import iso_utc
from services.common.errors import ValidationFailed
from services.common.rules import MAX_CHARGE_CENTS, is_card_number_shape, is_whole_number

# The provider's verdict for a card, decided when it is registered.
SUCCEED = "succeed"
CARD_DECLINED = "card_declined"
INSUFFICIENT_FUNDS = "insufficient_funds"
VERDICTS = (SUCCEED, CARD_DECLINED, INSUFFICIENT_FUNDS)

# The contract's test cards; every other valid card succeeds.
TEST_CARDS = {
    "4242424242424242": SUCCEED,
    "4000000000000002": CARD_DECLINED,
    "4000000000009995": INSUFFICIENT_FUNDS,
}

# A charge row's status. `refunded` was charged and given back; `voided` is a tombstone written by a refund
# that came before any charge, so that a late charge for the order charges nothing.
SUCCEEDED = "succeeded"
DECLINED = "declined"
REFUNDED = "refunded"
VOIDED = "voided"
STATUSES = (SUCCEEDED, DECLINED, REFUNDED, VOIDED)


# --- cards -------------------------------------------------------------------------------------------------


def luhn_valid(digits):
    """Whether the string of ASCII digits `digits` passes the Luhn check (every second digit from the right
    doubled, digits of the products summed, the total a multiple of 10)."""
    total = 0
    for position, char in enumerate(reversed(digits)):
        digit = int(char)
        if position % 2 == 1:
            digit *= 2
            if digit > 9:
                digit -= 9
        total += digit
    return total % 10 == 0


def validate_card_number(card_number):
    """`card_number` if it is a string of 12–19 ASCII digits passing the Luhn check, else ValidationFailed.

    The error never repeats the number.
    """
    if not isinstance(card_number, str):
        raise ValidationFailed.field("card_number", "must be a string of 12 to 19 digits")
    if not is_card_number_shape(card_number):
        raise ValidationFailed.field("card_number", "must be 12 to 19 digits, nothing else")
    if not luhn_valid(card_number):
        raise ValidationFailed.field("card_number", "is not a valid card number (Luhn check failed)")
    return card_number


def card_verdict(card_number):
    """The simulated provider's verdict for a valid card: the test-card table, else "succeed"."""
    return TEST_CARDS.get(card_number, SUCCEED)


def last4(card_number):
    return card_number[-4:]


# --- charges -----------------------------------------------------------------------------------------------


def new_id():
    return str(uuid.uuid4())


def validate_amount(amount_cents):
    """`amount_cents` if it is a whole number (not a bool) from 1 to MAX_CHARGE_CENTS; ValidationFailed otherwise."""
    if not is_whole_number(amount_cents) or not 0 < amount_cents <= MAX_CHARGE_CENTS:
        raise ValidationFailed.field("amount_cents", "must be a whole number greater than 0")
    return amount_cents


def charge_outcome(verdict):
    """(status, reason) of a charge on a card with `verdict`: succeeded with no reason, or declined with the
    verdict as its reason."""
    if verdict == SUCCEED:
        return SUCCEEDED, None
    return DECLINED, verdict


def charge_answer(row):
    """What `charge` answers for the order's recorded charge row: its result, where a refunded charge reads
    `voided` (a charge after a refund charges nothing)."""
    status = VOIDED if row["status"] == REFUNDED else row["status"]
    return {
        "order_id": row["order_id"],
        "status": status,
        "reason": row["reason"],
        "amount_cents": row["amount_cents"],
        "last4": row["last4"],
    }


def charge_record(row):
    """The order's charge row as `refund` answers it (its real status, and when it was refunded)."""
    return {
        "order_id": row["order_id"],
        "status": row["status"],
        "reason": row["reason"],
        "amount_cents": row["amount_cents"],
        "last4": row["last4"],
        "created_at": iso_utc(row["created_at"]),
        "refunded_at": iso_utc(row["refunded_at"]),
    }


def net_amount(row):
    """What the customer has paid, net, for a charge row: its amount while succeeded, else 0."""
    return row["amount_cents"] if row["status"] == SUCCEEDED else 0
