"""The request pipeline without a broker: werkzeug requests through the real route table, with recording stand-ins
for the RPC proxies. Checks the order of the checks, auth, body handling and the answers' shape."""

import io
import json
import logging
import re
import uuid
from contextlib import nullcontext
from functools import partial

import pytest
from werkzeug.test import EnvironBuilder
from werkzeug.wrappers import Request

from gateway_http.auth import Principal, principal_from_claims
from gateway_http.errors import HttpError
from gateway_http.http import client_address
from gateway_http.ratelimit.extensions import guarded_login
from gateway_http.ratelimit.policies import LoginThrottle, RateLimiter
from gateway_http.ratelimit.stores import MemoryStore
from gateway_http.router import Reply, Route, Router
from gateway_http.routes import ROUTES
from services.common.errors import Conflict, ServiceTimeout, Unauthorized
from services.common.rules import CALL_ID_PATTERN
from services.common.tokens import issue_token, verify_token

SECRET = "unit-test-secret-of-a-decent-length!"
USER_ID = "7b0e3a4e-1111-4c4c-9999-0123456789ab"
CART_ID = "0f8fad5b-d9cb-469f-a165-70867728950e"


class Recorder:
    """Stands in for one RPC proxy: records calls, answers `answer` (or raises it if it is an exception)."""

    def __init__(self, answer=None):
        self.answer = answer
        self.calls = []

    def __getattr__(self, method):
        def call(*args, **kwargs):
            self.calls.append((method, args, kwargs))
            if isinstance(self.answer, Exception):
                raise self.answer
            return self.answer

        return call


class NoCache:
    """The gateway's product cache (gateway_http/cache.py), off: every read asks the backend."""

    def product(self, sku, load):
        return load()

    def page(self, params, load):
        return load()

    def changed(self, sku):
        pass


class FakeService:
    """What Router.dispatch needs from a worker's service instance."""

    def __init__(self, answer=None, max_body=200, rate_limit=None, login_guard=None):
        self.request_id = "req-1"
        self.config = {"MAX_BODY_BYTES": max_body}
        self.rate_limit = rate_limit or RateLimiter(MemoryStore(), per_address=0, per_user=0, window=60)
        self.login_guard = login_guard or (lambda email, address: nullcontext())
        self.accounts = Recorder(answer)
        self.catalog = Recorder(answer)
        self.carts = Recorder(answer)
        self.product_cache = NoCache()
        self.health_probe = lambda: {"accounts": "ok", "carts": "ok", "catalog": "ok"}

    def verify_token(self, token):
        return verify_token(SECRET, token)

    def client_address(self, environ):
        return client_address(environ)


def token(admin=False, user_id=USER_ID):
    user = {"id": user_id, "email": "u@example.com", "is_admin": admin}
    return {"Authorization": f"Bearer {issue_token(SECRET, user, 60)}"}


def request(method, path, body=None, headers=None, content_type="application/json", raw=None, chunked=False):
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    environ = EnvironBuilder(
        method=method, path=path, data=data, headers=headers, content_type=content_type if data is not None else None
    ).get_environ()
    if chunked:  # as eventlet presents a chunked body: no Content-Length, the input ends at the last chunk
        environ.pop("CONTENT_LENGTH", None)
        environ["HTTP_TRANSFER_ENCODING"] = "chunked"
        environ["wsgi.input"] = io.BytesIO(data)
    return Request(environ)


ROUTER = Router(ROUTES)


def serve(service, *args, **kwargs):
    response = ROUTER.dispatch(service, request(*args, **kwargs))
    assert response.headers["X-Request-ID"] == "req-1"
    return response


def error_of(response):
    assert response.headers["Content-Type"] == "application/json; charset=utf-8"
    body = response.get_json()
    return response.status_code, body["error"]["code"]


def without_call_id(call):
    """`call` (name, args, kwargs) without its `call_id` keyword, which every write must carry."""
    name, args, kwargs = call
    kwargs = dict(kwargs)
    assert is_call_id(kwargs.pop("call_id", None)), call
    return name, args, kwargs


def is_call_id(value):
    return isinstance(value, str) and re.fullmatch(CALL_ID_PATTERN, value) is not None


def test_handlers_call_the_services_per_the_interfaces():
    service = FakeService(answer={"ok": True})
    assert serve(service, "GET", "/products?limit=5&offset=10&q=tea").get_json() == {"ok": True}
    assert service.catalog.calls == [("list_products", (), {"limit": 5, "offset": 10, "q": "tea"})]

    serve(service, "GET", "/products")
    assert service.catalog.calls[-1] == ("list_products", (), {"limit": 20, "offset": 0, "q": None})
    serve(service, "PATCH", "/products/tea", {"stock": 3}, headers=token(admin=True))
    assert without_call_id(service.catalog.calls[-1]) == ("update_product", ("tea", {"stock": 3}), {})

    created = serve(service, "POST", "/carts", {"items": [{"sku": "tea", "quantity": 2}]}, headers=token())
    assert created.status_code == 201
    assert without_call_id(service.carts.calls[-1]) == (
        "create_cart",
        (USER_ID,),
        {"items": [{"sku": "tea", "quantity": 2}]},
    )
    serve(service, "POST", "/carts", headers=token())  # no body: {}
    assert without_call_id(service.carts.calls[-1]) == ("create_cart", (USER_ID,), {"items": None})
    serve(service, "PUT", f"/carts/{CART_ID.upper()}/items/tea", {"quantity": 0}, headers=token())
    assert without_call_id(service.carts.calls[-1]) == ("set_item", (USER_ID, CART_ID, "tea", 0), {})

    deleted = serve(service, "DELETE", f"/carts/{CART_ID}", headers=token())
    assert (deleted.status_code, deleted.data) == (204, b"")
    assert "Content-Type" not in deleted.headers
    assert without_call_id(service.carts.calls[-1]) == ("delete_cart", (USER_ID, CART_ID), {})


def test_a_write_with_an_idempotency_key_has_the_same_call_id_each_time_and_one_without_a_fresh_one():
    service = FakeService(answer={"ok": True})
    path = f"/carts/{CART_ID}/items"

    def add(key=None, user=None):
        headers = dict(token(user_id=user or USER_ID), **({"Idempotency-Key": key} if key else {}))
        assert serve(service, "POST", path, {"sku": "tea", "quantity": 1}, headers=headers).status_code == 200
        return service.carts.calls[-1][2]["call_id"]

    keyed = add("k-1")
    assert is_call_id(keyed) and add("k-1") == keyed
    assert add("k-2") != keyed
    assert add("k-1", user=str(uuid.uuid4())) != keyed  # a key is its user's
    assert len({add(), add(), keyed}) == 3
    # The same key on another route is another call.
    serve(service, "DELETE", f"/carts/{CART_ID}/items/tea", headers=dict(token(), **{"Idempotency-Key": "k-1"}))
    assert service.carts.calls[-1][2]["call_id"] != keyed


def test_checks_run_in_a_fixed_order():
    service = FakeService(max_body=50)
    big = {"items": [{"sku": "x" * 60, "quantity": 1}]}
    # Unknown route beats everything; then a declared body over the limit; then auth; then the path; then body.
    assert error_of(serve(service, "POST", "/nowhere", big)) == (404, "not_found")
    assert error_of(serve(service, "GET", "/carts/x/items")) == (405, "method_not_allowed")
    assert error_of(serve(service, "POST", f"/carts/{CART_ID}/items", big)) == (413, "payload_too_large")
    assert error_of(serve(service, "POST", "/carts/not-a-uuid/items", {"sku": 1})) == (401, "unauthorized")
    assert error_of(serve(service, "POST", "/carts/not-a-uuid/items", {"sku": 1}, headers=token())) == (
        404,
        "not_found",
    )
    assert error_of(
        serve(service, "POST", f"/carts/{CART_ID}/items", {"sku": 1}, headers=token(), content_type="text/plain")
    ) == (415, "unsupported_media_type")
    assert error_of(serve(service, "POST", f"/carts/{CART_ID}/items", {"sku": 1}, headers=token())) == (
        422,
        "validation_error",
    )
    assert error_of(serve(service, "POST", "/products", {"sku": 1}, headers=token())) == (403, "forbidden")
    assert service.carts.calls == [] and service.catalog.calls == []


class CountingStore(MemoryStore):
    """A memory store that counts its round trips."""

    calls = 0

    def acquire(self, limits, window):
        self.calls += 1
        return super().acquire(limits, window)


def test_the_address_limit_comes_first_and_the_user_limit_after_authentication():
    by_address = FakeService(answer={}, rate_limit=RateLimiter(MemoryStore(), per_address=2, per_user=0, window=60))
    assert [error_of(serve(by_address, "GET", "/nowhere")) for _ in range(2)] == [(404, "not_found")] * 2
    assert error_of(serve(by_address, "GET", "/nowhere")) == (429, "rate_limited")  # before the 404
    assert error_of(serve(by_address, "GET", "/carts", headers=token())) == (429, "rate_limited")  # before the rest

    by_user = FakeService(answer={}, rate_limit=RateLimiter(MemoryStore(), per_address=0, per_user=1, window=60))
    assert serve(by_user, "GET", "/carts", headers=token()).status_code == 200
    assert error_of(serve(by_user, "GET", "/carts")) == (401, "unauthorized")  # not a user yet: no user limit
    assert error_of(serve(by_user, "GET", "/carts/x/items", headers=token())) == (405, "method_not_allowed")
    assert error_of(serve(by_user, "GET", "/carts", headers=token())) == (429, "rate_limited")
    assert serve(by_user, "GET", "/carts", headers=token(user_id=CART_ID)).status_code == 200  # another user


def test_one_rate_limit_round_trip_per_request():
    store = CountingStore()
    service = FakeService(answer={}, rate_limit=RateLimiter(store, per_address=100, per_user=100, window=60))
    serve(service, "GET", "/carts", headers=token())  # the address and the user
    serve(service, "GET", "/nowhere", headers=token())  # the address only
    serve(service, "GET", "/carts")  # 401: the address only
    assert store.calls == 3


def test_the_login_route_is_guarded():
    throttle = LoginThrottle(MemoryStore(), per_pair=1, per_email=0, per_address=0, window=900, max_delay=0)
    service = FakeService(answer=Unauthorized("wrong email or password"), login_guard=partial(guarded_login, throttle))
    credentials = {"email": "ann@example.com", "password": "wrong password"}
    assert error_of(serve(service, "POST", "/auth/token", credentials)) == (401, "unauthorized")
    assert error_of(serve(service, "POST", "/auth/token", credentials)) == (429, "rate_limited")
    assert len(service.accounts.calls) == 1  # the refused attempt never reached accounts


def test_bodies_over_the_limit_are_refused_even_when_chunked():
    service = FakeService(answer={}, max_body=20)
    exactly = b'{"items": []      }'.ljust(20)
    assert len(exactly) == 20
    assert serve(service, "POST", "/carts", raw=exactly, headers=token()).status_code == 201
    assert serve(service, "POST", "/carts", raw=exactly, headers=token(), chunked=True).status_code == 201
    over = exactly + b" "
    assert error_of(serve(service, "POST", "/carts", raw=over, headers=token())) == (413, "payload_too_large")
    assert error_of(serve(service, "POST", "/carts", raw=over, headers=token(), chunked=True)) == (
        413,
        "payload_too_large",
    )


@pytest.mark.parametrize(
    "raw, content_type, status, code",
    [
        (b"{}", "text/plain", 415, "unsupported_media_type"),
        (b"{}", "application/x-www-form-urlencoded", 415, "unsupported_media_type"),
        (b"{}", "application/json; charset=iso-8859-1", 415, "unsupported_media_type"),
        (b"{", "application/json", 400, "bad_request"),
        (b"[1]", "application/json", 400, "bad_request"),
        (b"Infinity", "application/json", 400, "bad_request"),
        (b'{"items": [], "x": NaN}', "application/json", 400, "bad_request"),
        (b'{"items": "\xc3\x28"}', "application/json", 400, "bad_request"),
        (b"[" * 100000, "application/json", 413, "payload_too_large"),
    ],
)
def test_what_is_not_a_json_object_is_refused(raw, content_type, status, code):
    service = FakeService(max_body=1000)
    assert error_of(serve(service, "POST", "/carts", raw=raw, content_type=content_type, headers=token())) == (
        status,
        code,
    )


def test_a_compressed_body_is_unsupported():
    service = FakeService(max_body=1000)
    assert error_of(
        serve(service, "POST", "/carts", raw=b"{}", headers=dict(token(), **{"Content-Encoding": "gzip"}))
    ) == (415, "unsupported_media_type")


def test_deeply_nested_json_is_a_bad_request_not_a_crash():
    service = FakeService(max_body=100000)
    assert error_of(serve(service, "POST", "/carts", raw=b"[" * 50000, headers=token())) == (400, "bad_request")


def test_charset_utf8_is_accepted():
    service = FakeService(answer={})
    for content_type in ("application/json; charset=utf-8", "Application/JSON; Charset=UTF-8"):
        assert (
            serve(service, "POST", "/carts", raw=b"{}", content_type=content_type, headers=token()).status_code == 201
        )


def test_tokens_and_admin():
    service = FakeService(answer={})
    assert error_of(serve(service, "GET", "/carts")) == (401, "unauthorized")
    assert error_of(serve(service, "GET", "/carts", headers={"Authorization": "Token abc"})) == (401, "unauthorized")
    forged = {"Authorization": token()["Authorization"][:-2] + "xx"}
    assert error_of(serve(service, "GET", "/carts", headers=forged)) == (401, "unauthorized")
    assert (
        serve(service, "GET", "/carts", headers={"Authorization": "bearer " + token()["Authorization"][7:]}).status_code
        == 200
    )  # the scheme is case-insensitive
    assert error_of(serve(service, "PATCH", "/products/tea", {"stock": 1}, headers=token())) == (403, "forbidden")
    assert serve(service, "PATCH", "/products/tea", {"stock": 1}, headers=token(admin=True)).status_code == 200


def test_only_a_true_admin_claim_makes_an_admin():
    assert principal_from_claims({"sub": USER_ID, "admin": True}) == Principal(USER_ID, True)
    for claim in ("true", 1, None):
        assert principal_from_claims({"sub": USER_ID, "admin": claim}) == Principal(USER_ID, False)
    for subject in (None, "", 42):
        with pytest.raises(HttpError) as failure:
            principal_from_claims({"sub": subject})
        assert failure.value.status == 401


def test_unknown_query_parameters_are_refused():
    service = FakeService(answer={})
    assert error_of(serve(service, "GET", "/carts?page=2", headers=token())) == (422, "validation_error")
    response = serve(service, "GET", "/products?limit=1&limit=2")
    assert response.get_json()["error"]["details"] == {"fields": {"limit": "given more than once"}}


def test_service_errors_and_bugs(caplog):
    conflict = serve(FakeService(answer=Conflict("the cart is checked out")), "GET", "/carts", headers=token())
    assert conflict.status_code == 409
    assert conflict.get_json() == {"error": {"code": "conflict", "message": "the cart is checked out"}}
    assert error_of(serve(FakeService(answer=ServiceTimeout("slow")), "GET", "/carts", headers=token())) == (
        504,
        "gateway_timeout",
    )

    with caplog.at_level(logging.ERROR, logger="gateway_http"):
        bug = serve(FakeService(answer=ZeroDivisionError("division by zero")), "GET", "/carts", headers=token())
    assert error_of(bug) == (500, "internal_error")
    assert "ZeroDivision" not in bug.get_data(as_text=True)
    [record] = [record for record in caplog.records if record.exc_info]
    assert "req-1" in record.getMessage() and record.exc_info[0] is ZeroDivisionError


def test_handler_reply_sets_the_status():
    service = FakeService()
    service.health_probe = lambda: {"accounts": "ok", "carts": "unavailable"}
    degraded = serve(service, "GET", "/health")
    assert degraded.status_code == 503
    assert degraded.get_json() == {"status": "degraded", "services": {"accounts": "ok", "carts": "unavailable"}}


def test_route_table_rejects_unknown_path_parameters():
    with pytest.raises(ValueError, match="order_id"):
        Route("GET", "/orders/{order_id}", lambda call: None, "s", "d", "t")
    with pytest.raises(ValueError, match="auth"):
        Route("GET", "/x", lambda call: None, "s", "d", "t", auth="root")
    assert (
        Router([Route("GET", "/x", lambda call: Reply(202, [1]), "s", "d", "t")])
        .dispatch(FakeService(), request("GET", "/x"))
        .status_code
        == 202
    )
