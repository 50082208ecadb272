"""The orders service's `recent_orders` (the operator console's list) in a real container on the real broker and
both databases, with its schema built by the migrations."""

import json
import uuid
from datetime import timedelta

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from nameko.standalone.rpc import ServiceRpcProxy
from sqlalchemy import create_engine
from sqlalchemy.orm import Session

from services.common.clock import utcnow
from services.common.errors import ValidationFailed
from services.orders.models import Base, Order
from services.orders.service import OrdersService


@pytest.fixture
def db_url(fresh_database):
    return fresh_database("orders")


@pytest.fixture
def orders(container_factory, service_config, db_url):
    container = container_factory(OrdersService, service_config("orders", DATABASE_URL=db_url))
    container.start()
    with ServiceRpcProxy("orders", service_config("orders")) as proxy:
        yield proxy


def store_orders(db_url, statuses):
    """Settled orders of two users, one per status in `statuses`, a second apart (the last is the newest)."""
    engine = create_engine(db_url)
    start = utcnow() - timedelta(hours=1)
    ids = []
    with Session(engine) as session, session.begin():
        for number, status in enumerate(statuses):
            ids.append(str(uuid.uuid4()))
            session.add(
                Order(
                    id=ids[-1],
                    user_id=f"user-{number % 2}",
                    cart_id=str(uuid.uuid4()),
                    status=status,
                    step="done",
                    failure_reason="payment_declined" if status == "failed" else None,
                    items=json.dumps([]),
                    total_cents=100 * number,
                    payment_method_id=str(uuid.uuid4()),
                    deadline_at=start,
                    created_at=start + timedelta(seconds=number),
                    updated_at=start + timedelta(seconds=number),
                )
            )
    engine.dispose()
    return ids


def test_migrations_build_the_schema_the_models_describe(db_url):
    engine = create_engine(db_url)
    with engine.connect() as connection:
        assert compare_metadata(MigrationContext.configure(connection), Base.metadata) == []
    engine.dispose()


def test_recent_orders_are_every_users_newest_first_with_counts_by_status(orders, db_url):
    ids = store_orders(db_url, ["confirmed", "failed", "confirmed", "cancelled", "confirmed"])

    everything = orders.recent_orders()
    assert [order["id"] for order in everything["items"]] == ids[::-1]
    assert {order["user_id"] for order in everything["items"]} == {"user-0", "user-1"}
    assert everything["counts"] == {"pending": 0, "confirmed": 3, "failed": 1, "cancelled": 1}
    newest = everything["items"][0]
    assert newest["status"] == "confirmed" and newest["total_cents"] == 400 and newest["items"] == []

    confirmed = orders.recent_orders(status="confirmed", limit=2)
    assert [order["id"] for order in confirmed["items"]] == [ids[4], ids[2]]
    assert orders.recent_orders(status="failed")["items"][0]["failure_reason"] == "payment_declined"
    assert orders.recent_orders(status="pending")["items"] == []


@pytest.mark.parametrize(
    ("arguments", "field"),
    [({"status": "lost"}, "status"), ({"limit": 0}, "limit"), ({"limit": 101}, "limit"), ({"limit": "5"}, "limit")],
)
def test_recent_orders_refuses_a_bad_filter(orders, arguments, field):
    with pytest.raises(ValidationFailed) as refused:
        orders.recent_orders(**arguments)
    assert field in refused.value.details["fields"]
