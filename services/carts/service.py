"""The carts service: users' carts and their lines; checkout hands a cart to an order, which freezes its lines,
and a failed order's cart opens again.

An open cart shows the names and prices catalog last announced: carts keeps a copy of them (`products`), kept
by catalog's `product_changed` events (a newer version only), and asks catalog once, for all of them at once,
for the skus it has never seen. So a cart read is one RPC call, and a price change reaches open carts as soon as
its event does (well within a second while the broker is up). Checkout alone asks catalog itself: an order's
prices are catalog's at that moment, never the copy's.

Every change follows the same order, because under eventlet a SQLite write lock must not be held across a
yield (see `services.common.db.Database`): read without locks, ask the catalog for anything the answer needs
that the copy lacks, then write (the copy first, then the cart, whose first write locks it), re-read and
return; the session commits on return.
"""

from services.carts import store
from services.carts.domain import (
    ALREADY_CHECKED_OUT,
    CHECKED_OUT,
    OPEN,
    build_cart,
    checked_out_conflict,
    checkout_step,
    empty_cart,
    frozen_values,
    merge_items,
    new_cart_id,
    products_by_sku,
    released_conflict,
    unknown_skus,
)

# The module, not the class: `nameko run services.carts.service` would take an imported HealthRpc (it has an
# entrypoint) for a second service.
from services.common import calls, deadletters, health
from services.common.clock import utcnow
from services.common.context import RequestId
from services.common.db import Database
from services.common.errors import (
    EXPECTED,
    NotFound,
    ServiceTimeout,
    ServiceUnavailable,
    UnknownProduct,
    ValidationFailed,
)

# A decorator function, not a class with entrypoints: safe to import by name (see the note on `health`).
from services.common.events import first_delivery, reliable_event_handler
from services.common.messages import EVENT_ID, OrderFailed, ProductChanged
from services.common.metrics import Telemetry
from services.common.rpc import Rpc, rpc
from services.common.rules import (
    MAX_QUANTITY,
    normalize_uuid,
    validate_order_id,
    validate_quantity,
    validate_sku,
    validate_user_id,
)

# The catalog being down is an outage to report, not a bug of this service: no traceback in its log.
CARTS_EXPECTED = EXPECTED + (ServiceUnavailable, ServiceTimeout)


def cart_not_found():
    # The same error for a missing cart, another user's cart and a malformed id: nothing leaks.
    return NotFound("the cart does not exist")


def unknown_product(sku):
    return UnknownProduct(f"the catalog has no product with sku {sku}", {"sku": sku})


class CartsService(health.HealthRpc, deadletters.ParkedEventsRpc, calls.PrunedCalls):
    """RPC interface of carts (docs/SERVICES.md); every method takes the owner's `user_id` first, and every write
    a `call_id` (services.common.calls)."""

    name = "carts"

    db = Database("DATABASE_URL")
    catalog = Rpc("catalog")
    request_id = RequestId()
    telemetry = Telemetry()

    @rpc(expected_exceptions=CARTS_EXPECTED)
    def list_carts(self, user_id):
        validate_user_id(user_id)
        rows = store.user_carts(self.db, user_id)
        lines = store.lines_of(self.db, [row["id"] for row in rows])
        open_skus = {line["sku"] for row in rows if row["status"] == OPEN for line in lines[row["id"]]}
        products = self._products(open_skus)
        return {"items": [build_cart(row, lines[row["id"]], products) for row in rows]}

    @rpc(expected_exceptions=CARTS_EXPECTED)
    @calls.exactly_once
    def create_cart(self, user_id, items=None, call_id=None):
        validate_user_id(user_id)
        wanted = merge_items(items)
        products = self._products(wanted)
        missing = unknown_skus(wanted, products)
        if missing:
            raise unknown_product(missing[0])
        now = utcnow()
        cart = {"id": new_cart_id(), "user_id": user_id, "status": OPEN, "created_at": now, "updated_at": now}
        lines = [
            {
                "sku": sku,
                "quantity": quantity,
                "name": products[sku]["name"],
                "unit_price_cents": products[sku]["price_cents"],
            }
            for sku, quantity in sorted(wanted.items())
        ]
        store.insert_cart(self.db, cart, lines)
        return build_cart(cart, lines, products)

    @rpc(expected_exceptions=CARTS_EXPECTED)
    def get_cart(self, user_id, cart_id):
        validate_user_id(user_id)
        cart, lines, copied = self._read(user_id, cart_id)
        products = self._products({line["sku"] for line in lines}, copied) if cart["status"] == OPEN else {}
        return build_cart(cart, lines, products)

    @rpc(expected_exceptions=CARTS_EXPECTED)
    @calls.exactly_once
    def add_item(self, user_id, cart_id, sku, quantity, call_id=None):
        validate_user_id(user_id)
        validate_sku(sku)
        validate_quantity(quantity, minimum=1)
        cart, lines, copied = self._read_open(user_id, cart_id)
        products = self._products({line["sku"] for line in lines} | {sku}, copied)
        product = self._known(products, sku)
        # Writes start here: no more RPC calls until the method returns.
        self._lock(user_id, cart["id"])
        if not store.add_to_line(self.db, cart["id"], sku, quantity, product["name"], product["price_cents"]):
            raise ValidationFailed.field("quantity", f"the line would exceed {MAX_QUANTITY}")
        return self._reread(user_id, cart["id"], products)

    @rpc(expected_exceptions=CARTS_EXPECTED)
    @calls.exactly_once
    def set_item(self, user_id, cart_id, sku, quantity, call_id=None):
        validate_user_id(user_id)
        validate_sku(sku)
        validate_quantity(quantity, minimum=0)
        cart, lines, copied = self._read_open(user_id, cart_id)
        skus = {line["sku"] for line in lines}
        if quantity == 0:
            if sku not in skus:
                return build_cart(cart, lines, self._products(skus, copied))  # nothing to remove: no write
            products = self._products(skus - {sku}, copied)
            self._lock(user_id, cart["id"])
            store.delete_line(self.db, cart["id"], sku)  # already gone (a concurrent removal) is fine too
        else:
            products = self._products(skus | {sku}, copied)
            product = self._known(products, sku)
            self._lock(user_id, cart["id"])
            store.set_line(self.db, cart["id"], sku, quantity, product["name"], product["price_cents"])
        return self._reread(user_id, cart["id"], products)

    @rpc(expected_exceptions=CARTS_EXPECTED)
    @calls.exactly_once
    def remove_item(self, user_id, cart_id, sku, call_id=None):
        validate_user_id(user_id)
        cart, lines, copied = self._read_open(user_id, cart_id)
        skus = {line["sku"] for line in lines}
        if sku not in skus:  # also covers a malformed sku: such a line cannot exist
            raise self._line_not_found(sku)
        products = self._products(skus - {sku}, copied)
        self._lock(user_id, cart["id"])
        if not store.delete_line(self.db, cart["id"], sku):
            raise self._line_not_found(sku)  # removed concurrently; the rollback undoes the lock's touch
        return self._reread(user_id, cart["id"], products)

    @rpc(expected_exceptions=CARTS_EXPECTED)
    @calls.exactly_once
    def delete_cart(self, user_id, cart_id, call_id=None):
        validate_user_id(user_id)
        cart_id = normalize_uuid(cart_id)
        if cart_id is None:
            raise cart_not_found()
        self._lock(user_id, cart_id)
        store.delete_cart(self.db, cart_id)

    # --- checkout (called by orders) -------------------------------------------------------------------------

    @rpc(expected_exceptions=CARTS_EXPECTED)
    def checkout_cart(self, user_id, cart_id, order_id):
        """Hand the caller's open cart to order `order_id`: it becomes checked out, its lines store the catalog's
        current names and prices, and the answer shows exactly those (what the order freezes). Repeating it for
        the same order answers the same cart."""
        validate_user_id(user_id)
        order_id = validate_order_id(order_id)
        cart, lines, _copied = self._read(user_id, cart_id)
        if checkout_step(cart, lines, order_id) == ALREADY_CHECKED_OUT:
            return build_cart(cart, lines, {})
        products = self._catalog_products({line["sku"] for line in lines})  # catalog's own, not the copy's
        # Writes start here: no more RPC calls until the method returns.
        if not store.check_out(self.db, user_id, cart["id"], order_id, utcnow()):
            # Another checkout (or a deletion) got there first; only a repeat of this very order is not a conflict.
            cart, lines, _copied = self._read(user_id, cart["id"])
            if cart["status"] == CHECKED_OUT and cart["checked_out_by"] == order_id:
                return build_cart(cart, lines, {})
            raise checked_out_conflict()
        # Checked after taking the cart, so a concurrent release either is seen here or sees this checkout.
        if store.is_released(self.db, order_id):
            raise released_conflict()
        lines = store.lines_of(self.db, [cart["id"]])[cart["id"]]  # final now: the cart is no longer open
        if not lines:  # emptied after the first read: the rollback leaves the cart open
            raise empty_cart()
        store.freeze_lines(self.db, cart["id"], frozen_values(lines, products))
        return self._reread(user_id, cart["id"], {})

    @rpc(expected_exceptions=CARTS_EXPECTED)
    def reopen_cart(self, cart_id, order_id):
        """Order `order_id` gives its cart up: a cart it checked out is open again; any other cart is left
        alone. Internal (no owner check): only orders calls it."""
        self._release(cart_id, order_id)

    @reliable_event_handler(ProductChanged.source, ProductChanged.event_type)
    def remember_product(self, payload):
        """Keep the product's name and price as catalog announced them; an event older than the copy changes
        nothing (so a repeated or late one is harmless)."""
        event = ProductChanged.from_dict(payload)
        product = event.product
        store.remember_products(
            self.db,
            [
                {
                    "sku": product.sku,
                    "name": product.name,
                    "price_cents": product.price_cents,
                    "version": event.product_version,
                }
            ],
        )

    @reliable_event_handler(OrderFailed.source, OrderFailed.event_type)
    def reopen_after_failed_order(self, payload):
        """A failed order's cart opens again, so its owner can change it and retry; once per event."""
        order = OrderFailed.from_dict(payload).order
        if first_delivery(self.db, payload[EVENT_ID], "carts.reopen_after_failed_order"):
            self._release(order.cart_id, order.id)

    # --- steps shared by the entrypoints ---------------------------------------------------------------------

    def _read(self, user_id, cart_id):
        """(cart row, lines, the copy's products for its lines) of the caller's cart, read without locks in one
        statement; NotFound otherwise."""
        cart_id = normalize_uuid(cart_id)
        cart, lines, copied = store.read_cart(self.db, user_id, cart_id) if cart_id else (None, [], {})
        if cart is None:
            raise cart_not_found()
        return cart, lines, copied

    def _read_open(self, user_id, cart_id):
        """Like `_read`, and Conflict when the cart is checked out (checked again under the lock)."""
        cart, lines, copied = self._read(user_id, cart_id)
        if cart["status"] != OPEN:
            raise checked_out_conflict()
        return cart, lines, copied

    def _lock(self, user_id, cart_id):
        """Lock the caller's open cart for this transaction (the first write); NotFound or Conflict if it is
        gone or checked out by now."""
        if not store.lock_open_cart(self.db, user_id, cart_id, utcnow()):
            if store.find_cart(self.db, user_id, cart_id) is None:
                raise cart_not_found()
            raise checked_out_conflict()

    def _reread(self, user_id, cart_id, products):
        """The cart as it is now inside this transaction, priced with `products` fetched before the writes
        (stored values for a sku another writer added meanwhile)."""
        cart, lines, _copied = self._read(user_id, cart_id)
        return build_cart(cart, lines, products)

    def _release(self, cart_id, order_id):
        """Record that `order_id` released its cart (a later checkout for it is refused) and reopen `cart_id`
        if that order checked it out."""
        order_id = normalize_uuid(order_id)
        if order_id is None:
            return  # not an order id: it cannot have checked anything out
        now = utcnow()
        store.release(self.db, order_id, now)
        cart_id = normalize_uuid(cart_id)
        if cart_id is not None:
            store.lock_cart(self.db, cart_id)  # waits for a checkout of this cart in flight
            store.reopen(self.db, cart_id, order_id, now)

    def _products(self, skus, copied=None):
        """`{sku: product}` among `skus` from carts' copy (`copied`: what a read of it already found); the skus
        the copy lacks are asked of catalog in one call and kept. A sku neither knows is left out."""
        known = {sku: product for sku, product in (copied or {}).items() if sku in skus}
        if len(known) < len(skus):
            known.update(store.known_products(self.db, set(skus) - set(known)))
        unseen = set(skus) - set(known)
        if unseen:
            found = self._catalog_products(unseen)
            store.remember_products(self.db, list(found.values()))  # a write: after the call, as every write
            known.update(found)
        return known

    def _catalog_products(self, skus):
        """`{sku: product}` of catalog's current products among `skus`, asked now; no call for no skus."""
        if not skus:
            return {}
        return products_by_sku(self.catalog.get_products(sorted(skus)))

    @staticmethod
    def _known(products, sku):
        if sku not in products:
            raise unknown_product(sku)
        return products[sku]

    @staticmethod
    def _line_not_found(sku):
        return NotFound(f"the cart has no line for sku {sku}", {"sku": sku})
