"""The gateway's read cache (gateway_http/cache.py): LRU, TTL, and no stale value stored by a fill that raced an
invalidation."""

from types import SimpleNamespace

import pytest
from prometheus_client import REGISTRY

from gateway_http.cache import ProductCache, ReadCache


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


@pytest.fixture
def clock():
    return FakeClock()


def loader(value, calls):
    def load():
        calls.append(value)
        return value

    return load


def test_a_hit_does_not_load_again(clock):
    cache, calls = ReadCache(10, 30, clock), []
    assert cache.get("a", loader(1, calls)) == (1, False)
    assert cache.get("a", loader(2, calls)) == (1, True)
    assert calls == [1]


def test_entries_expire_after_the_ttl(clock):
    cache, calls = ReadCache(10, 30, clock), []
    cache.get("a", loader(1, calls))
    clock.now = 29.9
    assert cache.get("a", loader(2, calls)) == (1, True)
    clock.now = 30.0
    assert cache.get("a", loader(2, calls)) == (2, False)


def test_least_recently_used_goes_first_when_full(clock):
    cache, calls = ReadCache(2, 30, clock), []
    cache.get("a", loader("a", calls))
    cache.get("b", loader("b", calls))
    cache.get("a", loader("a", calls))  # a is now the most recently used
    cache.get("c", loader("c", calls))  # evicts b
    assert len(cache) == 2
    assert cache.get("a", loader("A", calls)) == ("a", True)
    assert cache.get("b", loader("B", calls)) == ("B", False)


def test_invalidate_and_clear_drop_entries(clock):
    cache, calls = ReadCache(10, 30, clock), []
    cache.get("a", loader(1, calls))
    cache.get("b", loader(1, calls))
    cache.invalidate("a")
    assert cache.get("a", loader(2, calls)) == (2, False)
    assert cache.get("b", loader(2, calls)) == (1, True)
    cache.clear()
    assert cache.get("b", loader(3, calls)) == (3, False)


def test_a_fill_that_raced_an_invalidation_of_its_key_is_not_stored(clock):
    cache = ReadCache(10, 30, clock)

    def stale_read():
        cache.invalidate("a")  # the change lands (and its event arrives) while this read is out
        return "old"

    assert cache.get("a", stale_read) == ("old", False)  # answered, as a read that began before the change
    assert cache.get("a", lambda: "new") == ("new", False)  # ...but never stored
    assert cache.get("a", lambda: "other") == ("new", True)
    assert cache.invalidated_at == {} and not cache.filling  # bookkeeping ends with the fills


def test_a_fill_that_raced_a_clear_is_not_stored(clock):
    cache = ReadCache(10, 30, clock)

    def stale_read():
        cache.clear()
        return "old"

    cache.get("a", stale_read)
    assert cache.get("a", lambda: "new") == ("new", False)


def test_an_invalidation_of_another_key_does_not_spoil_a_fill(clock):
    cache = ReadCache(10, 30, clock)

    def read():
        cache.invalidate("b")
        return "a1"

    cache.get("a", read)
    assert cache.get("a", lambda: "a2") == ("a1", True)


def test_a_fill_that_began_after_the_invalidation_is_stored(clock):
    cache = ReadCache(10, 30, clock)
    cache.invalidate("a")
    cache.get("a", lambda: "fresh")
    assert cache.get("a", lambda: "other") == ("fresh", True)


def test_a_failed_load_stores_nothing_and_leaves_no_bookkeeping(clock):
    cache = ReadCache(10, 30, clock)

    def failing():
        raise LookupError("404")

    with pytest.raises(LookupError):
        cache.get("a", failing)
    assert len(cache) == 0 and not cache.filling
    assert cache.get("a", lambda: 1) == (1, False)


def test_size_or_ttl_zero_turns_the_cache_off(clock):
    for cache in (ReadCache(0, 30, clock), ReadCache(10, 0, clock)):
        calls = []
        cache.get("a", loader(1, calls))
        cache.get("a", loader(1, calls))
        assert calls == [1, 1] and len(cache) == 0


def provider(**config):
    cache = ProductCache()
    cache.container = SimpleNamespace(config=config, service_name="gateway_unit")
    cache.setup()
    return cache


def sample(cache, result):
    return REGISTRY.get_sample_value(
        "cartmesh_cache_requests_total", {"service": "gateway_unit", "cache": cache, "result": result}
    )


def test_a_product_change_drops_the_product_and_every_page():
    cache = provider(CACHE_MAX_ENTRIES=10, CACHE_TTL_SECONDS=30)
    hits, misses = sample("products", "hit"), sample("products", "miss")
    cache.product("A", lambda: {"sku": "A", "price_cents": 1})
    cache.product("B", lambda: {"sku": "B", "price_cents": 1})
    cache.page({"limit": 20, "offset": 0, "q": None}, lambda: {"items": ["old"]})
    assert cache.product("A", lambda: None) == {"sku": "A", "price_cents": 1}
    assert sample("products", "hit") - hits == 1 and sample("products", "miss") - misses == 2

    cache.changed("A")
    assert cache.product("A", lambda: {"sku": "A", "price_cents": 2}) == {"sku": "A", "price_cents": 2}
    assert cache.product("B", lambda: None) == {"sku": "B", "price_cents": 1}
    assert cache.page({"q": None, "offset": 0, "limit": 20}, lambda: {"items": ["new"]}) == {"items": ["new"]}
    assert cache.page({"limit": 20, "offset": 0, "q": None}, lambda: None) == {"items": ["new"]}


def test_defaults_when_the_config_says_nothing():
    cache = provider()
    assert cache.products.max_entries == 10000 and cache.products.ttl_seconds == 30
