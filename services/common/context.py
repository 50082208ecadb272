"""The request id: carried in nameko context data through every RPC call and event, named in every log line.

The gateway takes the caller's `X-Request-ID` (when it is sane) or makes one; nameko copies context data into
the headers of every RPC request and event a worker sends, so the id reaches every service that works on the
request. `RequestIdFilter` puts it on log records as `%(request_id)s`.
"""

import logging
import re
import uuid

from eventlet.corolocal import local
from nameko.extensions import DependencyProvider
from nameko.web.handlers import HttpRequestHandler

REQUEST_ID_KEY = "request_id"
REQUEST_ID_HEADER = "X-Request-ID"
_SANE_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")

# Each nameko worker runs in its own greenthread, so a greenthread-local holds "the current request".
_current = local()


def new_request_id():
    return uuid.uuid4().hex


def sane_request_id(value):
    """`value` if it is a request id we can safely echo and log, else None."""
    if value and _SANE_REQUEST_ID.match(value):
        return value
    return None


def current_request_id():
    """The request id of the worker running in this greenthread, or None outside a worker."""
    return getattr(_current, "request_id", None)


class RequestId(DependencyProvider):
    """Injects the current request id (a string).

    For an HTTP entrypoint it is the caller's `X-Request-ID` header when sane, else a new one; for RPC and
    event entrypoints it is the id that arrived in the context data, else a new one. It is written back into
    the worker's context data (so outgoing RPC calls and events carry it) before the entrypoint runs, and
    held greenthread-locally for `RequestIdFilter` until the worker is torn down.
    """

    def get_dependency(self, worker_ctx):
        request_id = worker_ctx.data.get(REQUEST_ID_KEY)
        if isinstance(worker_ctx.entrypoint, HttpRequestHandler) and worker_ctx.args:
            request_id = worker_ctx.args[0].headers.get(REQUEST_ID_HEADER)
        request_id = sane_request_id(request_id) or new_request_id()
        worker_ctx.data[REQUEST_ID_KEY] = request_id
        _current.request_id = request_id
        return request_id

    def worker_teardown(self, worker_ctx):
        _current.request_id = None


class RequestIdFilter(logging.Filter):
    """Adds `request_id` to every log record: the current worker's id, or "-" outside a worker."""

    def filter(self, record):
        record.request_id = current_request_id() or "-"
        return True
