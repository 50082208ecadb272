"""The orders service: turns a cart into an order and runs the checkout saga to `confirmed` or `failed`.

Checkout answers at once with a `pending` order; the saga then runs in a worker of this service as soon as the
checkout's transaction has committed (`services.common.deferred`), and, for anything a crash or an outage left
behind, from a sweep that resumes every unsettled order. A run goes forward in memory and records where it got
in one compare-and-set (`commit_step`), except that it records a decision to undo before undoing anything
(services/orders/domain.py).

Checkout and cancel commit a first step before they call other services, so their call id (services.common.calls)
is recorded in that first step, with the order's id: a repeat of the call answers that order as it is now.
Checkout looks its call id and idempotency key up before anything else, the card's registration included.
"""

import json
import logging
import uuid
from datetime import timedelta

import eventlet
from nameko.dependency_providers import Config
from nameko.timer import timer
from sqlalchemy.exc import IntegrityError

from services.common import calls, health
from services.common.clock import utcnow
from services.common.context import RequestId
from services.common.db import Database, commit_step
from services.common.deferred import Later, deferred
from services.common.errors import (
    EXPECTED,
    Conflict,
    EmptyCart,
    Forbidden,
    NotFound,
    OutOfStock,
    ServiceTimeout,
    ServiceUnavailable,
)
from services.common.metrics import Telemetry
from services.common.outbox import Outbox
from services.common.rpc import Rpc, rpc
from services.common.rules import DEFAULT_PAGE_LIMIT, is_uuid, validate_call_id, validate_user_id
from services.orders import domain, store

log = logging.getLogger(__name__)
UNREACHABLE = (ServiceTimeout, ServiceUnavailable)


class OrdersService(health.HealthRpc, calls.PrunedCalls):
    name = "orders"

    db = Database("DATABASE_URL")
    emit = Outbox()
    carts = Rpc("carts")
    catalog = Rpc("catalog")
    payments = Rpc("payments")
    request_id = RequestId()
    telemetry = Telemetry()
    config = Config()
    later = Later()

    @rpc(expected_exceptions=EXPECTED + UNREACHABLE)
    def checkout(self, user_id, cart_id, card_number, idempotency_key=None, call_id=None):
        """`{"order", "created"}`: a new pending order paid with a payment method registered now for `card_number`,
        or (created False) the order an earlier call with the same call id or idempotency key placed, found before
        anything is written or registered."""
        validate_user_id(user_id)
        call_id = validate_call_id(call_id)
        if not is_uuid(cart_id):  # as carts answers a malformed id, before an order row is written for it
            raise NotFound("the cart does not exist")
        existing = self._earlier_checkout(user_id, idempotency_key, call_id)
        if existing is not None:
            return {"order": domain.as_answer(self._placed(existing)), "created": False}
        # The same call id makes payments answer the same method to a repeat that got this far.
        payment_method_id = self.payments.register_card(user_id, card_number, call_id=call_id)["payment_method_id"]
        now = utcnow()
        values = {
            "id": str(uuid.uuid4()),
            "user_id": user_id,
            "cart_id": cart_id,
            "status": domain.PENDING,
            "step": domain.NEW,
            "failure_reason": None,
            "items": "[]",
            "total_cents": 0,
            "payment_method_id": payment_method_id,
            "idempotency_key": idempotency_key,
            "created_at": now,
            "updated_at": now,
            "deadline_at": now + timedelta(seconds=self._config("ORDER_TIMEOUT_SECONDS", 30)),
        }
        try:
            order = store.add_order(self.db, values)
            if call_id is not None:
                calls.record(self.db, call_id, "checkout", {"order_id": order.id})
            commit_step(self.db)  # the key and the call id are taken before anything else happens
        except IntegrityError:  # the same key or call, sent concurrently: answer the order that took it
            self.db.rollback()
            existing = self._earlier_checkout(user_id, idempotency_key, call_id)
            if existing is None:
                raise
            return {"order": domain.as_answer(self._placed(existing)), "created": False}
        try:
            cart = self.carts.checkout_cart(user_id, cart_id, order.id)
        except (NotFound, EmptyCart, Conflict):
            store.delete_order(self.db, order.id)  # nothing was checked out: the order never existed
            if call_id is not None:
                calls.forget(self.db, call_id)  # nor did the call: a repeat tries again
            commit_step(self.db)
            raise
        except UNREACHABLE:
            # carts may still check the cart out late: fail the order, and its order_failed event reopens it.
            self._record(domain.apply(order, domain.after(domain.NEW, domain.TIMEOUT)), domain.NEW)
            commit_step(self.db)
            raise
        order.items = json.dumps(domain.line_items(cart["items"]))
        order.total_cents = cart["total_cents"]
        self._record(domain.apply(order, domain.after(domain.NEW, "ok")), domain.NEW)
        self.later("run_saga", order.id)  # once this transaction has committed
        return {"order": domain.as_answer(order), "created": True}

    @rpc(expected_exceptions=EXPECTED)
    def get_order(self, user_id, order_id):
        validate_user_id(user_id)
        return domain.as_answer(self._own(user_id, order_id))

    @rpc(expected_exceptions=EXPECTED)
    def list_orders(self, user_id, limit=DEFAULT_PAGE_LIMIT, offset=0):
        validate_user_id(user_id)
        limit, offset = domain.validate_page(limit, offset)
        total, orders = store.user_orders(self.db, user_id, limit, offset)
        return {
            "items": [domain.as_answer(order) for order in orders],
            "total": total,
            "limit": limit,
            "offset": offset,
        }

    @rpc(expected_exceptions=EXPECTED)
    def recent_orders(self, status=None, limit=DEFAULT_PAGE_LIMIT):
        """Every user's newest orders (of one status, or all), with each order's user id, and how many orders each
        status has. For the operator console: the gateway lets only an administrator ask."""
        status = domain.validate_status(status)
        limit, _ = domain.validate_page(limit, 0)
        return {
            "items": [
                dict(domain.as_answer(order), user_id=order.user_id)
                for order in store.recent_orders(self.db, status, limit)
            ],
            "counts": domain.status_counts(store.count_by_status(self.db)),
        }

    @rpc(expected_exceptions=EXPECTED + UNREACHABLE)
    def cancel_order(self, user_id, order_id, call_id=None):
        validate_user_id(user_id)
        call_id = validate_call_id(call_id)
        earlier = self._earlier_call(call_id, "cancel_order")
        if earlier is not None:
            return domain.as_answer(self._own(user_id, earlier["order_id"]))
        order = self._own(user_id, order_id)
        if not store.cancel(self.db, order.id, utcnow()):
            self.db.rollback()  # a concurrent copy of this call may have cancelled it: read what it recorded
            earlier = self._earlier_call(call_id, "cancel_order")
            if earlier is not None:
                return domain.as_answer(self._own(user_id, earlier["order_id"]))
            raise Conflict(f"an order that is {order.status} cannot be cancelled")
        if call_id is not None:
            calls.record(self.db, call_id, "cancel_order", {"order_id": order.id})
        commit_step(self.db)  # cancelling is recorded before the saga calls payments and catalog
        self._advance(order.id)  # refund and restock now; the sweep finishes it if a service is away
        return domain.as_answer(store.reload_order(self.db, order.id))

    @rpc(expected_exceptions=UNREACHABLE)
    def audit(self):
        orders = store.audit_rows(self.db)
        stock = self.catalog.stock_audit()
        breaches = domain.find_breaches(orders, self.payments.net_charges(), stock["holds"], stock["breaches"])
        in_saga = sum(1 for order in orders if order["step"] != domain.DONE)
        return {
            "ok": not breaches,
            "breaches": breaches,
            "checked": {"orders": len(orders), "in_saga": in_saga, "holds": len(stock["holds"])},
        }

    @deferred
    def run_saga(self, order_id):
        """The saga of an order checkout has just placed (see the module docstring)."""
        self._advance(order_id)

    @timer(interval=1)
    def resume_unsettled(self):
        """Resume orders a crash or an outage left mid-saga, and time out the ones past their deadline."""
        quiet_since = utcnow() - timedelta(seconds=self._config("SAGA_RESUME_AFTER_SECONDS", 2))
        for order_id in store.stalled_orders(self.db, quiet_since):
            self._advance(order_id)

    # The saga -------------------------------------------------------------------------------------------

    def _advance(self, order_id):
        """Run the order's saga as far as it goes now, and record where it got. Safe to run twice at once: every
        call downstream is idempotent on the order id, and of two runners only the one that still finds the step
        it started from records anything (services/orders/domain.py)."""
        while True:
            order = store.reload_order(self.db, order_id)
            if order is None or order.step == domain.DONE:
                return
            recorded = order.step
            while order.step != domain.DONE:
                if domain.must_record_before(order.step, recorded):
                    if not self._record(order, recorded):
                        break  # another runner moved it first: look again
                    recorded = order.step
                    commit_step(self.db)
                step = order.step
                if domain.timed_out(step, order.deadline_at, utcnow()):
                    outcome = domain.TIMEOUT
                else:
                    try:
                        outcome = self._perform(order)
                    except UNREACHABLE as error:
                        log.warning("order %s waits in %s: %s", order_id, step, error)
                        if order.step != recorded and self._record(order, recorded):
                            commit_step(self.db)  # the way so far, so the sweep does not walk it again
                        return
                domain.apply(order, domain.after(step, outcome))
            else:
                if self._record(order, recorded):
                    commit_step(self.db)
                    return

    def _perform(self, order):
        """Do the order's current step; returns its outcome."""
        if order.step == domain.NEW:  # the checkout call was cut short: finish checking out the cart
            try:
                cart = self.carts.checkout_cart(order.user_id, order.cart_id, order.id)
            except (NotFound, EmptyCart, Conflict):
                return domain.TIMEOUT
            order.items = json.dumps(domain.line_items(cart["items"]))
            order.total_cents = cart["total_cents"]
            return "ok"
        if order.step == domain.RESERVING:
            lines = [{"sku": item["sku"], "quantity": item["quantity"]} for item in json.loads(order.items)]
            try:
                self.catalog.reserve_stock(order.id, lines)
            except OutOfStock:
                return domain.OUT_OF_STOCK
            except Conflict:  # the hold was released already (the order timed out meanwhile)
                return domain.TIMEOUT
            return "ok"
        if order.step == domain.CHARGING:
            try:
                charge = self.payments.charge(order.id, order.total_cents, order.payment_method_id, order.user_id)
            except Forbidden:  # not the owner's payment method: nothing is charged
                return domain.PAYMENT_DECLINED
            return {"succeeded": "ok", "declined": domain.PAYMENT_DECLINED}.get(charge["status"], domain.TIMEOUT)
        if order.step == domain.CONFIRMING:
            try:
                self.catalog.commit_stock(order.id)
            except Conflict:  # the hold expired before we got here: give the money back
                return domain.TIMEOUT
            return "ok"
        # compensating or cancelling: undo whatever was done, in an order that is safe to repeat
        self.payments.refund(order.id)
        self.catalog.release_stock(order.id)
        return "ok"

    def _record(self, order, from_step):
        """Record `order` as it is in memory if the database still has it at `from_step` (compare and set), with
        the event of a settled order in the same transaction; False, rolled back, if another runner moved it
        first."""
        if not store.move(self.db, order, from_step, utcnow()):
            self.db.rollback()  # start again from what the other runner recorded
            return False
        if order.step == domain.DONE:
            self.emit(domain.settled_message(domain.as_answer(order)))
        return True

    # Reading --------------------------------------------------------------------------------------------

    def _placed(self, order, patience=3.0):
        """`order` once its checkout call has filled it in (a concurrent duplicate answers it complete)."""
        with eventlet.Timeout(patience, False):
            while order.step == domain.NEW:
                eventlet.sleep(0.05)
                order = store.reload_order(self.db, order.id)
        return order

    def _earlier_call(self, call_id, method):
        """The recorded answer of call `call_id` of `method`, or None (no call id, or not recorded)."""
        if call_id is None:
            return None
        answer = calls.recorded(self.db, call_id, method)
        return None if answer is calls.MISSING else answer

    def _earlier_checkout(self, user_id, idempotency_key, call_id):
        """The order of `user_id` that a checkout with call id `call_id` or with `idempotency_key` placed, or None."""
        earlier = self._earlier_call(call_id, "checkout")
        if earlier is not None:
            order = store.find_order(self.db, earlier["order_id"])
            if order is not None and order.user_id == user_id:
                return order
        if idempotency_key is not None:
            return store.find_by_key(self.db, user_id, idempotency_key)
        return None

    def _own(self, user_id, order_id):
        order = store.find_order(self.db, order_id) if is_uuid(order_id) else None
        if order is None or order.user_id != user_id:
            raise NotFound("order not found")
        return order

    def _config(self, key, default):
        return float(self.config.get(key, default))
