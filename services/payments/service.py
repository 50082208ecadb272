"""The payments service: a simulated card provider that keeps no card, and one charge per order.

`register_card` checks a card number and keeps only its last four digits, the provider's verdict and the user who
registered it; once per call id (services.common.calls). `charge` charges only a method of the order's user, and is
idempotent on the order id: the first call decides and later (or concurrent) calls answer the
recorded result. `refund` gives a succeeded charge back, or leaves a voided tombstone so that a charge that
arrives after the refund charges nothing. No method calls another service, so the SQLite rule of
`services.common.db.Database` (no yield while the write lock is held) holds by construction.
"""

import logging

# The module, not the class: `nameko run services.payments.service` would take an imported HealthRpc (it has
# an entrypoint) for a second service.
from services.common import calls, health
from services.common.clock import utcnow
from services.common.context import RequestId
from services.common.db import Database
from services.common.errors import EXPECTED, Forbidden, NotFound
from services.common.metrics import Telemetry
from services.common.rpc import rpc
from services.common.rules import normalize_uuid, validate_order_id, validate_user_id
from services.payments import store
from services.payments.domain import (
    SUCCEEDED,
    VOIDED,
    card_verdict,
    charge_answer,
    charge_outcome,
    charge_record,
    last4,
    net_amount,
    new_id,
    validate_amount,
    validate_card_number,
)

log = logging.getLogger(__name__)


class PaymentsService(health.HealthRpc, calls.PrunedCalls):
    """RPC interface of payments (docs/SERVICES.md)."""

    name = "payments"

    db = Database("DATABASE_URL")
    request_id = RequestId()
    telemetry = Telemetry()

    @rpc(expected_exceptions=EXPECTED)
    @calls.exactly_once
    def register_card(self, user_id, card_number, call_id=None):
        """`{"payment_method_id", "last4"}` of a new payment method of `user_id` for a valid card; ValidationFailed
        (field `card_number`) else."""
        validate_user_id(user_id)
        card_number = validate_card_number(card_number)
        method = {
            "id": new_id(),
            "user_id": user_id,
            "last4": last4(card_number),
            "verdict": card_verdict(card_number),
            "created_at": utcnow(),
        }
        store.insert_payment_method(self.db, method)
        log.info("registered payment method %s, card ending %s", method["id"], method["last4"])
        return {"payment_method_id": method["id"], "last4": method["last4"]}

    @rpc(expected_exceptions=EXPECTED)
    def charge(self, order_id, amount_cents, payment_method_id, user_id):
        """`{"order_id", "status", "reason", "amount_cents", "last4"}`, decided by the first call for the
        order: `succeeded`, `declined` (reason: the verdict), or `voided` (refunded first: nothing charged).
        Forbidden when the payment method is not `user_id`'s (the order's owner)."""
        order_id = validate_order_id(order_id)
        amount_cents = validate_amount(amount_cents)
        validate_user_id(user_id)
        row = store.find_charge(self.db, order_id)
        if row is None:
            method = self._payment_method(payment_method_id)
            if method["user_id"] != user_id:
                raise Forbidden("the payment method belongs to another user")
            status, reason = charge_outcome(method["verdict"])
            row, inserted = store.insert_charge_once(
                self.db,
                {
                    "order_id": order_id,
                    "status": status,
                    "reason": reason,
                    "amount_cents": amount_cents,
                    "payment_method_id": method["id"],
                    "last4": method["last4"],
                    "created_at": utcnow(),
                },
            )
            if inserted:
                log.info(
                    "charge of order %s for %s cents on card ending %s: %s%s",
                    order_id,
                    amount_cents,
                    method["last4"],
                    status,
                    f" ({reason})" if reason else "",
                )
        return charge_answer(row)

    @rpc(expected_exceptions=EXPECTED)
    def refund(self, order_id):
        """The order's charge record after the refund (see `domain.charge_record`): succeeded → refunded;
        refunded, declined and voided unchanged; no charge yet → a voided tombstone."""
        order_id = validate_order_id(order_id)
        row = store.find_charge(self.db, order_id)
        if row is None:
            row, inserted = store.insert_charge_once(
                self.db,
                {
                    "order_id": order_id,
                    "status": VOIDED,
                    "reason": None,
                    "amount_cents": 0,
                    "payment_method_id": None,
                    "last4": None,
                    "created_at": utcnow(),
                },
            )
            if inserted:
                log.info("order %s voided before any charge", order_id)
        if row["status"] == SUCCEEDED:
            if store.refund_succeeded(self.db, order_id, utcnow()):
                log.info("refunded %s cents of order %s", row["amount_cents"], order_id)
            row = store.find_charge(self.db, order_id)
        return charge_record(row)

    @rpc(expected_exceptions=EXPECTED)
    def net_charges(self):
        """`{order_id: net amount charged}` for every order with a charge row (0 unless succeeded)."""
        return {row["order_id"]: net_amount(row) for row in store.all_charges(self.db)}

    def _payment_method(self, payment_method_id):
        # Not a UUID: answered NotFound without asking the database, like an unknown id.
        method_id = normalize_uuid(payment_method_id)
        method = store.find_payment_method(self.db, method_id) if method_id else None
        if method is None:
            # The id is not echoed: a confused caller might have sent a card number in its place.
            raise NotFound("no such payment method")
        return method
