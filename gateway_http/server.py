"""nameko's HTTP entrypoint, bent to the gateway's needs: one entrypoint for every path and method.

nameko's `WsgiApp` answers unknown paths and wrong methods itself, with werkzeug's HTML pages. Here a single
entrypoint takes every request, so routing (404, 405) happens in the worker like everything else, with a request
id and the error envelope. `GatewayServer` envelopes whatever still escapes (a failure before a worker runs),
and writes no access log of its own: the worker logs each request with its request id.
"""
import logging

from eventlet import wsgi
from nameko.exceptions import ContainerBeingKilled
from nameko.web.handlers import HttpRequestHandler
from nameko.web.server import HttpOnlyProtocol, WebServer, WsgiApp
from werkzeug.exceptions import HTTPException, MethodNotAllowed
from werkzeug.routing import Map, Rule, RuleFactory
from werkzeug.wrappers import Request

from gateway_http.errors import HttpError, internal_error, method_not_allowed, not_found
from gateway_http.http import error_response
from services.common.context import REQUEST_ID_HEADER, new_request_id, sane_request_id

log = logging.getLogger(__name__)


def _with_request_id(response, request):
    # Only when no worker ran (no RequestId provider): echo the caller's id or make one here.
    if REQUEST_ID_HEADER not in response.headers:
        response.headers[REQUEST_ID_HEADER] = sane_request_id(request.headers.get(REQUEST_ID_HEADER)) \
            or new_request_id()
    return response


class EnvelopedWsgiApp(WsgiApp):
    """nameko's WSGI app, with the error envelope for anything answered outside a worker."""

    def __call__(self, environ, start_response):
        request = Request(environ, shallow=True)
        try:
            provider, values = self.url_map.bind_to_environ(environ).match()
            request.path_values = values
            response = provider.handle_request(request)
        except MethodNotAllowed as exc:
            response = error_response(method_not_allowed(exc.valid_methods or ()))
        except HTTPException:
            response = error_response(not_found())
        except Exception:
            log.exception("unhandled error outside a worker: %s %r", request.method, request.path)
            response = error_response(internal_error())
        return _with_request_id(response, request)(environ, start_response)


class GatewayServer(WebServer):
    """nameko's web server with `EnvelopedWsgiApp` and without eventlet's access log."""

    def get_wsgi_app(self):
        return EnvelopedWsgiApp(self)

    def make_url_map(self):
        url_map = Map(merge_slashes=False)
        for provider in self._providers:
            rule = provider.get_url_rule()
            rule.endpoint = provider
            url_map.add(rule)
        return url_map

    def get_wsgi_server(self, sock, wsgi_app, protocol=HttpOnlyProtocol, debug=False):
        return wsgi.Server(sock, sock.getsockname(), wsgi_app, protocol=protocol, debug=debug,
                           log=logging.getLogger("nameko.web.server"), log_output=False)


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

    def response_from_exception(self, exc):
        # The worker's method answers every error itself; this is for a worker that could not run at all.
        if isinstance(exc, ContainerBeingKilled):
            error = HttpError(503, "service_unavailable", "The gateway is shutting down; try again.")
        else:
            log.error("could not run a worker: %r", exc)
            error = internal_error()
        return error_response(error)


every_request = EveryRequest.decorator
