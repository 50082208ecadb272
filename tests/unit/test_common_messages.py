"""The event messages (services/common/messages.py): the JSON they publish, how handlers read it back, and the
docs table made from them."""

import json
import os
from dataclasses import fields
from types import SimpleNamespace

import pytest

from conftest import ROOT
from services.catalog.models import PUBLIC_FIELDS
from services.common import messages
from services.orders import domain as orders

PRODUCT = {"sku": "MUG", "name": "Mug", "description": "Blue", "price_cents": 1250, "stock": 3}
LINE = {"sku": "MUG", "name": "Mug", "quantity": 2, "unit_price_cents": 1250, "line_total_cents": 2500}
ORDER = {
    "id": "0b5e4a8e-7c1f-4d2a-9a3b-1c2d3e4f5a6b",
    "cart_id": "7b0e3a4e-1111-4c4c-9999-0123456789ab",
    "status": "failed",
    "failure_reason": "payment_declined",
    "items": [LINE],
    "total_cents": 2500,
    "created_at": "2026-11-28T14:20:00.123456Z",
    "updated_at": "2026-11-28T14:21:00.000000Z",
}


def test_the_body_is_the_json_the_events_always_had():
    product_changed = messages.ProductChanged(product=messages.Product(**PRODUCT), product_version=4)
    assert (product_changed.event_type, product_changed.to_dict()) == (
        "product_changed",
        {"product": PRODUCT, "product_version": 4},
    )
    stock_changed = messages.StockChanged(sku="MUG", stock=3, product_version=5)
    assert (stock_changed.event_type, stock_changed.to_dict()) == (
        "stock_changed",
        {"sku": "MUG", "stock": 3, "product_version": 5},
    )
    failed = orders.settled_message(ORDER)
    assert (type(failed), failed.event_type) == (messages.OrderFailed, "order_failed")
    assert json.loads(json.dumps(failed.to_dict())) == {"order": ORDER}


@pytest.mark.parametrize(
    "status, message",
    [("confirmed", messages.OrderConfirmed), ("failed", messages.OrderFailed), ("cancelled", messages.OrderCancelled)],
)
def test_a_settled_order_is_announced_by_the_event_of_its_status(status, message):
    settled = orders.settled_message(dict(ORDER, status=status))
    assert type(settled) is message and settled.event_type == f"order_{status}" and settled.source == "orders"


def test_handlers_read_a_body_back_ignoring_what_they_do_not_know():
    body = {"order": dict(ORDER, items=[dict(LINE, colour="blue")], coupon="X"), "event_id": "e-1", "extra": 1}
    failed = messages.OrderFailed.from_dict(body)
    assert failed == orders.settled_message(ORDER)
    assert failed.order.cart_id == ORDER["cart_id"] and failed.order.items[0].quantity == 2
    assert messages.ProductChanged.from_dict({"product": PRODUCT, "event_id": "e-2"}).product.sku == "MUG"
    # A body written before products had versions reads as version 0, older than any product's.
    assert messages.ProductChanged.from_dict({"product": PRODUCT}).product_version == 0


@pytest.mark.parametrize(
    "message, body",
    [
        (messages.StockChanged, {"sku": "MUG", "stock": 3, "event_id": "e-1"}),
        (messages.OrderFailed, {"order": {"id": ORDER["id"]}, "event_id": "e-1"}),
        (messages.OrderFailed, {"order": dict(ORDER, items=[{"sku": "MUG"}])}),
        (messages.OrderFailed, {"order": dict(ORDER, items="MUG")}),
        (messages.ProductChanged, {"product": None}),
        (messages.ProductChanged, []),
    ],
)
def test_a_body_without_a_declared_field_is_refused(message, body):
    with pytest.raises(messages.MessageInvalid):
        message.from_dict(body)


def test_messages_are_frozen():
    changed = messages.StockChanged(sku="MUG", stock=3, product_version=2)
    with pytest.raises(AttributeError):
        changed.stock = 4


def test_the_product_in_product_changed_is_the_product_catalog_answers():
    """catalog emits `Product(**product)`: a field added to one must be added to the other."""
    assert tuple(field.name for field in fields(messages.Product)) == PUBLIC_FIELDS


def test_the_order_in_the_settled_events_is_the_order_orders_answers():
    row = SimpleNamespace(**dict(ORDER, items=json.dumps([LINE])))
    row.created_at = row.updated_at = None
    assert list(orders.as_answer(row)) == [field.name for field in fields(messages.Order)]


def test_every_event_has_a_name_a_source_and_a_version():
    names = [message.event_type for message in messages.MESSAGES]
    assert len(set(names)) == len(names)
    for message in messages.MESSAGES:
        assert message.source in ("catalog", "orders") and message.version >= 1 and message.__doc__


def test_docs_services_shows_the_events_as_they_are_declared():
    """docs/SERVICES.md's event table is `python -m services.common.messages`'s output."""
    with open(os.path.join(ROOT, "docs", "SERVICES.md")) as docs:
        text = docs.read()
    assert messages.markdown() in text, "paste `python -m services.common.messages` into docs/SERVICES.md"
