"""The catalog service in a real container on the real broker, on SQLite and PostgreSQL."""

import uuid

import eventlet
import pytest
from eventlet.queue import Empty, Queue
from nameko.cli.run import import_service
from nameko.events import event_handler
from nameko.standalone.rpc import ServiceRpcProxy
from nameko.timer import Timer

from services.catalog.service import CatalogService
from services.common.errors import Conflict, NotFound, ValidationFailed
from services.common.outbox import Outbox

MUG = {"sku": "MUG-1", "name": "Blue mug", "description": "Holds 300 ml", "price_cents": 1250, "stock": 3}
EVENT_TIMEOUT = 5


@pytest.fixture
def catalog_config(service_config, fresh_database):
    return service_config("catalog", DATABASE_URL=fresh_database("catalog"))


def stop_background_work(*containers):
    """Stop what catalog containers do on their own, the expiry sweep and the outbox relay, so that they do
    not query the test's database after it is dropped: nameko's factories kill containers only after every
    other fixture is torn down (a full stop here would cost a second per container)."""
    for container in containers:
        for extension in container.extensions:
            if isinstance(extension, (Timer, Outbox)):
                extension.stop()


@pytest.fixture
def catalog(catalog_config, container_factory):
    """A started catalog container; yields a standalone RPC proxy to it."""
    container = container_factory(CatalogService, catalog_config)
    container.start()
    with ServiceRpcProxy("catalog", catalog_config) as proxy:
        yield proxy
    stop_background_work(container)


@pytest.fixture
def product_events(runner_factory, catalog_config):
    """Runs catalog with a listener service; yields (proxy, queue of the `product_changed` payloads it got)."""
    received = Queue()

    class Listener:
        name = "catalog_listener"

        @event_handler("catalog", "product_changed")
        def on_product_changed(self, payload):
            received.put(payload)

    runner = runner_factory(catalog_config, CatalogService, Listener)
    runner.start()
    with ServiceRpcProxy("catalog", catalog_config) as proxy:
        yield proxy, received
    stop_background_work(*runner.containers)


def next_event(received):
    """The next event's payload without its `event_id` (checked to be there: consumers deduplicate on it)."""
    try:
        payload = dict(received.get(timeout=EVENT_TIMEOUT))
    except Empty:
        pytest.fail(f"no product_changed event within {EVENT_TIMEOUT} s")
    assert isinstance(payload.pop("event_id"), str)
    return payload


def test_create_get_and_get_products(catalog):
    assert catalog.create_product(MUG) == MUG
    plate = catalog.create_product({"sku": "PLATE", "name": "Plate", "price_cents": 0, "stock": 0})
    assert plate == {"sku": "PLATE", "name": "Plate", "description": "", "price_cents": 0, "stock": 0}
    assert catalog.get_product("MUG-1") == MUG
    # For carts' copy, get_products also answers each product's version (1: as created).
    assert catalog.get_products(["PLATE", "nope", "MUG-1", "bad sku", 7, "MUG-1"]) == [
        dict(MUG, version=1),
        dict(plate, version=1),
    ]
    catalog.update_product("MUG-1", {"name": "Red mug"})
    assert catalog.get_products(["MUG-1"]) == [dict(MUG, name="Red mug", version=2)]
    assert catalog.get_products([]) == []
    assert catalog.health() == "ok"


def test_unknown_or_malformed_sku_is_not_found(catalog):
    for sku in ["NOPE", "bad sku", "", None, 12]:
        with pytest.raises(NotFound):
            catalog.get_product(sku)
        with pytest.raises(NotFound):
            catalog.update_product(sku, {"stock": 1})
    with pytest.raises(ValidationFailed):
        catalog.get_products("MUG-1")


def test_duplicate_sku_is_a_conflict_and_keeps_the_first(catalog):
    catalog.create_product(MUG)
    with pytest.raises(Conflict):
        catalog.create_product(dict(MUG, name="Other mug", price_cents=1))
    assert catalog.get_product("MUG-1") == MUG


def test_bad_products_are_refused_and_nothing_is_written(catalog):
    cases = [
        (dict(MUG, price_cents=True), {"price_cents"}),
        (dict(MUG, stock=2.0), {"stock"}),
        (dict(MUG, price_cents="1250"), {"price_cents"}),
        (dict(MUG, stock=-1), {"stock"}),
        (dict(MUG, sku="MUG 1"), {"sku"}),
        (dict(MUG, name=""), {"name"}),
        (dict(MUG, description="d" * 2001), {"description"}),
        (dict(MUG, colour="blue"), {"colour"}),
        ({"sku": "MUG-1"}, {"name", "price_cents", "stock"}),
        ("MUG-1", {"product"}),
    ]
    for product, fields in cases:
        with pytest.raises(ValidationFailed) as failure:
            catalog.create_product(product)
        assert set(failure.value.details["fields"]) == fields
    assert catalog.list_products()["total"] == 0


def test_update_product(catalog):
    catalog.create_product(MUG)
    updated = catalog.update_product("MUG-1", {"price_cents": 999, "stock": 0})
    assert updated == dict(MUG, price_cents=999, stock=0)
    assert catalog.update_product("MUG-1", {"name": "Red mug", "description": ""}) == dict(
        updated, name="Red mug", description=""
    )
    assert catalog.get_product("MUG-1") == dict(updated, name="Red mug", description="")


def test_bad_updates_are_refused_and_change_nothing(catalog):
    catalog.create_product(MUG)
    for changes, fields in [
        ({}, {"changes"}),
        ({"sku": "OTHER"}, {"sku"}),
        ({"stock": True}, {"stock"}),
        ({"name": "New", "price_cents": 1.5}, {"price_cents"}),
        ({"colour": "red"}, {"colour"}),
        (None, {"changes"}),
    ]:
        with pytest.raises(ValidationFailed) as failure:
            catalog.update_product("MUG-1", changes)
        assert set(failure.value.details["fields"]) == fields
    assert catalog.get_product("MUG-1") == MUG


def test_list_pages_in_sku_order(catalog):
    skus = ["b-2", "B-1", "a_9", "A-10", "0-first", "_under", "-dash"]
    for sku in skus:
        catalog.create_product({"sku": sku, "name": f"Item {sku}", "price_cents": 100, "stock": 1})
    everything = catalog.list_products()
    assert [item["sku"] for item in everything["items"]] == sorted(skus)  # byte order, on both backends
    assert (everything["total"], everything["limit"], everything["offset"]) == (7, 20, 0)

    page = catalog.list_products(limit=3, offset=3)
    assert [item["sku"] for item in page["items"]] == sorted(skus)[3:6]
    assert (page["total"], page["limit"], page["offset"]) == (7, 3, 3)
    beyond = catalog.list_products(limit=100, offset=50)
    assert (beyond["items"], beyond["total"]) == ([], 7)


def test_search_is_case_insensitive_on_name_and_description(catalog):
    catalog.create_product(dict(MUG, sku="A", name="Blue MUG", description=""))
    catalog.create_product(dict(MUG, sku="B", name="Plate", description="goes with the mug"))
    catalog.create_product(dict(MUG, sku="C", name="Spoon", description="steel"))
    found = catalog.list_products(q="mUg")
    assert [item["sku"] for item in found["items"]] == ["A", "B"]
    assert found["total"] == 2
    assert catalog.list_products(q="mug", limit=1, offset=1)["items"][0]["sku"] == "B"
    assert catalog.list_products(q="")["total"] == 3
    assert catalog.list_products(q="fork")["total"] == 0


def test_search_takes_wildcards_literally(catalog):
    catalog.create_product(dict(MUG, sku="PCT", name="100% cotton", description=""))
    catalog.create_product(dict(MUG, sku="PLAIN", name="1000 cotton balls", description=""))
    catalog.create_product(dict(MUG, sku="SNAKE", name="snake_case mug", description=""))
    catalog.create_product(dict(MUG, sku="SPACE", name="snake case mug", description=""))
    catalog.create_product(dict(MUG, sku="SLASH", name="either/or", description="back\\slash"))
    assert [item["sku"] for item in catalog.list_products(q="0% c")["items"]] == ["PCT"]
    assert [item["sku"] for item in catalog.list_products(q="%")["items"]] == ["PCT"]
    assert [item["sku"] for item in catalog.list_products(q="e_c")["items"]] == ["SNAKE"]
    assert [item["sku"] for item in catalog.list_products(q="_")["items"]] == ["SNAKE"]
    assert [item["sku"] for item in catalog.list_products(q="r/o")["items"]] == ["SLASH"]
    assert [item["sku"] for item in catalog.list_products(q="k\\s")["items"]] == ["SLASH"]


def test_bad_list_arguments(catalog):
    for arguments, field in [
        ({"limit": 0}, "limit"),
        ({"limit": 101}, "limit"),
        ({"limit": "5"}, "limit"),
        ({"offset": -1}, "offset"),
        ({"offset": True}, "offset"),
        ({"q": 5}, "q"),
        ({"q": "x" * 201}, "q"),
    ]:
        with pytest.raises(ValidationFailed) as failure:
            catalog.list_products(**arguments)
        assert list(failure.value.details["fields"]) == [field]


def test_product_changed_after_create_and_update_but_not_after_a_failure(product_events):
    catalog, received = product_events
    catalog.create_product(MUG)
    assert next_event(received) == {"product": MUG, "product_version": 1}

    with pytest.raises(Conflict):
        catalog.create_product(MUG)
    with pytest.raises(ValidationFailed):
        catalog.update_product("MUG-1", {"stock": -1})
    catalog.update_product("MUG-1", {"stock": 7})
    # The next event is the update's, with the next version: the refused calls announced nothing.
    assert next_event(received) == {"product": dict(MUG, stock=7), "product_version": 2}
    assert received.empty()


def test_each_event_has_its_own_id(product_events):
    catalog, received = product_events
    catalog.create_product(MUG)
    catalog.update_product("MUG-1", {"name": "Red mug"})
    first, second = received.get(timeout=EVENT_TIMEOUT), received.get(timeout=EVENT_TIMEOUT)
    assert first["event_id"] != second["event_id"]
    assert second["product"]["name"] == "Red mug"


def test_concurrent_duplicate_creates_make_one_product(catalog, catalog_config):
    def create(n):
        with ServiceRpcProxy("catalog", catalog_config) as proxy:
            try:
                return proxy.create_product(dict(MUG, name=f"Mug {n}"))
            except Conflict:
                return "conflict"

    results = list(eventlet.GreenPool(10).imap(create, range(10)))
    assert results.count("conflict") == 9
    [winner] = [result for result in results if result != "conflict"]
    assert catalog.get_product("MUG-1") == winner
    assert catalog.list_products()["total"] == 1


def test_concurrent_updates_of_one_product_all_apply(catalog, catalog_config):
    catalog.create_product(MUG)
    fields = {"name": "Renamed", "description": "New text", "price_cents": 1, "stock": 99}

    def update(field):
        with ServiceRpcProxy("catalog", catalog_config) as proxy:
            return proxy.update_product("MUG-1", {field: fields[field]})

    list(eventlet.GreenPool(4).imap(update, fields))
    assert catalog.get_product("MUG-1") == dict(MUG, **fields)


def test_nameko_run_finds_exactly_the_catalog_service():
    assert import_service("services.catalog.service") == [CatalogService]


def test_create_and_update_repeated_with_their_call_ids_apply_once(product_events):
    catalog, received = product_events
    create_id, update_id = uuid.uuid4().hex, uuid.uuid4().hex
    created = catalog.create_product(MUG, call_id=create_id)
    assert catalog.create_product(MUG, call_id=create_id) == created  # not a Conflict: the same call
    updated = catalog.update_product("MUG-1", {"stock": 3}, call_id=update_id)
    catalog.update_product("MUG-1", {"stock": 9}, call_id=update_id)  # a repeat with other arguments changes nothing
    assert catalog.update_product("MUG-1", {"stock": 3}, call_id=update_id) == updated
    assert catalog.get_product("MUG-1") == dict(MUG, stock=3)
    # One event per call applied, none for the repeats.
    assert next_event(received)["product_version"] == 1
    assert next_event(received) == {"product": dict(MUG, stock=3), "product_version": 2}
    assert received.empty()


def test_copies_of_one_create_call_sent_at_once_all_answer_the_product(catalog, catalog_config):
    call_id = uuid.uuid4().hex

    def create(_n):
        with ServiceRpcProxy("catalog", catalog_config) as proxy:
            return proxy.create_product(MUG, call_id=call_id)

    assert list(eventlet.GreenPool(6).imap(create, range(6))) == [MUG] * 6
    assert catalog.list_products()["total"] == 1
