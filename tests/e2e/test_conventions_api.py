"""Contract: Conventions (error envelope for every failure, request ids, JSON everywhere) and the
operations endpoints /health and /openapi.json, on the whole running system."""

import json

import pytest

from tests.e2e.conftest import assert_error


def test_unknown_route_is_404_envelope(anon):
    assert_error(anon.get("/no/such/thing"), 404, "not_found")
    assert_error(anon.post("/nothing-here", json={}), 404, "not_found")


@pytest.mark.parametrize(
    "method, path",
    [
        ("DELETE", "/products"),
        ("PUT", "/auth/token"),
        ("GET", "/auth/register"),
        ("POST", "/me"),
        ("PATCH", "/carts"),
    ],
)
def test_known_path_wrong_method_is_405(anon, method, path):
    response = anon.request(method, path)
    assert_error(response, 405, "method_not_allowed")
    assert response.headers.get("Allow")


@pytest.mark.parametrize("raw", [b"{not json", b"[1, 2]", b'"text"', b"", b"\xff\xfe{}"])
def test_bad_json_is_400(anon, raw):
    response = anon.post("/auth/register", data=raw, headers={"Content-Type": "application/json"})
    assert_error(response, 400, "bad_request")


def test_non_json_content_type_is_415(user):
    response = user.post("/carts", data="items=1", headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert_error(response, 415, "unsupported_media_type")
    response = user.post("/carts", data="{}", headers={"Content-Type": "text/plain"})
    assert_error(response, 415, "unsupported_media_type")


def test_body_over_64_kib_is_413_and_nothing_is_stored(admin, anon):
    body = {"sku": "BIG-1", "name": "Big", "description": "d" * (70 * 1024), "price_cents": 1, "stock": 1}
    assert_error(admin.post("/products", json=body), 413, "payload_too_large")
    chunked = (part for part in [json.dumps(body).encode()])  # no Content-Length: a chunked body
    assert_error(
        admin.post("/products", data=chunked, headers={"Content-Type": "application/json"}), 413, "payload_too_large"
    )
    assert_error(anon.get("/products/BIG-1"), 404, "not_found")


def test_json_with_charset_is_accepted(anon):
    response = anon.post(
        "/auth/token",
        data=json.dumps({"email": "nobody@example.com", "password": "whatever1"}),
        headers={"Content-Type": "application/json; charset=utf-8"},
    )
    assert_error(response, 401, "unauthorized")


def test_request_id_is_echoed_when_sane_and_made_otherwise(anon):
    echoed = anon.get("/products", headers={"X-Request-ID": "trace-abc_123"})
    assert echoed.headers["X-Request-ID"] == "trace-abc_123"
    error = anon.get("/nowhere", headers={"X-Request-ID": "trace-err-1"})
    assert error.headers["X-Request-ID"] == "trace-err-1"
    made = anon.get("/products", headers={"X-Request-ID": "bad id\twith spaces" + "x" * 200})
    assert made.headers["X-Request-ID"] and made.headers["X-Request-ID"] != "bad id"
    first, second = anon.get("/products"), anon.get("/products")
    assert first.headers["X-Request-ID"] != second.headers["X-Request-ID"]


def test_success_responses_are_json(anon):
    response = anon.get("/products")
    assert response.headers["Content-Type"] == "application/json; charset=utf-8"


def test_health_names_every_service(anon):
    response = anon.get("/health")
    assert response.status_code == 200
    assert response.json() == {
        "status": "ok",
        "services": {"accounts": "ok", "catalog": "ok", "carts": "ok", "payments": "ok", "orders": "ok"},
    }


def test_openapi_describes_the_served_routes(anon):
    response = anon.get("/openapi.json")
    assert response.status_code == 200
    spec = response.json()
    assert spec["openapi"].startswith("3.")
    expected = {
        "/auth/register": {"post"},
        "/auth/token": {"post"},
        "/me": {"get"},
        "/products": {"get", "post"},
        "/products/{sku}": {"get", "patch"},
        "/carts": {"get", "post"},
        "/carts/{id}": {"get", "delete"},
        "/carts/{id}/items": {"post"},
        "/carts/{id}/items/{sku}": {"put", "delete"},
        "/carts/{id}/checkout": {"post"},
        "/orders": {"get"},
        "/orders/{id}": {"get"},
        "/orders/{id}/cancel": {"post"},
        "/health": {"get"},
        "/openapi.json": {"get"},
    }
    for path, methods in expected.items():
        assert path in spec["paths"], path
        assert methods <= set(spec["paths"][path]), path
