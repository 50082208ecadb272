"""The catalog service: products, their prices and stock; tells the others when a product changes."""
import logging

from nameko.events import EventDispatcher
from nameko.rpc import rpc
from sqlalchemy import func, or_, select
from sqlalchemy.exc import IntegrityError

from services.catalog.domain import (
    DEFAULT_LIMIT, is_sku, validate_changes, validate_new_product, validate_page,
)
from services.catalog.models import Product
from services.common import health
from services.common.context import RequestId
from services.common.db import Database, after_commit
from services.common.errors import EXPECTED, Conflict, NotFound, ValidationFailed

log = logging.getLogger(__name__)

PRODUCT_CHANGED = "product_changed"
# Skus per `IN (...)` query: well under SQLite's limit on bound parameters.
SKUS_PER_QUERY = 500


def matching(q):
    """The WHERE conditions of a listing: `q` a literal, case-insensitive substring of name or description."""
    if q is None:
        return ()
    # autoescape makes % and _ in q plain characters, the same way on SQLite and PostgreSQL.
    return (or_(Product.name.icontains(q, autoescape=True),
                Product.description.icontains(q, autoescape=True)),)


# `health.HealthRpc`, not an imported `HealthRpc`: `nameko run` would take that name for a second service.
class CatalogService(health.HealthRpc):
    name = "catalog"

    db = Database("DATABASE_URL")
    request_id = RequestId()
    dispatch = EventDispatcher()

    @rpc(expected_exceptions=EXPECTED)
    def list_products(self, limit=DEFAULT_LIMIT, offset=0, q=None):
        """A page of products in sku order: `{"items", "total", "limit", "offset"}`."""
        limit, offset, q = validate_page(limit, offset, q)
        conditions = matching(q)
        total = self.db.scalar(select(func.count()).select_from(Product).where(*conditions))
        products = self.db.scalars(
            select(Product).where(*conditions).order_by(Product.sku).limit(limit).offset(offset))
        return {"items": [product.to_dict() for product in products], "total": total,
                "limit": limit, "offset": offset}

    @rpc(expected_exceptions=EXPECTED)
    def get_product(self, sku):
        """The product with `sku`; NotFound for an unknown or malformed sku."""
        return self._get(sku).to_dict()

    @rpc(expected_exceptions=EXPECTED)
    def get_products(self, skus):
        """The products that exist among `skus`, in sku order (unknown and malformed skus are left out)."""
        if not isinstance(skus, (list, tuple)):
            raise ValidationFailed.field("skus", "must be a list")
        wanted = sorted({sku for sku in skus if is_sku(sku)})
        found = []
        for start in range(0, len(wanted), SKUS_PER_QUERY):
            chunk = wanted[start:start + SKUS_PER_QUERY]
            found.extend(self.db.scalars(select(Product).where(Product.sku.in_(chunk))))
        return [product.to_dict() for product in sorted(found, key=lambda product: product.sku)]

    @rpc(expected_exceptions=EXPECTED)
    def create_product(self, product):
        """The new product; Conflict when its sku exists."""
        fields = validate_new_product(product)
        if self.db.get(Product, fields["sku"]) is not None:
            raise Conflict(f"a product with sku {fields['sku']} already exists")
        created = Product(**fields)
        self.db.add(created)
        try:
            self.db.flush()
        except IntegrityError:  # a concurrent create of the same sku won
            log.info("create of %s lost a race for the same sku", fields["sku"])
            raise Conflict(f"a product with sku {fields['sku']} already exists") from None
        return self._changed(created)

    @rpc(expected_exceptions=EXPECTED)
    def update_product(self, sku, changes):
        """The product after applying `changes` (any of name, description, price_cents, stock)."""
        changes = validate_changes(changes)
        product = self._get(sku, for_update=True)
        for field, value in changes.items():
            setattr(product, field, value)
        self.db.flush()
        return self._changed(product)

    def _get(self, sku, for_update=False):
        if not is_sku(sku):
            raise NotFound("no such product")
        query = select(Product).where(Product.sku == sku)
        if for_update:
            # Row lock: concurrent updates of one product apply one after the other.
            query = query.with_for_update()
        product = self.db.scalars(query).one_or_none()
        if product is None:
            raise NotFound("no such product")
        return product

    def _changed(self, product):
        """`product` as a dict, announced with `product_changed` once the transaction commits."""
        payload = {"product": product.to_dict()}

        def announce():
            # The write is committed whatever happens here; a lost notification must not fail the call.
            try:
                self.dispatch(PRODUCT_CHANGED, payload)
            except Exception:
                log.exception("could not announce %s of %s", PRODUCT_CHANGED, payload["product"]["sku"])

        after_commit(self.db, announce)
        return payload["product"]
