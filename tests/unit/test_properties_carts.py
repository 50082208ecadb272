"""Properties of the cart arithmetic, for any input hypothesis finds (derandomized: the same examples every run).

- Any sequence of add / set / remove, done as the carts service does it (its validation, then the store's single
  SQL statements, on an in-memory SQLite database), keeps every line's quantity in 1..999, refuses a change
  that would leave that range without changing anything, and the cart shown has total = sum(price * quantity)
  with the catalog's current prices.
- Merging a new cart's items sums repeated skus and refuses exactly the lists whose sum for a sku exceeds 999.
- Whatever a caller sends as a quantity or as a new cart's items, the answer is the value or ValidationFailed
  naming a field, never another exception.
"""

from datetime import UTC, datetime

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule
from sqlalchemy import create_engine
from sqlalchemy.orm import Session

from services.carts import domain, store
from services.carts.models import Base
from services.common import rules
from services.common.errors import ValidationFailed

MAX = rules.MAX_QUANTITY
NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
SKUS = ("A", "B", "C")  # few, so that operations meet the same lines often
prices = st.integers(min_value=0, max_value=2**31 - 1)
# Everything JSON can carry, and Python values a careless caller might pass over RPC.
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
quantities = st.integers(min_value=-5, max_value=MAX + 5) | st.sampled_from([1.0, 2.5, True, False, "3", None])

PROPERTY_SETTINGS = settings(max_examples=300, derandomize=True, database=None, deadline=None)


def field_names(failure):
    return set(failure.details["fields"])


# --- validation: a value or ValidationFailed, nothing else -------------------------------------------------------


@PROPERTY_SETTINGS
@given(value=json_values | quantities, minimum=st.sampled_from([0, 1]))
def test_a_quantity_is_an_integer_in_range_or_refused_by_name(value, minimum):
    try:
        assert rules.validate_quantity(value, minimum=minimum) == value
    except ValidationFailed as failure:
        assert field_names(failure) == {"quantity"}
        assert not (type(value) is int and minimum <= value <= MAX)
    else:
        assert type(value) is int and minimum <= value <= MAX


@PROPERTY_SETTINGS
@given(items=json_values | st.lists(st.fixed_dictionaries({"sku": st.sampled_from(SKUS), "quantity": quantities})))
def test_any_items_merge_or_are_refused_naming_a_field(items):
    try:
        merged = domain.merge_items(items)
    except ValidationFailed as failure:
        assert len(field_names(failure)) == 1
        assert next(iter(field_names(failure))).startswith("items")
    else:
        assert all(rules.is_sku(sku) and 1 <= quantity <= MAX for sku, quantity in merged.items())


@PROPERTY_SETTINGS
@given(
    items=st.lists(
        st.fixed_dictionaries({"sku": st.sampled_from(SKUS), "quantity": st.integers(min_value=1, max_value=MAX)}),
        max_size=8,
    )
)
def test_merging_sums_repeated_skus_and_refuses_exactly_a_sum_over_999(items):
    sums = {}
    for item in items:
        sums[item["sku"]] = sums.get(item["sku"], 0) + item["quantity"]
    if all(total <= MAX for total in sums.values()):
        assert domain.merge_items(items) == sums
    else:
        with pytest.raises(ValidationFailed) as failure:
            domain.merge_items(items)
        # The item named is the first one that took its sku past 999.
        running, first = {}, None
        for index, item in enumerate(items):
            running[item["sku"]] = running.get(item["sku"], 0) + item["quantity"]
            if running[item["sku"]] > MAX:
                first = index
                break
        assert field_names(failure.value) == {f"items[{first}].quantity"}


# --- the cart as shown: totals ---------------------------------------------------------------------------------

lines = st.lists(
    st.tuples(st.sampled_from(SKUS + ("D", "E")), st.integers(min_value=1, max_value=MAX), prices),
    unique_by=lambda line: line[0],
    max_size=5,
)


@PROPERTY_SETTINGS
@given(
    stored=lines,
    current=st.dictionaries(st.sampled_from(SKUS + ("D", "E")), prices),
    status=st.sampled_from(domain.STATUSES),
)
def test_the_total_is_the_sum_of_quantity_times_the_price_shown(stored, current, status):
    cart = {"id": "c", "user_id": "u", "status": status, "created_at": NOW, "updated_at": NOW}
    rows = [
        {"sku": sku, "quantity": quantity, "name": f"stored {sku}", "unit_price_cents": price}
        for sku, quantity, price in stored
    ]
    products = {sku: {"sku": sku, "name": f"current {sku}", "price_cents": price} for sku, price in current.items()}
    shown = domain.build_cart(cart, rows, products)
    assert [item["sku"] for item in shown["items"]] == sorted(sku for sku, _, _ in stored)
    for item, (sku, quantity, stored_price) in zip(shown["items"], sorted(stored), strict=True):
        # An open cart shows the catalog's price where the catalog has one; a checked-out cart its frozen one.
        expected = current[sku] if status == domain.OPEN and sku in current else stored_price
        assert (item["quantity"], item["unit_price_cents"]) == (quantity, expected)
        assert item["line_total_cents"] == quantity * expected
    assert shown["total_cents"] == sum(item["quantity"] * item["unit_price_cents"] for item in shown["items"])


# --- any sequence of add / set / remove, through the store --------------------------------------------------------


class CartArithmetic(RuleBasedStateMachine):
    """One open cart, changed as CartsService.add_item / set_item / remove_item change it (validation, then the
    store's statements, one transaction each), next to a plain dict of what the lines must be."""

    def __init__(self):
        super().__init__()
        self.engine = create_engine("sqlite://")
        Base.metadata.create_all(self.engine)
        self.cart = {"id": "cart-1", "user_id": "user-1", "status": domain.OPEN, "created_at": NOW, "updated_at": NOW}
        with Session(self.engine) as session, session.begin():
            store.insert_cart(session, self.cart, [])
        self.expected = {}  # sku -> quantity
        self.prices = {sku: 100 for sku in SKUS}

    def teardown(self):
        self.engine.dispose()

    def _transaction(self, change):
        """Run `change(session)` in one transaction; rolled back when it raises, as the service's is."""
        with Session(self.engine) as session, session.begin():
            assert store.lock_open_cart(session, self.cart["user_id"], self.cart["id"], NOW)
            change(session)

    @rule(sku=st.sampled_from(SKUS), quantity=quantities)
    def add(self, sku, quantity):
        def change(session):
            rules.validate_quantity(quantity, minimum=1)
            if not store.add_to_line(session, self.cart["id"], sku, quantity, sku, self.prices[sku]):
                raise ValidationFailed.field("quantity", f"the line would exceed {MAX}")

        fits = type(quantity) is int and 1 <= quantity and self.expected.get(sku, 0) + quantity <= MAX
        if fits:
            self._transaction(change)
            self.expected[sku] = self.expected.get(sku, 0) + quantity
        else:
            with pytest.raises(ValidationFailed):
                self._transaction(change)

    @rule(sku=st.sampled_from(SKUS), quantity=quantities)
    def set(self, sku, quantity):
        def change(session):
            rules.validate_quantity(quantity, minimum=0)
            if quantity == 0:
                store.delete_line(session, self.cart["id"], sku)
            else:
                store.set_line(session, self.cart["id"], sku, quantity, sku, self.prices[sku])

        if type(quantity) is int and 0 <= quantity <= MAX:
            self._transaction(change)
            if quantity:
                self.expected[sku] = quantity
            else:
                self.expected.pop(sku, None)
        else:
            with pytest.raises(ValidationFailed):
                self._transaction(change)

    @precondition(lambda self: self.expected)
    @rule(data=st.data())
    def remove(self, data):
        sku = data.draw(st.sampled_from(sorted(self.expected)))
        self._transaction(lambda session: store.delete_line(session, self.cart["id"], sku))
        del self.expected[sku]

    @rule(sku=st.sampled_from(SKUS))
    def remove_absent_line_changes_nothing(self, sku):
        if sku not in self.expected:
            with Session(self.engine) as session, session.begin():
                assert store.delete_line(session, self.cart["id"], sku) is False

    @rule(sku=st.sampled_from(SKUS), price=prices)
    def catalog_reprices(self, sku, price):
        self.prices[sku] = price

    @invariant()
    def lines_match_and_totals_add_up(self):
        with Session(self.engine) as session:
            rows = store.lines_of(session, [self.cart["id"]])[self.cart["id"]]
            cart = store.find_cart(session, self.cart["user_id"], self.cart["id"])
        assert {row["sku"]: row["quantity"] for row in rows} == self.expected
        assert all(1 <= row["quantity"] <= MAX for row in rows)
        products = {sku: {"sku": sku, "name": sku, "price_cents": price} for sku, price in self.prices.items()}
        shown = domain.build_cart(cart, rows, products)
        assert shown["total_cents"] == sum(quantity * self.prices[sku] for sku, quantity in self.expected.items())


CartArithmetic.TestCase.settings = settings(
    max_examples=60,
    stateful_step_count=25,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
test_any_sequence_of_add_set_remove_keeps_the_arithmetic = CartArithmetic.TestCase
