"""The catalog service: products, their prices and stock, and the stock orders hold; tells the others when a
product changes.

Every `product_changed` event is written to the outbox in the transaction of the change it announces
(`services.common.outbox`), so a committed change is always announced and a rolled-back one never is.
"""

import logging
from datetime import timedelta

from nameko.dependency_providers import Config
from nameko.timer import timer
from sqlalchemy.exc import IntegrityError

from services.catalog import store
from services.catalog.domain import (
    COMMITTED,
    HELD,
    RELEASED,
    stock_breaches,
    validate_changes,
    validate_lines,
    validate_new_product,
    validate_page,
)
from services.common import calls, health
from services.common.clock import utcnow
from services.common.context import RequestId
from services.common.db import Database, commit_step
from services.common.errors import EXPECTED, Conflict, NotFound, ValidationFailed
from services.common.messages import Product, ProductChanged, StockChanged
from services.common.metrics import Telemetry
from services.common.outbox import Outbox
from services.common.rpc import rpc
from services.common.rules import DEFAULT_PAGE_LIMIT, is_sku, validate_order_id

log = logging.getLogger(__name__)

DEFAULT_RESERVATION_TTL_SECONDS = 600
# nameko reads a timer's interval at import, so the sweep runs at this fixed pace; the TTL comes from config.
EXPIRY_SWEEP_SECONDS = 1
# Attempts of a release that lost a race to insert the order's first hold (it then finds that hold).
RELEASE_ATTEMPTS = 3


# `health.HealthRpc`, not an imported `HealthRpc`: `nameko run` would take that name for a second service.
class CatalogService(health.HealthRpc, calls.PrunedCalls):
    name = "catalog"

    db = Database("DATABASE_URL")
    emit = Outbox()
    request_id = RequestId()
    telemetry = Telemetry()
    config = Config()

    @rpc(expected_exceptions=EXPECTED)
    def list_products(self, limit=DEFAULT_PAGE_LIMIT, offset=0, q=None):
        """A page of products in sku order: `{"items", "total", "limit", "offset"}`."""
        limit, offset, q = validate_page(limit, offset, q)
        total, products = store.product_page(self.db, limit, offset, q)
        return {"items": products, "total": total, "limit": limit, "offset": offset}

    @rpc(expected_exceptions=EXPECTED)
    def get_product(self, sku):
        """The product with `sku`; NotFound for an unknown or malformed sku."""
        return self._get(sku)

    @rpc(expected_exceptions=EXPECTED)
    def get_products(self, skus):
        """The products that exist among `skus`, in sku order (unknown and malformed skus are left out)."""
        if not isinstance(skus, (list, tuple)):
            raise ValidationFailed.field("skus", "must be a list")
        wanted = sorted({sku for sku in skus if is_sku(sku)})
        return sorted(store.products_among(self.db, wanted), key=lambda product: product["sku"])

    @rpc(expected_exceptions=EXPECTED)
    @calls.exactly_once
    def create_product(self, product, call_id=None):
        """The new product; Conflict when its sku exists. All of its stock is on hand."""
        fields = validate_new_product(product)
        if store.product_exists(self.db, fields["sku"]):
            raise Conflict(f"a product with sku {fields['sku']} already exists")
        try:
            created = store.insert_product(self.db, fields)
        except IntegrityError:  # a concurrent create of the same sku won
            log.info("create of %s lost a race for the same sku", fields["sku"])
            raise Conflict(f"a product with sku {fields['sku']} already exists") from None
        return self._changed(created)

    @rpc(expected_exceptions=EXPECTED)
    @calls.exactly_once
    def update_product(self, sku, changes, call_id=None):
        """The product after applying `changes` (any of name, description, price_cents, stock). Setting
        `stock` moves `on_hand` by the same difference: held and sold units stay counted."""
        changes = validate_changes(changes)
        if not is_sku(sku) or not store.update_product(self.db, sku, changes, utcnow()):
            raise NotFound("no such product")
        [product] = store.products_by_sku(self.db, [sku])
        return self._changed(product)

    # Stock holds ----------------------------------------------------------------------------------------

    @rpc(expected_exceptions=EXPECTED)
    def reserve_stock(self, order_id, lines):
        """Hold every line's quantity for the order, or nothing: `{"status": "held"}`; OutOfStock (details
        `{"sku"}`) for a line that cannot be had, unknown skus included. Idempotent: an order that has a hold
        answers its status; Conflict when that hold was released (the order gave up on its stock)."""
        order_id = validate_order_id(order_id)
        lines = validate_lines(lines)
        existing = store.hold_status(self.db, order_id)
        if existing is not None:
            return self._hold_answer(order_id, existing)
        now = utcnow()
        changed = store.take_stock(self.db, lines, now)  # OutOfStock rolls the whole transaction back
        try:
            store.insert_hold(self.db, order_id, HELD, lines, now, now + self._reservation_ttl())
        except IntegrityError:
            # A concurrent call for the same order (or its release) recorded a hold first. Rolling back gives
            # back what this call took; the answer is that hold's.
            self.db.rollback()
            existing = store.hold_status(self.db, order_id)
            if existing is None:
                raise
            log.info("reserve of order %s lost a race; the order's hold is %s", order_id, existing)
            return self._hold_answer(order_id, existing)
        self._stock_changed(changed)
        return {"status": HELD}

    @rpc(expected_exceptions=EXPECTED)
    def commit_stock(self, order_id):
        """held → committed (the units are sold): `{"status": "committed"}`; idempotent. Conflict when the
        order's hold was released or it has none. A hold past its expiry that the sweep has not released yet
        is still held, and commits: its units never went back to stock."""
        order_id = validate_order_id(order_id)
        if not store.commit_hold(self.db, order_id, utcnow()):
            status = store.hold_status(self.db, order_id)
            if status != COMMITTED:
                raise Conflict(f"order {order_id} has no stock held to commit ({status or 'no hold'})")
        return {"status": COMMITTED}

    @rpc(expected_exceptions=EXPECTED)
    def release_stock(self, order_id):
        """held or committed → released, the units back in stock: `{"status": "released"}`; idempotent. An
        order with no hold gets a released tombstone, so that a late reserve for it is refused."""
        order_id = validate_order_id(order_id)
        for _attempt in range(RELEASE_ATTEMPTS):
            now = utcnow()
            released = store.release_hold(self.db, order_id, now)
            if released is not None:
                self._stock_changed(released)
                return {"status": RELEASED}
            if store.hold_status(self.db, order_id) is not None:
                return {"status": RELEASED}  # released already: nothing more to give back
            if store.insert_tombstone(self.db, order_id, now):
                return {"status": RELEASED}
            # A reserve for the order committed its hold meanwhile: start again from what is there now.
            self.db.rollback()
            log.info("release of order %s met a hold recorded meanwhile; looking again", order_id)
        raise Conflict(f"order {order_id}'s hold kept changing; try again")

    @timer(interval=EXPIRY_SWEEP_SECONDS)
    def release_expired_holds(self):
        """Release holds still held after their `expires_at`, each in its own transaction (a sweep:
        `commit_step`), so that one hold's release is kept whatever happens to the next."""
        for order_id in store.expired_holds(self.db, utcnow()):
            released = store.release_hold(self.db, order_id, utcnow(), expired_only=True)
            if released is not None:  # None: committed or released by someone else since the query
                self._stock_changed(released)
                log.info("hold of order %s expired; released", order_id)
            commit_step(self.db)

    @rpc(expected_exceptions=EXPECTED)
    def stock_audit(self):
        """`{"holds": {order_id: status}, "breaches": [str]}`: every product must have on_hand == stock +
        held + committed, and stock >= 0."""
        return {"holds": store.all_holds(self.db), "breaches": stock_breaches(store.stock_counts(self.db))}

    # Helpers --------------------------------------------------------------------------------------------

    def _hold_answer(self, order_id, status):
        if status == RELEASED:
            raise Conflict(f"the stock hold of order {order_id} was released")
        return {"status": status}

    def _reservation_ttl(self):
        return timedelta(seconds=float(self.config.get("RESERVATION_TTL_SECONDS", DEFAULT_RESERVATION_TTL_SECONDS)))

    def _stock_changed(self, changed):
        """Announce the products whose stock this transaction changed (`[(sku, stock, version)]`)."""
        for sku, stock, version in changed:
            self.emit(StockChanged(sku=sku, stock=stock, product_version=version))

    def _get(self, sku):
        """The product with `sku` as a dict; NotFound for an unknown or malformed sku."""
        product = store.find_product(self.db, sku) if is_sku(sku) else None
        if product is None:
            raise NotFound("no such product")
        return product

    def _changed(self, versioned):
        """The product (`versioned` without its version), announced with `product_changed` in this transaction
        (through the outbox)."""
        product = {field: value for field, value in versioned.items() if field != "version"}
        self.emit(ProductChanged(product=Product(**product), product_version=versioned["version"]))
        return product
