"""What the web server answers outside a worker is in the error envelope too (never werkzeug's HTML)."""

from nameko.exceptions import ContainerBeingKilled
from werkzeug.routing import Map, Rule
from werkzeug.test import Client

from gateway_http.server import EnvelopedWsgiApp, EveryRequest


class BrokenProvider:
    def handle_request(self, request):
        raise RuntimeError("secret internals")


class FakeServer:
    def make_url_map(self):
        return Map([Rule("/only", methods=["GET"], endpoint=BrokenProvider())])


def test_routing_failures_and_crashes_outside_a_worker_are_enveloped():
    client = Client(EnvelopedWsgiApp(FakeServer()))

    missing = client.get("/elsewhere", headers={"X-Request-ID": "outside-1"})
    assert (missing.status_code, missing.get_json()["error"]["code"]) == (404, "not_found")
    assert missing.headers["X-Request-ID"] == "outside-1"

    wrong = client.post("/only")
    assert (wrong.status_code, wrong.get_json()["error"]["code"]) == (405, "method_not_allowed")
    assert "GET" in wrong.headers["Allow"]
    assert wrong.headers["X-Request-ID"]  # made here when the caller sent none

    crash = client.get("/only", headers={"X-Request-ID": "bad id"})
    assert (crash.status_code, crash.get_json()["error"]["code"]) == (500, "internal_error")
    assert "secret" not in crash.get_data(as_text=True)
    assert crash.headers["X-Request-ID"] != "bad id"
    assert crash.headers["Content-Type"] == "application/json; charset=utf-8"


def test_a_worker_that_cannot_run_is_enveloped():
    entrypoint = EveryRequest()
    stopping = entrypoint.response_from_exception(ContainerBeingKilled())
    assert (stopping.status_code, stopping.get_json()["error"]["code"]) == (503, "service_unavailable")
    broken = entrypoint.response_from_exception(TypeError("signature"))
    assert (broken.status_code, broken.get_json()["error"]["code"]) == (500, "internal_error")


def test_the_entrypoint_matches_every_path_and_method():
    url_map = Map()
    rules = EveryRequest().get_url_rule()
    rules.endpoint = "gateway"
    url_map.add(rules)
    adapter = url_map.bind("gateway")
    for method, path in [("GET", "/"), ("DELETE", "/a/b/c"), ("PATCH", "/carts/x"), ("OPTIONS", "/x.json")]:
        assert adapter.match(path, method=method)[0] == "gateway"
