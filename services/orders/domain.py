"""The order saga and the consistency audit, as plain rules (no broker, no database).

An order is `pending` until its saga is done. Steps and what each one asks of another service:

    new ──checkout_cart──► reserving ──reserve_stock──► charging ──charge──► confirming ──commit_stock──► done
                              │ out_of_stock               │ declined          │ hold lost         (confirmed)
                              ▼                            ▼                   ▼
                         compensating ◄────────────────────┴───────────────────┘ ──refund, release──► done (failed)
    confirmed ──cancel──► cancelling ──refund, release──► done (cancelled)

Every call is idempotent on the order id, so a step that is repeated (a restart, two runners) changes nothing
twice. A pending order past its deadline in `new`, `reserving` or `charging` goes to `compensating` (`timeout`).
"""

from dataclasses import dataclass

from services.common.errors import ValidationFailed

PENDING, CONFIRMED, FAILED, CANCELLED = "pending", "confirmed", "failed", "cancelled"
NEW, RESERVING, CHARGING, CONFIRMING, COMPENSATING, CANCELLING, DONE = (
    "new",
    "reserving",
    "charging",
    "confirming",
    "compensating",
    "cancelling",
    "done",
)
OUT_OF_STOCK, PAYMENT_DECLINED, TIMEOUT = "out_of_stock", "payment_declined", "timeout"

# Steps a deadline can still cut short: nothing has been charged for good yet.
INTERRUPTIBLE = {NEW, RESERVING, CHARGING}


USER_ID_MAX_LENGTH = 36  # orders.user_id's size: the gateway passes the token's subject, a UUID


def validate_user_id(user_id):
    """The owner's id as the gateway gives it: a string of 1 to 36 characters. Anything else is refused before
    it reaches a query, where it would match no order or fail in the driver."""
    if not isinstance(user_id, str) or not 1 <= len(user_id) <= USER_ID_MAX_LENGTH:
        raise ValidationFailed.field("user_id", f"must be a string of 1 to {USER_ID_MAX_LENGTH} characters")
    return user_id


@dataclass(frozen=True)
class Transition:
    step: str
    status: str = PENDING
    failure_reason: str | None = None


def after(step, outcome):
    """Where the saga goes when `step` ended with `outcome` ("ok" or a failure name)."""
    if outcome == "ok" and step != DONE:
        return {
            NEW: Transition(RESERVING),
            RESERVING: Transition(CHARGING),
            CHARGING: Transition(CONFIRMING),
            CONFIRMING: Transition(DONE, CONFIRMED),
            COMPENSATING: Transition(DONE, FAILED),
            CANCELLING: Transition(DONE, CANCELLED),
        }[step]
    if outcome in (OUT_OF_STOCK, PAYMENT_DECLINED, TIMEOUT) and step in (NEW, RESERVING, CHARGING, CONFIRMING):
        return Transition(COMPENSATING, PENDING, outcome)
    raise ValueError(f"no transition from {step!r} on {outcome!r}")


def timed_out(step, deadline, now):
    return step in INTERRUPTIBLE and now >= deadline


def line_items(cart_items):
    """The order's lines, frozen from the cart as it was checked out."""
    return [
        {key: item[key] for key in ("sku", "name", "quantity", "unit_price_cents", "line_total_cents")}
        for item in cart_items
    ]


def find_breaches(orders, net_charges, holds, stock_breaches):
    """Invariants across services. `orders`: dicts with id, status, step, total_cents; `net_charges`:
    {order_id: net cents}; `holds`: {order_id: held|committed|released}. Orders still in their saga are skipped
    (they are checked once they settle)."""
    breaches = list(stock_breaches)
    known = set()
    for order in orders:
        known.add(order["id"])
        if order["step"] != DONE:
            continue
        charged, hold = net_charges.get(order["id"], 0), holds.get(order["id"])
        if order["status"] == CONFIRMED:
            if charged != order["total_cents"]:
                breaches.append(
                    f"order {order['id']} is confirmed but its net charge is {charged}, not {order['total_cents']}"
                )
            if hold != "committed":
                breaches.append(f"order {order['id']} is confirmed but its stock hold is {hold}")
        else:
            if charged != 0:
                breaches.append(f"order {order['id']} is {order['status']} but {charged} is still charged")
            if hold in ("held", "committed"):
                breaches.append(f"order {order['id']} is {order['status']} but its stock is still {hold}")
    for order_id, charged in net_charges.items():
        if order_id not in known and charged:
            breaches.append(f"{charged} charged for unknown order {order_id}")
    for order_id, hold in holds.items():
        if order_id not in known and hold in ("held", "committed"):
            breaches.append(f"stock {hold} for unknown order {order_id}")
    return breaches
