"""The gateway's product read cache: `GET /products/{sku}` and `GET /products` pages answered from memory.

Catalog reads are most of the traffic, and each is an RPC and a query. Each gateway instance keeps products and
list pages in a bounded cache (least recently used out, and a TTL as a safety net) and drops them when catalog
announces a change:

- **every instance hears every change**: `ProductEvents` is a broadcast event handler (each instance its own
  exclusive queue, not a competing consumer on a shared one) for `product_changed`, which catalog emits through
  its outbox with every create, update and stock change. A change drops the product and every list page.
- **the instance that made a change drops it at once** (routes.py), so its own next read sees its write.
- **a read that started before a change never stores what it read after the change** (`ReadCache`: every
  invalidation takes a number from a generation counter; a fill stores its value only if nothing invalidated its
  key or the whole cache since the fill started).
- **events missed while disconnected**: the broadcast queue is exclusive, so it goes with the connection, and
  with it any event published meanwhile. Each time the queue is declared again (after any reconnection) the whole
  cache is cleared.
- the TTL (`CACHE_TTL_SECONDS`) bounds the staleness of anything the above misses.

Consistency promise: after a change committed in catalog, the instance that made it answers the new value at
once; every other instance as soon as the event reaches it (milliseconds, while the broker is up), and never
later than the TTL. Errors (404) are not cached.
"""

import time
from collections import Counter, OrderedDict

from nameko.events import BROADCAST, EventHandler
from nameko.extensions import DependencyProvider

from services.common import metrics

DEFAULT_MAX_ENTRIES = 10000
DEFAULT_TTL_SECONDS = 30.0
PRODUCTS, PAGES = "products", "product_pages"


class ReadCache:
    """A bounded map (LRU, and entries expire `ttl_seconds` after they were stored) filled by the readers.

    `get(key, load)` → (value, hit): the cached value, else `load()`, stored unless `invalidate(key)` or `clear()`
    ran while `load()` did. Plain Python: under eventlet nothing here yields except inside `load()`, so no lock.
    `max_entries` or `ttl_seconds` of 0 turns the cache off (every get loads).
    """

    def __init__(self, max_entries=DEFAULT_MAX_ENTRIES, ttl_seconds=DEFAULT_TTL_SECONDS, clock=time.monotonic):
        self.max_entries = int(max_entries)
        self.ttl_seconds = float(ttl_seconds)
        self.clock = clock
        self.entries = OrderedDict()  # key -> (expires_at, value), least recently used first
        self.generation = 0  # taken by every invalidation
        self.cleared_at = 0  # generation of the last clear()
        self.invalidated_at = {}  # key -> generation of its last invalidation, kept while a fill of it runs
        self.filling = Counter()  # key -> fills running

    @property
    def enabled(self):
        return self.max_entries > 0 and self.ttl_seconds > 0

    def get(self, key, load):
        entry = self.entries.get(key)
        if entry is not None:
            expires_at, value = entry
            if self.clock() < expires_at:
                self.entries.move_to_end(key)
                return value, True
            del self.entries[key]
        if not self.enabled:
            return load(), False
        started = self.generation
        self.filling[key] += 1
        try:
            value = load()
            if self.cleared_at <= started and self.invalidated_at.get(key, 0) <= started:
                self._store(key, value)
            return value, False
        finally:
            self.filling[key] -= 1
            if not self.filling[key]:
                del self.filling[key]
                self.invalidated_at.pop(key, None)

    def invalidate(self, key):
        self.generation += 1
        self.entries.pop(key, None)
        if key in self.filling:
            self.invalidated_at[key] = self.generation

    def clear(self):
        self.generation += 1
        self.cleared_at = self.generation
        self.entries.clear()

    def __len__(self):
        return len(self.entries)

    def _store(self, key, value):
        self.entries[key] = (self.clock() + self.ttl_seconds, value)
        self.entries.move_to_end(key)
        while len(self.entries) > self.max_entries:
            self.entries.popitem(last=False)


class ProductCache(DependencyProvider):
    """Injects the container's product cache (this provider): `product(sku, load)` and `page(params, load)`
    answer from memory or from `load()` (the RPC call), `changed(sku)` drops what a change of `sku` makes stale,
    `clear()` drops everything. Holds nothing per worker and commits nothing.

    Config: `CACHE_MAX_ENTRIES` (products, and as many list pages; 0: no cache) and `CACHE_TTL_SECONDS`.
    Counts hits and misses in `cartmesh_cache_requests_total`, invalidations in
    `cartmesh_cache_invalidations_total`.
    """

    def setup(self):
        config = self.container.config
        size = config.get("CACHE_MAX_ENTRIES", DEFAULT_MAX_ENTRIES)
        ttl = config.get("CACHE_TTL_SECONDS", DEFAULT_TTL_SECONDS)
        self.products = ReadCache(size or 0, ttl or 0)
        self.pages = ReadCache(size or 0, ttl or 0)
        self.service = self.container.service_name
        for name in (PRODUCTS, PAGES):  # series exist from the start
            metrics.CACHE_REQUESTS.labels(self.service, name, "hit")
            metrics.CACHE_REQUESTS.labels(self.service, name, "miss")
            metrics.CACHE_INVALIDATIONS.labels(self.service, name)

    def get_dependency(self, worker_ctx):
        return self

    def product(self, sku, load):
        return self._read(self.products, PRODUCTS, sku, load)

    def page(self, params, load):
        """`params`: the listing's arguments as a dict (limit, offset, q)."""
        return self._read(self.pages, PAGES, tuple(sorted(params.items())), load)

    def changed(self, sku):
        """A product changed (or may have): drop it, and every list page (any of them may show it)."""
        self.products.invalidate(sku)
        self.pages.clear()
        metrics.cache_invalidated(self.service, PRODUCTS)
        metrics.cache_invalidated(self.service, PAGES)

    def clear(self):
        self.products.clear()
        self.pages.clear()
        metrics.cache_invalidated(self.service, PRODUCTS)
        metrics.cache_invalidated(self.service, PAGES)

    def _read(self, cache, name, key, load):
        value, hit = cache.get(key, load)
        if cache.enabled:
            metrics.cache_read(self.service, name, hit)
        return value


class ProductEvents(EventHandler):
    """nameko's event handler, as a broadcast (every instance of the service gets every event, on an exclusive
    queue of its own that goes away with it) without reliable delivery, that also clears the service's
    `ProductCache` each time its queue is declared, that is after every (re)connection to the broker: events
    published while this instance was disconnected never reached it.

        @ProductEvents.decorator("catalog", "product_changed")
        def on_product_changed(self, payload): ...
    """

    def __init__(self, source_service, event_type, **kwargs):
        super().__init__(source_service, event_type, handler_type=BROADCAST, reliable_delivery=False, **kwargs)

    # nameko's QueueConsumer reads `queue` when it sets up its consumers: after every (re)connection.
    @property
    def queue(self):
        if self._queue is not None:
            for provider in self.container.dependencies:
                if isinstance(provider, ProductCache):
                    provider.clear()
        return self._queue

    @queue.setter
    def queue(self, queue):
        self._queue = queue


product_events = ProductEvents.decorator
