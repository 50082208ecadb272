"""The order saga and the consistency audit, as plain rules (no broker, no database).

An order is `pending` until its saga is done. Steps and what each one asks of another service:

    new ──checkout_cart──► reserving ──reserve_stock──► charging ──charge──► confirming ──commit_stock──► done
                              │ out_of_stock               │ declined          │ hold lost         (confirmed)
                              ▼                            ▼                   ▼
                         compensating ◄────────────────────┴───────────────────┘ ──refund, release──► done (failed)
    confirmed ──cancel──► cancelling ──refund, release──► done (cancelled)

Every call is idempotent on the order id, so a step that is repeated (a restart, two runners) changes nothing
twice. A pending order past its deadline in `new`, `reserving` or `charging` goes to `compensating` (`timeout`).

The saga moves forward in memory and records where it got in one write: the forward steps can be repeated and
undone, so nothing is lost if a crash makes a runner do them again. Undoing is different: a runner undoes only
after it has recorded the decision to (`compensating`, `cancelling`) and is the one that recorded it, so two
runners never disagree about whether an order is undone (`must_record_before`).
Identifiers and limits shared with other services (uuid, user id, pages) are `services.common.rules`.
"""

import json
from dataclasses import dataclass

from services.common import messages
from services.common.clock import iso_utc
from services.common.errors import ValidationFailed
from services.common.rules import MAX_PAGE_LIMIT, is_whole_number

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
STATUSES = (PENDING, CONFIRMED, FAILED, CANCELLED)
OUT_OF_STOCK, PAYMENT_DECLINED, TIMEOUT = "out_of_stock", "payment_declined", "timeout"

# Steps a deadline can still cut short: nothing has been charged for good yet.
INTERRUPTIBLE = {NEW, RESERVING, CHARGING}
# Steps that undo what the order did: done only by the runner that recorded the decision.
UNDOING = {COMPENSATING, CANCELLING}


def validate_page(limit, offset):
    """`(limit, offset)` of a list of orders, checked: limit from 1 to 100, offset from 0."""
    if not is_whole_number(limit) or not 1 <= limit <= MAX_PAGE_LIMIT:
        raise ValidationFailed.field("limit", f"must be an integer from 1 to {MAX_PAGE_LIMIT}")
    if not is_whole_number(offset) or offset < 0:
        raise ValidationFailed.field("offset", "must be an integer of at least 0")
    return limit, offset


def validate_status(status):
    """`status` as a filter of a list of orders: None (every status) or one of STATUSES."""
    if status is not None and status not in STATUSES:
        raise ValidationFailed.field("status", f"must be one of {', '.join(STATUSES)}")
    return status


def status_counts(counted):
    """{status: how many orders} for every status, from (status, count) pairs (a status with none counts 0)."""
    counts = dict.fromkeys(STATUSES, 0)
    counts.update(counted)
    return counts


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


def must_record_before(step, recorded):
    """Whether a runner at `step` (in memory) must record it before going on, the database having `recorded`:
    before undoing anything, the decision to undo must be recorded, by this runner."""
    return step in UNDOING and step != recorded


def apply(order, transition):
    """`order` (a stored order, changed in memory) after `transition`."""
    order.step, order.status = transition.step, transition.status
    order.failure_reason = transition.failure_reason or order.failure_reason
    return order


def line_items(cart_items):
    """The order's lines, frozen from the cart as it was checked out."""
    return [
        {key: item[key] for key in ("sku", "name", "quantity", "unit_price_cents", "line_total_cents")}
        for item in cart_items
    ]


def as_answer(order):
    """The order as the RPC methods answer it, from its stored row (`items` is JSON text there)."""
    return {
        "id": order.id,
        "cart_id": order.cart_id,
        "status": order.status,
        "failure_reason": order.failure_reason,
        "items": json.loads(order.items),
        "total_cents": order.total_cents,
        "created_at": iso_utc(order.created_at),
        "updated_at": iso_utc(order.updated_at),
    }


# The event that announces an order settled in each final status.
SETTLED_MESSAGES = {
    CONFIRMED: messages.OrderConfirmed,
    FAILED: messages.OrderFailed,
    CANCELLED: messages.OrderCancelled,
}


def settled_message(order):
    """The event announcing that `order` (as answered) settled in its status."""
    lines = [messages.OrderLine(**line) for line in order["items"]]
    return SETTLED_MESSAGES[order["status"]](order=messages.Order(**dict(order, items=lines)))


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
