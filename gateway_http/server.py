"""nameko's HTTP entrypoint, bent to the gateway's needs: one entrypoint for every path and method.

nameko's `WsgiApp` answers unknown paths and wrong methods itself, with werkzeug's HTML pages. Here a single
entrypoint takes every request, so routing (404, 405) happens in the worker like everything else, with a request
id and the error envelope. `GatewayServer` envelopes whatever still escapes (a failure before a worker runs),
and writes no access log of its own: the worker logs each request with its request id. Every answer that
leaves through the WSGI app gets the security headers and the CORS policy (security.py); CORS preflights are
answered there, without a worker.

Before the app, eventlet's HTTP protocol reads the request line and headers; `GatewayProtocol` bounds them
(config `MAX_URL_BYTES` → 414, `MAX_HEADER_LINE_BYTES` / `MAX_HEADER_BYTES` → 431, malformed framing → 400),
cuts slow clients off (`HTTP_KEEPALIVE_SECONDS` for an idle connection or a dripping request line,
`HTTP_HEADER_TIMEOUT_SECONDS` for the headers → 408, `HTTP_SOCKET_TIMEOUT_SECONDS` for any one read or write)
and answers its refusals in the error envelope instead of eventlet's plain text.
"""

import json
import logging
import socket
from dataclasses import dataclass
from http import HTTPStatus

import eventlet
from eventlet import wsgi
from nameko.exceptions import ConfigurationError, ContainerBeingKilled
from nameko.web.handlers import HttpRequestHandler
from nameko.web.server import HttpOnlyProtocol, WebServer, WsgiApp
from werkzeug.exceptions import HTTPException, MethodNotAllowed
from werkzeug.routing import Map, Rule, RuleFactory
from werkzeug.wrappers import Request

from gateway_http.errors import HttpError, internal_error, method_not_allowed, not_found
from gateway_http.http import JSON_CONTENT_TYPE, error_response
from gateway_http.security import CorsPolicy, preflight_refused, secure_headers
from services.common.context import REQUEST_ID_HEADER, new_request_id, sane_request_id
from services.common.listening import bind_exclusive

log = logging.getLogger(__name__)


def _with_request_id(response, request):
    # Only when no worker ran (no RequestId provider): echo the caller's id or make one here.
    if REQUEST_ID_HEADER not in response.headers:
        response.headers[REQUEST_ID_HEADER] = (
            sane_request_id(request.headers.get(REQUEST_ID_HEADER)) or new_request_id()
        )
    return response


class EnvelopedWsgiApp(WsgiApp):
    """nameko's WSGI app, with the error envelope for anything answered outside a worker, the security headers
    on every answer and the CORS policy `cors` (none by default)."""

    def __init__(self, server, cors=None):
        super().__init__(server)
        self.cors = cors or CorsPolicy()
        # The EveryRequest entrypoint, when it is the server's only one: it takes every path and method.
        endpoints = {rule.endpoint for rule in self.url_map.iter_rules()}
        sole = endpoints.pop() if len(endpoints) == 1 else None
        self.sole_provider = sole if isinstance(sole, EveryRequest) else None

    def __call__(self, environ, start_response):
        request = Request(environ, shallow=True)
        preflight = self.cors.enabled and self.cors.is_preflight(request.method, request.headers)
        if preflight:
            response = self.cors.preflight(request.headers) or error_response(preflight_refused())
            response.headers.add("Vary", "Origin")
        else:
            response = self.serve(request, environ)
            self.cors.apply(response.headers, request.headers.get("Origin"))
        secure_headers(response.headers, response.status_code, "Authorization" in request.headers)
        return _with_request_id(response, request)(environ, start_response)

    def serve(self, request, environ):
        try:
            provider = self.sole_provider
            if provider is not None:  # it takes every path and method: nothing to match
                request.path_values = {}
            else:
                provider, request.path_values = self.url_map.bind_to_environ(environ).match()
            return provider.handle_request(request)
        except MethodNotAllowed as exc:
            return error_response(method_not_allowed(exc.valid_methods or ()))
        except HTTPException:
            return error_response(not_found())
        except Exception:
            log.exception("unhandled error outside a worker: %s %r", request.method, request.path)
            return error_response(internal_error())


@dataclass(frozen=True)
class HttpLimits:
    """What the HTTP protocol accepts before the app sees a request (defaults: eventlet's sizes, and timeouts
    that a working client never meets)."""

    max_url_bytes: int = wsgi.MAX_REQUEST_LINE  # the whole request line
    max_header_line_bytes: int = wsgi.MAX_HEADER_LINE
    max_header_bytes: int = 32 * 1024
    keepalive_seconds: float = 30.0  # an idle kept-alive connection, and the request line, within this
    header_timeout_seconds: float = 10.0  # all the headers within this after the request line
    socket_timeout_seconds: float = 30.0  # any one read or write

    @classmethod
    def from_config(cls, config):
        names = {
            "max_url_bytes": "MAX_URL_BYTES",
            "max_header_line_bytes": "MAX_HEADER_LINE_BYTES",
            "max_header_bytes": "MAX_HEADER_BYTES",
            "keepalive_seconds": "HTTP_KEEPALIVE_SECONDS",
            "header_timeout_seconds": "HTTP_HEADER_TIMEOUT_SECONDS",
            "socket_timeout_seconds": "HTTP_SOCKET_TIMEOUT_SECONDS",
        }
        values = {}
        for field, name in names.items():
            value = config.get(name)
            if value not in (None, ""):
                kind = type(getattr(cls, field))
                values[field] = kind(value)
                if values[field] <= 0:
                    raise ConfigurationError(f"{name} must be above 0, not {value!r}")
        return cls(**values)


# The codes of what the protocol refuses; 400 is also what Python's parser says for a malformed request line.
_REFUSALS = {
    400: ("bad_request", "The request is not well-formed HTTP."),
    408: ("request_timeout", "The request did not arrive in time."),
    414: ("uri_too_long", "The request line is too long."),
    431: ("request_header_fields_too_large", "The request headers are too large."),
    505: ("http_version_not_supported", "This HTTP version is not supported."),
}


_LINGER_SECONDS = 1.0
_LINGER_BYTES = 256 * 1024


class _BoundedHeaders(wsgi.FileObjectForHeaders):
    """eventlet's header reader with the gateway's limits instead of its module-wide constants."""

    def __init__(self, fp, max_line, max_total):
        super().__init__(fp)
        self.max_line = max_line
        self.max_total = max_total

    def readline(self, size=-1):
        line = self.fp.readline(self.max_line + 1)
        if len(line) > self.max_line:
            raise wsgi.HeaderLineTooLong()
        self.total_header_size += len(line)
        if self.total_header_size > self.max_total:
            raise wsgi.HeadersTooLarge()
        return line


class GatewayProtocol(HttpOnlyProtocol):
    """eventlet's HTTP protocol (as nameko uses it) with `HttpLimits` (the server's `limits`), answering its
    refusals in the error envelope. Every refusal closes the connection."""

    def _read_request_line(self):
        line = b""
        # eventlet bounds each read of the request line by the keep-alive time; this bounds the whole line.
        with eventlet.Timeout(self.server.limits.keepalive_seconds, False):
            line = super()._read_request_line()
        if len(line) >= self.server.url_length_limit:
            self.refuse(414)
            return b""
        return line

    def parse_request(self):
        limits = self.server.limits
        self.rfile = _BoundedHeaders(
            getattr(self.rfile, "fp", self.rfile), limits.max_header_line_bytes, limits.max_header_bytes
        )
        timer = eventlet.Timeout(limits.header_timeout_seconds)
        try:
            parsed = super().parse_request()
        except (wsgi.HeaderLineTooLong, wsgi.HeadersTooLarge):
            self.refuse(431)
            return False
        except eventlet.Timeout as exc:
            if exc is not timer:
                raise
            self.refuse(408)
            return False
        finally:
            timer.cancel()
        if parsed and not self._framing_is_sane():
            self.refuse(400)
            return False
        return parsed

    def _framing_is_sane(self):
        # What eventlet would refuse in plain text after parsing, refused here first: a Content-Length that is
        # not one plain number, or one together with Transfer-Encoding.
        if getattr(self, "headers", None) is None:  # an HTTP/0.9 request has none
            return True
        lengths = self.headers.get_all("Content-Length") or []
        if len(set(lengths)) > 1 or any(not value.strip().isdigit() for value in lengths):
            return False
        return not (lengths and "Transfer-Encoding" in self.headers)

    def send_error(self, code, message=None, explain=None):
        # Python's parser calls this for a malformed request line or headers; its page would be HTML.
        self.refuse(code if code in _REFUSALS else 400)

    def refuse(self, status):
        code, message = _REFUSALS[status]
        body = json.dumps(HttpError(status, code, message).body()).encode("utf-8")
        headers = secure_headers({}, status, authenticated=False)
        headers.update(
            {
                "Content-Type": JSON_CONTENT_TYPE,
                "Content-Length": str(len(body)),
                REQUEST_ID_HEADER: new_request_id(),
                "Connection": "close",
            }
        )
        head = (
            f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\n"
            + "".join(f"{name}: {value}\r\n" for name, value in headers.items())
            + "\r\n"
        )
        log.info(
            "refused before the app: %s %s from %s (request %s)",
            status,
            code,
            self.client_address[0],
            headers[REQUEST_ID_HEADER],
        )
        self.close_connection = True
        try:
            self.wfile.write(head.encode("latin-1") + body)
            self.wfile.flush()
            self._linger()
        except OSError:
            pass  # the client is gone; nothing to tell it

    def _linger(self):
        # Closing with unread request bytes makes the kernel send a reset, which can destroy the answer before
        # the client reads it: say we are done, then read and drop what it still sends, briefly.
        self.connection.shutdown(socket.SHUT_WR)
        with eventlet.Timeout(_LINGER_SECONDS, False):
            drained = 0
            while drained < _LINGER_BYTES and (chunk := self.connection.recv(16 * 1024)):
                drained += len(chunk)


class GatewayServer(WebServer):
    """nameko's web server with `EnvelopedWsgiApp` (CORS from config `CORS_ORIGINS`), `GatewayProtocol` with
    `HttpLimits` from config, and without eventlet's access log. It listens on a port of its own: on a port
    another process holds it refuses to start (`StartupRefused`, services/common/listening.py)."""

    def start(self):
        # nameko's, with `bind_exclusive` for `eventlet.listen` (which would share the port: SO_REUSEPORT).
        if not self._starting:
            self._starting = True
            self._sock = bind_exclusive(*self.bind_addr)
            self._sock.settimeout(None)  # as nameko's: accept() waits without a timeout
            self._serv = self.get_wsgi_server(self._sock, self.get_wsgi_app())
            self._gt = self.container.spawn_managed_thread(self.run)

    def get_wsgi_app(self):
        try:
            cors = CorsPolicy.from_config(self.container.config)
        except ValueError as exc:
            raise ConfigurationError(str(exc))
        return EnvelopedWsgiApp(self, cors)

    def make_url_map(self):
        url_map = Map(merge_slashes=False)
        for provider in self._providers:
            rule = provider.get_url_rule()
            rule.endpoint = provider
            url_map.add(rule)
        return url_map

    def get_wsgi_server(self, sock, wsgi_app, protocol=GatewayProtocol, debug=False):
        return wsgi_server(sock, wsgi_app, HttpLimits.from_config(self.container.config), protocol, debug)


def wsgi_server(sock, wsgi_app, limits, protocol=GatewayProtocol, debug=False):
    """eventlet's WSGI server on `sock` with `limits` (read by GatewayProtocol as `server.limits`)."""
    server = wsgi.Server(
        sock,
        sock.getsockname(),
        wsgi_app,
        protocol=protocol,
        debug=debug,
        log=logging.getLogger("nameko.web.server"),
        log_output=False,
        url_length_limit=limits.max_url_bytes,
        keepalive=limits.keepalive_seconds,
        socket_timeout=limits.socket_timeout_seconds,
    )
    server.limits = limits
    return server


class EveryPath(RuleFactory):
    """The werkzeug rules matching every path ("/" included) and every method, for one endpoint."""

    endpoint = None

    def get_rules(self, map):
        yield Rule("/", endpoint=self.endpoint)
        yield Rule("/<path:path>", endpoint=self.endpoint)


class EveryRequest(HttpRequestHandler):
    """An HTTP entrypoint that receives every request; the decorated method is called with the request only."""

    server = GatewayServer()

    def __init__(self, **kwargs):
        super().__init__("*", "/", **kwargs)

    def get_url_rule(self):
        return EveryPath()

    def get_entrypoint_parameters(self, request):
        return (request,), {}

    def check_signature(self, args, kwargs):
        pass  # always (request,): nothing for nameko's inspect.getcallargs to find, on every request

    def response_from_exception(self, exc):
        # The worker's method answers every error itself; this is for a worker that could not run at all.
        if isinstance(exc, ContainerBeingKilled):
            error = HttpError(503, "service_unavailable", "The gateway is shutting down; try again.")
        else:
            log.error("could not run a worker: %r", exc)
            error = internal_error()
        return error_response(error)


every_request = EveryRequest.decorator
