"""One request through the route table: match, authorize, path parameters, body, validation, handler, answer.

The checks run in a fixed order, so a request that breaks several rules always gets the same answer:
client address over its rate limit 429 → no route 404 / wrong method 405 → declared body too large 413 →
401/403 → user over its rate limit 429 → malformed path parameter 404 → body read (413; a body that does not
arrive within HTTP_BODY_TIMEOUT_SECONDS 408), content type 415, JSON 400 → body and query rules 422 → the handler
(and the services' errors). Every outcome leaves as JSON carrying the request id. The two rate limits cost one
store call: the route and the user are found first, and their errors answered after the address's verdict.
"""

import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

import eventlet
from eventlet.wsgi import ChunkReadError
from pydantic import BaseModel, ValidationError
from werkzeug.exceptions import HTTPException, MethodNotAllowed
from werkzeug.routing import Map, Rule
from werkzeug.wrappers import Response

from gateway_http.auth import ADMIN, NONE, USER, Principal, authorize
from gateway_http.errors import (
    HttpError,
    bad_request,
    http_error,
    is_expected,
    method_not_allowed,
    not_found,
    validation_error,
)
from gateway_http.http import (
    check_declared_length,
    empty_response,
    error_response,
    json_response,
    parse_json_object,
    query_values,
    read_body,
)
from gateway_http.ratelimit.extensions import rate_limited
from gateway_http.schemas import PATH_PARAMS, field_errors
from services.common.context import REQUEST_ID_HEADER
from services.common.metrics import observe_http

DEFAULT_MAX_BODY_BYTES = 64 * 1024
DEFAULT_BODY_TIMEOUT = 30.0  # seconds for the whole body to arrive
_PARAM = re.compile(r"{(\w+)}")
UNMATCHED = "unmatched"  # the route label of a request no route matches
_ROUTE_KEY = "cartmesh.route"  # where `serve` notes the matched route's template, in the WSGI environ

log = logging.getLogger(__name__)


def request_timeout():
    # The worker is freed at once; eventlet's connection thread then reads or times out what is left of the body.
    return HttpError(408, "request_timeout", "The request body did not arrive in time.")


@dataclass(frozen=True)
class Route:
    """One operation of the public API: what serves it and, from the same record, how /openapi.json shows it."""

    method: str
    path: str  # OpenAPI template; its parameters are named in schemas.PATH_PARAMS, e.g. "/carts/{id}"
    handler: Callable  # handler(call) -> JSON payload, a Reply, or a werkzeug Response (sent as it is)
    summary: str
    description: str  # of the success answer
    tag: str
    status: int = 200  # of the success answer; 204 sends no body
    auth: str = NONE  # NONE, USER or ADMIN
    body: type[BaseModel] | None = None  # the request body's model; None: the route ignores any body
    empty_body: bool = False  # an empty body is validated as {}
    query: type[BaseModel] | None = None  # the query string's model; None: no query parameters allowed
    response: type[BaseModel] | None = None  # documents the success answer
    errors: tuple[int, ...] = ()  # statuses the services may answer besides the gateway's own (documentation)
    alternatives: tuple[tuple[int, str], ...] = ()  # other statuses answered with `response`'s shape
    # (code, when) of the 422s a schema-valid request can still get: rules the schema cannot state (documentation)
    refusals: tuple[tuple[str, str], ...] = ()
    local: bool = False  # answered by the gateway alone, without calling a service
    media_type: str = "application/json"  # of the success answer (documentation; a handler sends the rest)

    def __post_init__(self):
        unknown = set(self.path_params) - set(PATH_PARAMS)
        if unknown:
            raise ValueError(f"{self.method} {self.path}: no rule for path parameters {sorted(unknown)}")
        if self.auth not in (NONE, USER, ADMIN):
            raise ValueError(f"{self.method} {self.path}: unknown auth requirement {self.auth!r}")

    @property
    def path_params(self):
        return _PARAM.findall(self.path)

    @property
    def rule(self):
        """The path as a werkzeug rule: "/carts/<id>"."""
        return _PARAM.sub(r"<\1>", self.path)


@dataclass(frozen=True)
class Call:
    """What a handler is given."""

    service: Any  # the worker's service instance: the RPC proxies are its attributes
    user: Principal | None  # None on routes open to anyone
    path: dict  # path parameters, checked and normalised
    body: BaseModel | None
    query: BaseModel | None
    headers: Any = None  # the request's headers (werkzeug Headers), e.g. for an Idempotency-Key
    client: str | None = None  # the caller's address (behind TRUSTED_PROXIES: the one they forwarded)


class Reply(NamedTuple):
    """A handler's answer when its status is not the route's usual one."""

    status: int
    payload: Any


class Router:
    """Serves requests from a route table.

    `dispatch(service, request)` needs these attributes on `service` (the nameko worker's service instance):
    `request_id`, `config` (MAX_BODY_BYTES, HTTP_BODY_TIMEOUT_SECONDS), `client_address(environ) -> str`,
    `verify_token(token) -> claims`, `rate_limit` (a ratelimit RateLimiter: with its limits at 0 it checks
    nothing, so every service has one and there is one code path), and whatever the handlers use.
    """

    def __init__(self, routes):
        self.routes = tuple(routes)
        self.url_map = Map(
            [Rule(route.rule, methods=[route.method], endpoint=route) for route in self.routes], merge_slashes=False
        )

    def dispatch(self, service, request):
        """The answer to `request`: always a response, never an exception. (The request's log line is the
        worker's, services.common.metrics.Telemetry: method, path, status and duration.)"""
        started = time.monotonic()
        try:
            response = self.serve(service, request)
        except Exception as exc:
            error = http_error(exc)
            if not is_expected(exc) or error.status >= 500:
                # The caller chose the path: escape it so that it cannot forge log lines.
                target = f"{request.method} {request.path}".encode("unicode_escape").decode("ascii")
                if not is_expected(exc):
                    log.exception("unhandled error in %s (request %s)", target, service.request_id)
                else:
                    log.warning("%s: %s", target, error.message)
            response = self.error_response(error)
        response.headers[REQUEST_ID_HEADER] = service.request_id
        # By route template, never the raw path: the label values must stay few.
        observe_http(
            "gateway",
            request.method,
            request.environ.get(_ROUTE_KEY, UNMATCHED),
            response.status_code,
            time.monotonic() - started,
        )
        return response

    @staticmethod
    def error_response(error):
        """The answer for `error`: the JSON envelope (the storefront's router answers a page)."""
        return error_response(error)

    def serve(self, service, request):
        client = service.client_address(request.environ)
        limit = int(service.config.get("MAX_BODY_BYTES") or DEFAULT_MAX_BODY_BYTES)
        try:
            route, raw_params = self.match(request)
            request.environ[_ROUTE_KEY] = route.path
            check_declared_length(request, limit)
            user = authorize(route.auth, request, service.verify_token)
        except HttpError:
            self.within_limit(service.rate_limit.check(client))  # the address's limit comes before these errors
            raise
        self.within_limit(service.rate_limit.check(client, user.id if user else None))
        path = self.path_params(raw_params)
        raw_body = self.read(
            request, limit, float(service.config.get("HTTP_BODY_TIMEOUT_SECONDS") or DEFAULT_BODY_TIMEOUT)
        )
        body = self.body(route, request, raw_body)
        query = self.query(route, request)
        result = route.handler(
            Call(service=service, user=user, path=path, body=body, query=query, headers=request.headers, client=client)
        )
        if isinstance(result, Response):  # not JSON (/metrics): the handler made the whole answer
            return result
        status, payload = result if isinstance(result, Reply) else (route.status, result)
        if status == 204:
            return empty_response()
        return json_response(status, payload)

    @staticmethod
    def within_limit(decision):
        if not decision.allowed:
            raise rate_limited(decision.retry_after)

    @staticmethod
    def read(request, limit, timeout):
        """The body (http.read_body), which must arrive within `timeout` seconds: a client that sends it slowly
        or stops is answered 408 rather than holding a worker."""
        timer = eventlet.Timeout(timeout)
        try:
            return read_body(request, limit)
        except eventlet.Timeout as exc:
            if exc is not timer:
                raise
            raise request_timeout()
        except TimeoutError:  # one read waited HTTP_SOCKET_TIMEOUT_SECONDS
            raise request_timeout()
        except ChunkReadError:
            raise bad_request("The chunked request body is malformed.")
        finally:
            timer.cancel()

    def match(self, request):
        """(route, raw path parameters); 404 for an unknown path, 405 for a known path and another method."""
        adapter = self.url_map.bind("gateway")  # the host plays no part in matching
        try:
            return adapter.match(request.path, method=request.method)
        except MethodNotAllowed as exc:
            raise method_not_allowed(exc.valid_methods)
        except HTTPException:  # no route (or a redirect werkzeug would suggest): nothing here either way
            raise not_found()

    @staticmethod
    def path_params(raw):
        """Checked and normalised path parameters; a malformed one is 404, as if the resource did not exist."""
        params = {}
        for name, value in raw.items():
            pattern, _schema, normalise = PATH_PARAMS[name]
            if not pattern.match(value):
                raise not_found()
            params[name] = normalise(value)
        return params

    @staticmethod
    def body(route, request, raw):
        if route.body is None:
            return None
        data = parse_json_object(request, raw, empty_means_object=route.empty_body)
        try:
            return route.body.model_validate(data)
        except ValidationError as exc:
            raise validation_error("The request body breaks the rules in details.fields.", field_errors(exc))

    @staticmethod
    def query(route, request):
        values = query_values(request)
        if route.query is None:
            if values:
                raise validation_error(
                    "This path takes no query parameters.", {name: "unknown query parameter" for name in values}
                )
            return None
        try:
            return route.query.model_validate(values)
        except ValidationError as exc:
            raise validation_error("The query string breaks the rules in details.fields.", field_errors(exc))
