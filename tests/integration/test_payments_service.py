"""The payments service in a real container on the real broker and a real database (SQLite and PostgreSQL):
the test cards, idempotent charges (also under concurrency), refunds and tombstones, the audit's net
charges, and that no card number is ever stored or logged."""

import logging
import uuid

import eventlet
import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from nameko.standalone.rpc import ClusterRpcProxy, ServiceRpcProxy
from nameko.testing.services import worker_factory
from sqlalchemy import MetaData, insert, select
from sqlalchemy.exc import DataError, IntegrityError
from sqlalchemy.orm import Session

from services.common.clock import utcnow
from services.common.db import make_engine
from services.common.errors import Forbidden, NotFound, ValidationFailed
from services.payments import store
from services.payments.models import Base, charges, payment_methods
from services.payments.service import PaymentsService

SUCCEEDS = "4242424242424242"
DECLINED = "4000000000000002"
NO_FUNDS = "4000000000009995"
OWNER = str(uuid.uuid4())  # the user every test card is registered for and charged as

# card → (verdict stored, charge status, reason)
CARDS = {
    SUCCEEDS: ("succeed", "succeeded", None),
    DECLINED: ("card_declined", "declined", "card_declined"),
    NO_FUNDS: ("insufficient_funds", "declined", "insufficient_funds"),
    "5555555555554444": ("succeed", "succeeded", None),  # any other valid card succeeds
    "378282246310005": ("succeed", "succeeded", None),  # 15 digits
    "123456789015": ("succeed", "succeeded", None),  # 12 digits, the shortest
    "4000000000000000006": ("succeed", "succeeded", None),  # 19 digits, the longest
}


def new_order_id():
    return str(uuid.uuid4())


@pytest.fixture
def db_url(fresh_database):
    return fresh_database("payments")


@pytest.fixture
def db(db_url):
    """An engine on the service's database, to look behind the service's back."""
    engine = make_engine(db_url)
    yield engine
    engine.dispose()


@pytest.fixture
def config(service_config, db_url):
    return service_config("payments", DATABASE_URL=db_url)


@pytest.fixture
def payments(container_factory, config):
    """A proxy to one running payments container."""
    container_factory(PaymentsService, config).start()
    with ServiceRpcProxy("payments", config) as proxy:
        yield proxy


def rows(db, table):
    with db.connect() as connection:
        return [dict(row) for row in connection.execute(select(table)).mappings()]


def charge_row(db, order_id):
    with db.connect() as connection:
        return connection.execute(select(charges).where(charges.c.order_id == order_id)).mappings().one()


# --- schema --------------------------------------------------------------------------------------------------


def test_migrations_build_the_schema_the_models_describe(db):
    with db.connect() as connection:
        assert compare_metadata(MigrationContext.configure(connection), Base.metadata) == []


# SQLite refuses by the check constraint, PostgreSQL already by the column's length.
REFUSED = (IntegrityError, DataError)


def test_the_database_refuses_more_than_four_digits_of_a_card(db):
    method_id = str(uuid.uuid4())
    with pytest.raises(REFUSED):
        with db.begin() as connection:
            connection.execute(
                insert(payment_methods).values(id=method_id, last4=SUCCEEDS, verdict="succeed", created_at=utcnow())
            )
    with db.begin() as connection:
        connection.execute(
            insert(payment_methods).values(id=method_id, last4="4242", verdict="succeed", created_at=utcnow())
        )
    with pytest.raises(REFUSED):
        with db.begin() as connection:
            connection.execute(
                insert(charges).values(
                    order_id=new_order_id(),
                    status="succeeded",
                    amount_cents=100,
                    payment_method_id=method_id,
                    last4=SUCCEEDS,
                    created_at=utcnow(),
                )
            )
    assert rows(db, charges) == []


# --- cards ---------------------------------------------------------------------------------------------------


def test_every_test_card_gets_its_verdict(payments, db):
    assert payments.health() == "ok"
    for card, (verdict, status, reason) in CARDS.items():
        method = payments.register_card(OWNER, card)
        assert method["last4"] == card[-4:]
        stored = [row for row in rows(db, payment_methods) if row["id"] == method["payment_method_id"]]
        assert [(row["last4"], row["verdict"]) for row in stored] == [(card[-4:], verdict)]

        order_id = new_order_id()
        answer = payments.charge(order_id, 1999, method["payment_method_id"], OWNER)
        assert answer == {
            "order_id": order_id,
            "status": status,
            "reason": reason,
            "amount_cents": 1999,
            "last4": card[-4:],
        }
        assert charge_row(db, order_id)["status"] == status
    assert len(rows(db, payment_methods)) == len(CARDS)


INVALID_CARDS = {
    "4242424242424241": "is not a valid card number (Luhn check failed)",
    "79927398713": "must be 12 to 19 digits, nothing else",  # Luhn-valid but 11 digits
    "4242 4242 4242 4242": "must be 12 to 19 digits, nothing else",
    4242424242424242: "must be a string of 12 to 19 digits",
}


def test_an_invalid_card_is_refused_and_nothing_is_stored(payments, db):
    for card, reason in INVALID_CARDS.items():
        with pytest.raises(ValidationFailed) as failure:
            payments.register_card(OWNER, card)
        assert failure.value.details == {"fields": {"card_number": reason}}
        assert str(card) not in str(failure.value)
    assert rows(db, payment_methods) == []


# --- charges -------------------------------------------------------------------------------------------------


def test_a_charge_is_decided_once_per_order(payments, db):
    good = payments.register_card(OWNER, SUCCEEDS)["payment_method_id"]
    bad = payments.register_card(OWNER, DECLINED)["payment_method_id"]

    paid = new_order_id()
    first = payments.charge(paid, 1500, good, OWNER)
    assert first["status"] == "succeeded"
    # The same order again, even with another amount or card: the recorded answer, and still one row.
    assert payments.charge(paid, 1500, good, OWNER) == first
    assert payments.charge(paid, 999, bad, OWNER) == first
    assert payments.charge(paid.upper(), 1500, good, OWNER) == first

    declined = new_order_id()
    refused = payments.charge(declined, 700, bad, OWNER)
    assert refused["status"] == "declined"
    assert payments.charge(declined, 700, good, OWNER) == refused

    assert sorted(row["order_id"] for row in rows(db, charges)) == sorted([paid, declined])
    assert charge_row(db, paid)["amount_cents"] == 1500


def test_a_charge_with_bad_input_is_refused_and_writes_nothing(payments, db):
    method_id = payments.register_card(OWNER, SUCCEEDS)["payment_method_id"]
    for amount in (0, -5, 1.5, "100", True, None):
        with pytest.raises(ValidationFailed) as failure:
            payments.charge(new_order_id(), amount, method_id, OWNER)
        assert list(failure.value.details["fields"]) == ["amount_cents"]
    for order_id in ("order-1", None, 12):
        with pytest.raises(ValidationFailed) as failure:
            payments.charge(order_id, 100, method_id, OWNER)
        assert list(failure.value.details["fields"]) == ["order_id"]
    for unknown in (str(uuid.uuid4()), "not-an-id", None, 7, SUCCEEDS):
        with pytest.raises(NotFound):
            payments.charge(new_order_id(), 100, unknown, OWNER)
    assert rows(db, charges) == []


def test_concurrent_charges_of_one_order_make_one_charge(payments, config, db):
    method_id = payments.register_card(OWNER, SUCCEEDS)["payment_method_id"]
    order_id = new_order_id()

    def charge(n):
        if n % 2:
            with ServiceRpcProxy("payments", config) as proxy:
                return proxy.charge(order_id, 2500, method_id, OWNER)
        with ClusterRpcProxy(config, timeout=30) as cluster:
            return cluster.payments.charge(order_id, 2500, method_id, OWNER)

    answers = list(eventlet.GreenPool(8).imap(charge, range(8)))
    assert (
        answers
        == [{"order_id": order_id, "status": "succeeded", "reason": None, "amount_cents": 2500, "last4": "4242"}] * 8
    )
    assert [row["order_id"] for row in rows(db, charges)] == [order_id]
    assert payments.net_charges() == {order_id: 2500}


def test_concurrent_charges_and_refunds_of_one_order_leave_nothing_charged(payments, config, db):
    method_id = payments.register_card(OWNER, SUCCEEDS)["payment_method_id"]
    order_id = new_order_id()

    def call(n):
        with ServiceRpcProxy("payments", config) as proxy:
            if n % 2:
                return proxy.refund(order_id)
            return proxy.charge(order_id, 300, method_id, OWNER)

    answers = list(eventlet.GreenPool(8).imap(call, range(8)))
    assert {answer["status"] for answer in answers} <= {"succeeded", "refunded", "voided"}
    assert charge_row(db, order_id)["status"] in ("refunded", "voided")
    assert payments.net_charges() == {order_id: 0}
    # Whatever interleaving happened, the order is settled: a later charge charges nothing.
    assert payments.charge(order_id, 300, method_id, OWNER)["status"] == "voided"


# --- refunds -------------------------------------------------------------------------------------------------


def test_a_refunded_charge_is_not_charged_again(payments, db):
    method_id = payments.register_card(OWNER, SUCCEEDS)["payment_method_id"]
    order_id = new_order_id()
    assert payments.charge(order_id, 4200, method_id, OWNER)["status"] == "succeeded"

    refunded = payments.refund(order_id)
    assert refunded["status"] == "refunded"
    assert (refunded["amount_cents"], refunded["last4"], refunded["reason"]) == (4200, "4242", None)
    assert refunded["refunded_at"].endswith("Z") and refunded["created_at"].endswith("Z")
    assert payments.refund(order_id) == refunded  # idempotent: refunded_at unchanged

    assert payments.charge(order_id, 4200, method_id, OWNER) == {
        "order_id": order_id,
        "status": "voided",
        "reason": None,
        "amount_cents": 4200,
        "last4": "4242",
    }
    assert charge_row(db, order_id)["status"] == "refunded"
    assert payments.net_charges() == {order_id: 0}


def test_a_refund_before_any_charge_leaves_a_tombstone(payments, db):
    method_id = payments.register_card(OWNER, SUCCEEDS)["payment_method_id"]
    order_id = new_order_id()

    tombstone = payments.refund(order_id)
    assert tombstone == {
        "order_id": order_id,
        "status": "voided",
        "reason": None,
        "amount_cents": 0,
        "last4": None,
        "created_at": tombstone["created_at"],
        "refunded_at": None,
    }
    assert payments.refund(order_id) == tombstone

    # The late charge charges nothing.
    assert payments.charge(order_id, 990, method_id, OWNER) == {
        "order_id": order_id,
        "status": "voided",
        "reason": None,
        "amount_cents": 0,
        "last4": None,
    }
    row = charge_row(db, order_id)
    assert (row["status"], row["amount_cents"], row["payment_method_id"]) == ("voided", 0, None)
    assert payments.net_charges() == {order_id: 0}


def test_a_declined_charge_stays_declined_on_refund(payments):
    method_id = payments.register_card(OWNER, NO_FUNDS)["payment_method_id"]
    order_id = new_order_id()
    payments.charge(order_id, 100, method_id, OWNER)
    record = payments.refund(order_id)
    assert (record["status"], record["reason"], record["refunded_at"]) == ("declined", "insufficient_funds", None)
    with pytest.raises(ValidationFailed):
        payments.refund("not-an-order")


def test_net_charges_counts_only_what_is_still_charged(payments):
    assert payments.net_charges() == {}
    good = payments.register_card(OWNER, SUCCEEDS)["payment_method_id"]
    bad = payments.register_card(OWNER, DECLINED)["payment_method_id"]
    kept, refunded, declined, voided = (new_order_id() for _ in range(4))
    payments.charge(kept, 1000, good, OWNER)
    payments.charge(refunded, 2000, good, OWNER)
    payments.refund(refunded)
    payments.charge(declined, 3000, bad, OWNER)
    payments.refund(voided)
    assert payments.net_charges() == {kept: 1000, refunded: 0, declined: 0, voided: 0}


# --- the lost race, made to happen ----------------------------------------------------------------------------


@pytest.fixture
def worker(db):
    """A payments worker on a real session (no broker), committed like the Database provider does."""
    session = Session(db)
    service = worker_factory(PaymentsService, db=session)
    yield service
    session.close()


def another_writer_wins(monkeypatch, db, row):
    """Make the worker's first look for the order's charge find nothing, and commit `row` right after it:
    the interleaving where a concurrent caller inserts between our read and our insert."""
    real_find = store.find_charge
    calls = []

    def find_charge(session, order_id):
        found = real_find(session, order_id)
        if not calls:
            calls.append(order_id)
            with db.begin() as connection:
                connection.execute(insert(charges).values(**row))
        return found

    monkeypatch.setattr(store, "find_charge", find_charge)


def test_a_charge_that_loses_the_insert_race_answers_the_winner(worker, monkeypatch, db):
    method_id = worker.register_card(OWNER, SUCCEEDS)["payment_method_id"]
    worker.db.commit()
    order_id = new_order_id()
    another_writer_wins(monkeypatch, db, dict(order_id=order_id, status="voided", amount_cents=0, created_at=utcnow()))

    answer = worker.charge(order_id, 500, method_id, OWNER)
    worker.db.commit()
    assert answer == {"order_id": order_id, "status": "voided", "reason": None, "amount_cents": 0, "last4": None}
    assert [(row["order_id"], row["status"]) for row in rows(db, charges)] == [(order_id, "voided")]


def test_a_refund_that_loses_the_insert_race_to_a_charge_refunds_it(worker, monkeypatch, db):
    method_id = worker.register_card(OWNER, SUCCEEDS)["payment_method_id"]
    worker.db.commit()
    order_id = new_order_id()
    another_writer_wins(
        monkeypatch,
        db,
        dict(
            order_id=order_id,
            status="succeeded",
            amount_cents=800,
            payment_method_id=method_id,
            last4="4242",
            created_at=utcnow(),
        ),
    )

    record = worker.refund(order_id)
    worker.db.commit()
    assert (record["status"], record["amount_cents"]) == ("refunded", 800)
    assert charge_row(db, order_id)["status"] == "refunded"


# --- no card number anywhere ----------------------------------------------------------------------------------


def test_no_card_number_is_stored_or_logged(payments, db, caplog):
    caplog.set_level(logging.DEBUG)
    numbers = list(CARDS) + ["4242424242424241"]  # the last one fails the Luhn check
    for number in numbers:
        try:
            method_id = payments.register_card(OWNER, number)["payment_method_id"]
        except ValidationFailed:
            continue
        order_id = new_order_id()
        payments.charge(order_id, 1234, method_id, OWNER)
        payments.refund(order_id)
        payments.charge(order_id, 1234, method_id, OWNER)

    # Every column of every table, the migration bookkeeping included.
    metadata = MetaData()
    metadata.reflect(db)
    assert {"payment_methods", "charges"} <= set(metadata.tables)
    with db.connect() as connection:
        stored = [
            str(value)
            for table in metadata.tables.values()
            for row in connection.execute(select(table))
            for value in row
        ]
    assert stored
    for number in numbers:
        assert not [value for value in stored if number[:-4] in value], number

    logged = caplog.text + "".join(record.getMessage() + (record.exc_text or "") for record in caplog.records)
    assert "card ending 4242" in logged  # the capture saw the service's own lines
    assert any(record.levelno == logging.DEBUG for record in caplog.records)
    for number in numbers:
        assert number[:-4] not in logged, number


# --- owners and call ids ----------------------------------------------------------------------------------------


def test_a_method_is_charged_only_for_its_owner(payments, db):
    method_id = payments.register_card(OWNER, SUCCEEDS)["payment_method_id"]
    assert [row["user_id"] for row in rows(db, payment_methods) if row["id"] == method_id] == [OWNER]
    with pytest.raises(Forbidden):
        payments.charge(new_order_id(), 100, method_id, str(uuid.uuid4()))
    assert rows(db, charges) == []


def test_register_card_twice_with_one_call_id_registers_one_method(payments, db):
    call_id = uuid.uuid4().hex
    first = payments.register_card(OWNER, SUCCEEDS, call_id=call_id)
    assert payments.register_card(OWNER, SUCCEEDS, call_id=call_id) == first
    assert [row["id"] for row in rows(db, payment_methods)] == [first["payment_method_id"]]
    # Another call id is another call.
    assert payments.register_card(OWNER, SUCCEEDS, call_id=uuid.uuid4().hex) != first
    assert len(rows(db, payment_methods)) == 2
