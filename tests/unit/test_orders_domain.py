"""The order saga's transitions and the audit's invariants, without broker or database."""

from datetime import UTC, datetime, timedelta

import pytest

from services.orders import domain as d


@pytest.mark.parametrize(
    "step, outcome, expected",
    [
        (d.NEW, "ok", d.Transition(d.RESERVING)),
        (d.RESERVING, "ok", d.Transition(d.CHARGING)),
        (d.CHARGING, "ok", d.Transition(d.CONFIRMING)),
        (d.CONFIRMING, "ok", d.Transition(d.DONE, d.CONFIRMED)),
        (d.COMPENSATING, "ok", d.Transition(d.DONE, d.FAILED)),
        (d.CANCELLING, "ok", d.Transition(d.DONE, d.CANCELLED)),
        (d.RESERVING, d.OUT_OF_STOCK, d.Transition(d.COMPENSATING, d.PENDING, d.OUT_OF_STOCK)),
        (d.CHARGING, d.PAYMENT_DECLINED, d.Transition(d.COMPENSATING, d.PENDING, d.PAYMENT_DECLINED)),
        (d.CHARGING, d.TIMEOUT, d.Transition(d.COMPENSATING, d.PENDING, d.TIMEOUT)),
        (d.CONFIRMING, d.TIMEOUT, d.Transition(d.COMPENSATING, d.PENDING, d.TIMEOUT)),
        (d.NEW, d.TIMEOUT, d.Transition(d.COMPENSATING, d.PENDING, d.TIMEOUT)),
    ],
)
def test_transitions(step, outcome, expected):
    assert d.after(step, outcome) == expected


@pytest.mark.parametrize(
    "step, outcome",
    [
        (d.DONE, "ok"),
        (d.COMPENSATING, d.TIMEOUT),
        (d.CANCELLING, d.PAYMENT_DECLINED),
        (d.RESERVING, "weird"),
    ],
)
def test_no_transition_out_of_compensation_or_done(step, outcome):
    with pytest.raises(ValueError):
        d.after(step, outcome)


def test_only_steps_before_a_final_charge_time_out():
    deadline = datetime(2026, 1, 1, tzinfo=UTC)
    late, early = deadline + timedelta(seconds=1), deadline - timedelta(seconds=1)
    assert all(d.timed_out(step, deadline, late) for step in (d.NEW, d.RESERVING, d.CHARGING))
    assert not any(d.timed_out(step, deadline, late) for step in (d.CONFIRMING, d.COMPENSATING, d.CANCELLING, d.DONE))
    assert not d.timed_out(d.RESERVING, deadline, early)


def order(id, status, step=d.DONE, total=100):
    return {"id": id, "status": status, "step": step, "total_cents": total}


def test_a_consistent_system_has_no_breaches():
    orders = [order("a", d.CONFIRMED), order("b", d.FAILED), order("c", d.CANCELLED), order("p", d.PENDING, d.CHARGING)]
    charges = {"a": 100, "b": 0, "c": 0, "p": 100}
    holds = {"a": "committed", "b": "released", "c": "released", "p": "held"}
    assert d.find_breaches(orders, charges, holds, []) == []


@pytest.mark.parametrize(
    "orders, charges, holds, fragment",
    [
        ([order("a", d.CONFIRMED)], {"a": 200}, {"a": "committed"}, "net charge is 200"),
        ([order("a", d.CONFIRMED)], {}, {"a": "committed"}, "net charge is 0"),
        ([order("a", d.CONFIRMED)], {"a": 100}, {"a": "held"}, "stock hold is held"),
        ([order("b", d.FAILED)], {"b": 100}, {}, "still charged"),
        ([order("c", d.CANCELLED)], {}, {"c": "committed"}, "still committed"),
        ([order("b", d.FAILED)], {}, {"b": "held"}, "still held"),
        ([], {"x": 5}, {}, "unknown order x"),
        ([], {}, {"y": "held"}, "unknown order y"),
    ],
)
def test_each_breach_is_named(orders, charges, holds, fragment):
    breaches = d.find_breaches(orders, charges, holds, [])
    assert len(breaches) == 1 and fragment in breaches[0]


def test_stock_breaches_are_kept():
    assert d.find_breaches([], {}, {}, ["sku A: on hand 5 != 4"]) == ["sku A: on hand 5 != 4"]


def test_line_items_freeze_the_cart_lines():
    cart_items = [
        {
            "sku": "A",
            "name": "Apple",
            "quantity": 2,
            "unit_price_cents": 50,
            "line_total_cents": 100,
            "extra": "dropped",
        }
    ]
    assert d.line_items(cart_items) == [
        {"sku": "A", "name": "Apple", "quantity": 2, "unit_price_cents": 50, "line_total_cents": 100}
    ]
