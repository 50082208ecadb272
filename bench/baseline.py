"""The minimal Nameko baseline that `make bench` measures in the same run as Cartmesh.

Two services, each its own `nameko run` process like the real ones: an `@http` entrypoint that makes one RPC
call to a service holding a dict in memory. No database, no auth, no logging, no validation: what is left is
the cost of Nameko itself (HTTP in, one RPC over RabbitMQ, JSON out), which every Cartmesh throughput is
divided by, so that a noisy or slower machine moves both sides of the ratio alike.

The same `@http` service also answers `GET /cached/<key>` from the dict itself, with no RPC: the ceiling of a
gateway that answers from memory, which the gateway's cache hits are compared with.

    nameko run --config bench/baseline.yml bench.baseline:BaselineStore
    nameko run --config bench/baseline.yml bench.baseline:BaselineHttp   # GET /items/<key>, GET /cached/<key>
"""

import json

from nameko.rpc import RpcProxy, rpc
from nameko.web.handlers import http
from werkzeug.wrappers import Response

# About the size of a product: what GET /products/{sku} carries.
ITEMS = {
    f"ITEM-{number:03d}": {
        "sku": f"ITEM-{number:03d}",
        "name": f"Baseline item {number}",
        "description": "A thing kept in memory.",
        "price_cents": 100 + number,
        "stock": 1000,
    }
    for number in range(100)
}


class BaselineStore:
    """The in-memory backend: one RPC method."""

    name = "bench_baseline_store"

    @rpc
    def get_item(self, key):
        return ITEMS.get(key)


class BaselineHttp:
    """The HTTP front: one route, one RPC call, a JSON answer."""

    name = "bench_baseline_http"

    store = RpcProxy("bench_baseline_store")

    @http("GET", "/items/<string:key>")
    def get_item(self, request, key):
        return answer(self.store.get_item(key))

    @http("GET", "/cached/<string:key>")
    def get_cached_item(self, request, key):
        return answer(ITEMS.get(key))


def answer(item):
    if item is None:
        return Response(json.dumps({"error": "not found"}), status=404, mimetype="application/json")
    return Response(json.dumps(item), mimetype="application/json")
