"""Security headers, the CORS policy, and what the HTTP protocol refuses before the app (over a real socket, in
the error envelope), without a broker."""

import json
import socket

import eventlet
import pytest
from eventlet import wsgi
from werkzeug.datastructures import Headers
from werkzeug.routing import Map, Rule
from werkzeug.test import Client
from werkzeug.wrappers import Response

from gateway_http.http import json_response
from gateway_http.security import ALLOWED_HEADERS, CorsPolicy, secure_headers
from gateway_http.server import EnvelopedWsgiApp, HttpLimits, wsgi_server

SHOP = "https://shop.example.com"


def test_security_headers_and_cache_control_choices():
    authed = secure_headers(Headers({"Cache-Control": "public, max-age=60"}), 200, authenticated=True)
    assert authed["Cache-Control"] == "no-store"  # whatever a handler said
    assert authed["X-Content-Type-Options"] == "nosniff"
    assert authed["X-Frame-Options"] == "DENY"
    assert "frame-ancestors 'none'" in authed["Content-Security-Policy"]
    assert authed["Referrer-Policy"] == "no-referrer"
    public = secure_headers(Headers({"Cache-Control": "public, max-age=60"}), 200, authenticated=False)
    assert public["Cache-Control"] == "public, max-age=60"  # an anonymous success keeps its handler's choice
    assert secure_headers(Headers({"Cache-Control": "max-age=60"}), 404, False)["Cache-Control"] == "no-store"
    assert secure_headers(Headers(), 200, False)["Cache-Control"] == "no-store"  # the default


@pytest.mark.parametrize("spec", ["*", "null", "shop.example.com", "https://shop.example.com/path", "ftp://x"])
def test_cors_refuses_wildcards_and_non_origins(spec):
    with pytest.raises(ValueError):
        CorsPolicy([spec])


def test_cors_config_is_a_comma_list_and_empty_is_off():
    assert not CorsPolicy.from_config({"CORS_ORIGINS": ""}).enabled
    assert not CorsPolicy.from_config({}).enabled
    policy = CorsPolicy.from_config({"CORS_ORIGINS": f" {SHOP}/, http://localhost:3000 "})
    assert policy.allows("https://SHOP.example.com") and policy.allows("http://localhost:3000")
    assert not policy.allows("https://evil.example.com") and not policy.allows(None)


def test_preflight_allowed_only_for_listed_origins_methods_and_headers():
    policy = CorsPolicy([SHOP], max_age=120)
    ok = policy.preflight(
        Headers(
            {
                "Origin": SHOP,
                "Access-Control-Request-Method": "PUT",
                "Access-Control-Request-Headers": "authorization, content-type, idempotency-key",
            }
        )
    )
    assert ok.status_code == 204
    assert ok.headers["Access-Control-Allow-Origin"] == SHOP
    assert ok.headers["Access-Control-Allow-Credentials"] == "true"
    assert set(ok.headers["Access-Control-Allow-Headers"].split(", ")) == set(ALLOWED_HEADERS)
    assert "DELETE" in ok.headers["Access-Control-Allow-Methods"]
    assert ok.headers["Access-Control-Max-Age"] == "120"
    for refused in [
        {"Origin": "https://evil.example.com", "Access-Control-Request-Method": "GET"},
        {"Origin": SHOP, "Access-Control-Request-Method": "TRACE"},
        {"Origin": SHOP, "Access-Control-Request-Method": "GET", "Access-Control-Request-Headers": "X-Evil"},
    ]:
        assert policy.preflight(Headers(refused)) is None


class Provider:
    def __init__(self, response):
        self.response = response

    def handle_request(self, request):
        return self.response()


class FakeServer:
    def make_url_map(self):
        return Map(
            [
                Rule("/ok", methods=["GET"], endpoint=Provider(lambda: json_response(200, {"ok": True}))),
                Rule("/crash", methods=["GET"], endpoint=Provider(lambda: 1 / 0)),
            ]
        )


def app(origins=()):
    return Client(EnvelopedWsgiApp(FakeServer(), CorsPolicy(origins)))


def assert_secure(response):
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["X-Frame-Options"] == "DENY"
    assert response.headers["Referrer-Policy"] == "no-referrer"
    assert response.headers["X-Request-ID"]


def test_every_answer_of_the_app_has_the_headers_even_outside_a_worker():
    client = app()
    for path, status in [("/ok", 200), ("/missing", 404), ("/crash", 500)]:
        response = client.get(path)
        assert response.status_code == status
        assert_secure(response)
        assert response.headers["Cache-Control"] == "no-store"
        assert "Access-Control-Allow-Origin" not in response.headers and "Vary" not in response.headers


def test_cors_on_answers_and_preflights_through_the_app():
    client = app([SHOP])
    allowed = client.get("/ok", headers={"Origin": SHOP})
    assert allowed.headers["Access-Control-Allow-Origin"] == SHOP
    assert allowed.headers["Access-Control-Allow-Credentials"] == "true"
    assert set(allowed.headers["Access-Control-Expose-Headers"].split(", ")) == {"X-Request-ID", "Retry-After"}
    assert "Origin" in allowed.headers["Vary"]
    foreign = client.get("/ok", headers={"Origin": "https://evil.example.com"})
    assert foreign.status_code == 200 and "Access-Control-Allow-Origin" not in foreign.headers
    preflight = client.options("/carts/x", headers={"Origin": SHOP, "Access-Control-Request-Method": "POST"})
    assert preflight.status_code == 204 and preflight.headers["Access-Control-Allow-Origin"] == SHOP
    assert_secure(preflight)
    denied = client.options(
        "/carts/x", headers={"Origin": "https://evil.example.com", "Access-Control-Request-Method": "POST"}
    )
    assert denied.status_code == 403 and denied.get_json()["error"]["code"] == "forbidden"
    assert "Access-Control-Allow-Origin" not in denied.headers
    assert_secure(denied)


# --- the protocol, over a socket ------------------------------------------------------------------------------

LIMITS = HttpLimits(
    max_url_bytes=256,
    max_header_line_bytes=512,
    max_header_bytes=2048,
    keepalive_seconds=2,
    header_timeout_seconds=0.5,
    socket_timeout_seconds=5,
)


@pytest.fixture
def server():
    """GatewayProtocol with LIMITS in front of an app that answers 200 JSON."""

    def site(environ, start_response):
        return Response('{"ok":true}', content_type="application/json")(environ, start_response)

    sock = eventlet.listen(("127.0.0.1", 0))
    serv = wsgi_server(sock, site, LIMITS)

    def accept():
        while True:
            conn, address = sock.accept()
            conn.settimeout(serv.socket_timeout)
            eventlet.spawn(serv.process_request, [address, conn, wsgi.STATE_IDLE])

    thread = eventlet.spawn(accept)
    yield sock.getsockname()
    thread.kill()
    sock.close()


def exchange(address, data, pause_after=None, pause=0.0):
    """Sends `data` (pausing `pause` s after `pause_after` bytes), returns (status, headers, body) read to EOF."""
    with socket.create_connection(address, timeout=10) as conn:
        if pause_after is None:
            conn.sendall(data)
        else:
            conn.sendall(data[:pause_after])
            eventlet.sleep(pause)  # plays a slow client; the server's deadline is what is under test
            try:
                conn.sendall(data[pause_after:])
            except OSError:
                pass
        received = b""
        while chunk := conn.recv(65536):
            received += chunk
    head, _, body = received.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:])
    return int(lines[0].split()[1]), headers, body


def assert_refused(answer, status, code):
    got_status, headers, body = answer
    assert got_status == status, body
    assert headers["Content-Type"] == "application/json; charset=utf-8"
    assert headers["X-Content-Type-Options"] == "nosniff" and headers["Cache-Control"] == "no-store"
    assert headers["X-Request-ID"] and headers["Connection"] == "close"
    assert json.loads(body)["error"]["code"] == code
    assert int(headers["Content-Length"]) == len(body)


def test_a_sane_request_passes(server):
    status, headers, body = exchange(server, b"GET /ok HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert (status, json.loads(body)) == (200, {"ok": True})


def test_over_long_request_line_is_414_envelope(server):
    assert_refused(exchange(server, b"GET /" + b"a" * 300 + b" HTTP/1.1\r\nHost: x\r\n\r\n"), 414, "uri_too_long")


def test_over_long_header_line_and_too_many_header_bytes_are_431_envelope(server):
    long_line = b"GET /ok HTTP/1.1\r\nHost: x\r\nX-Big: " + b"b" * 600 + b"\r\n\r\n"
    assert_refused(exchange(server, long_line), 431, "request_header_fields_too_large")
    many = b"GET /ok HTTP/1.1\r\n" + b"".join(b"X-H%d: %s\r\n" % (n, b"v" * 100) for n in range(30)) + b"\r\n"
    assert_refused(exchange(server, many), 431, "request_header_fields_too_large")


@pytest.mark.parametrize(
    "raw",
    [
        b"NONSENSE\r\n\r\n",
        b"GET /ok HTTP/9.9\r\nHost: x\r\n\r\n",
        b"POST /ok HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n",
        b"POST /ok HTTP/1.1\r\nHost: x\r\nContent-Length: +5\r\n\r\nhello",
        b"POST /ok HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nabc",
        b"POST /ok HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    ],
)
def test_malformed_requests_are_answered_in_the_envelope(server, raw):
    status, headers, body = exchange(server, raw)
    assert status in (400, 505)
    assert_refused((status, headers, body), status, "bad_request" if status == 400 else "http_version_not_supported")


def test_headers_that_arrive_too_slowly_are_408(server):
    raw = b"GET /ok HTTP/1.1\r\nHost: x\r\nX-Slow: 1\r\n\r\n"
    assert_refused(
        exchange(server, raw, pause_after=len(b"GET /ok HTTP/1.1\r\nHost: x\r\n"), pause=1.5), 408, "request_timeout"
    )


def test_a_client_that_never_finishes_its_request_line_is_cut_off(server):
    with socket.create_connection(server, timeout=10) as conn:
        conn.sendall(b"GET /ok HT")
        conn.settimeout(LIMITS.keepalive_seconds + 5)
        assert conn.recv(100) == b""  # closed by the server (keepalive_seconds), not by our own timeout
