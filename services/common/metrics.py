"""Prometheus metrics of every Cartmesh service, and `Telemetry`: the one dependency that makes a service seen.

    from services.common.metrics import Telemetry

    class CartsService:
        telemetry = Telemetry()

With it, every worker of the service is counted by outcome and timed (`cartmesh_entrypoint_*`), counted while
in flight, traced (services.common.tracing), and ends with one log line (services.common.logs); the process
serves `/metrics`, `/health/live` and `/health/ready` on `METRICS_PORT` (services.common.probes).

The metrics live in the process's default registry, next to prometheus_client's process collector (CPU,
memory, open files). Every label value comes from the code (service, entrypoint and target names, a fixed set
of kinds, outcomes and reasons), never from a request, so the number of series is bounded.
"""

import logging
import time
from contextlib import contextmanager

from nameko.events import EventHandler
from nameko.extensions import DependencyProvider
from nameko.messaging import Consumer
from nameko.rpc import Rpc
from nameko.timer import Timer
from nameko.web.handlers import HttpRequestHandler
from prometheus_client import Counter, Gauge, Histogram, disable_created_metrics

from services.common import logs, probes, tracing
from services.common.errors import CartmeshError, ServiceTimeout, ServiceUnavailable

log = logging.getLogger(__name__)

# No `*_created` series beside every counter and histogram: they double the series and nothing here reads them.
disable_created_metrics()

# Seconds: from a cached read (1 ms) to a sweep or an RPC call that hit its timeout.
BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
OUTCOMES = ("success", "expected_error", "error")
RPC_FAILURE_REASONS = ("timeout", "unavailable", "circuit_open")
HTTP_METHODS = {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"}

ENTRYPOINT_CALLS = Counter(
    "cartmesh_entrypoint_calls_total",
    "Workers finished, by entrypoint and outcome (success, expected_error: one of the entrypoint's "
    "expected_exceptions or an HTTP 4xx, error: anything else or an HTTP 5xx).",
    ["service", "entrypoint", "kind", "outcome"],
)
ENTRYPOINT_DURATION = Histogram(
    "cartmesh_entrypoint_duration_seconds",
    "How long workers ran, by entrypoint.",
    ["service", "entrypoint", "kind"],
    buckets=BUCKETS,
)
WORKERS_IN_FLIGHT = Gauge("cartmesh_workers_in_flight", "Workers running now.", ["service"])
RPC_CLIENT_DURATION = Histogram(
    "cartmesh_rpc_client_duration_seconds",
    "How long outgoing RPC calls took, answered or not, by target service.",
    ["service", "target"],
    buckets=BUCKETS,
)
RPC_CLIENT_FAILURES = Counter(
    "cartmesh_rpc_client_failures_total",
    "Outgoing RPC calls that got no answer: timeout (the target consumes but did not answer in time), "
    "unavailable (nothing consumes the target's queue, or the broker is away) or circuit_open (refused by the "
    "caller's circuit breaker, never sent).",
    ["service", "target", "reason"],
)
RPC_CLIENT_RETRIES = Counter(
    "cartmesh_rpc_client_retries_total",
    "Outgoing reads sent a second time after a timeout or unavailable.",
    ["service", "target"],
)
CIRCUIT_STATE = Gauge(
    "cartmesh_circuit_state",
    "The caller's circuit breaker to a target service: 0 closed, 1 half-open, 2 open.",
    ["service", "target"],
)
CACHE_REQUESTS = Counter(
    "cartmesh_cache_requests_total",
    "Reads of an in-process cache, by result (hit or miss).",
    ["service", "cache", "result"],
)
CACHE_INVALIDATIONS = Counter(
    "cartmesh_cache_invalidations_total",
    "Entries dropped from an in-process cache because their source changed (a key, or the whole cache).",
    ["service", "cache"],
)
OUTBOX_BACKLOG = Gauge("cartmesh_outbox_backlog", "Events recorded in the outbox and not yet published.", ["service"])
HTTP_REQUESTS = Counter(
    "cartmesh_http_requests_total",
    "HTTP requests answered, by route template and status code.",
    ["service", "method", "route", "status"],
)
HTTP_DURATION = Histogram(
    "cartmesh_http_request_duration_seconds",
    "How long HTTP requests took, by route template.",
    ["service", "method", "route"],
    buckets=BUCKETS,
)


# Checked in order: EventHandler is a Consumer.
_KINDS = ((HttpRequestHandler, "http"), (Rpc, "rpc"), (EventHandler, "event"), (Timer, "timer"), (Consumer, "consumer"))


def entrypoint_kind(entrypoint):
    """rpc, event, http, timer or consumer, from the entrypoint's class (else its class name, lower case)."""
    for cls, kind in _KINDS:
        if isinstance(entrypoint, cls):
            return kind
    return type(entrypoint).__name__.lower()


def _http_status(result):
    status = getattr(result, "status_code", None)
    if status is None and isinstance(result, tuple) and result and isinstance(result[0], int):
        status = result[0]
    return status or 200


def _http_detail(worker_ctx, result):
    """`GET /carts/... 200` for the log line of an HTTP worker; the path escaped (the caller chose it: it must
    not forge log lines)."""
    request = worker_ctx.args[0] if worker_ctx.args else None
    if request is None:
        return None
    target = f"{request.method} {request.path}".encode("unicode_escape").decode("ascii")
    return f"{target} {_http_status(result)}"


def outcome_of(entrypoint, kind, result, exc_info):
    """success, expected_error or error, for a worker of `entrypoint` that ended with `result`/`exc_info`."""
    if exc_info is not None:
        return "expected_error" if isinstance(exc_info[1], entrypoint.expected_exceptions) else "error"
    if kind == "http":
        status = _http_status(result)
        if status >= 500:
            return "error"
        if status >= 400:
            return "expected_error"
    return "success"


def _is_call_failure(exc):
    # A service's own expected error (NotFound, Conflict...) is an answer, not a failed call.
    return not isinstance(exc, CartmeshError) or isinstance(exc, (ServiceTimeout, ServiceUnavailable))


def rpc_client_series(service, target_service):
    """Make the outgoing-call series of `service` to `target_service` exist (at 0) from the start, so rates and
    dashboards do not wait for the first failure (the `Rpc` dependency calls it at set-up)."""
    RPC_CLIENT_DURATION.labels(service, target_service)
    for reason in RPC_FAILURE_REASONS:
        RPC_CLIENT_FAILURES.labels(service, target_service, reason)


@contextmanager
def rpc_call(worker_ctx, target_service, method_name):
    """Around one outgoing RPC call (services.common.rpc's TimedMethodProxy): times it, counts a timeout or an
    unavailable target, and traces it as a CLIENT span (see tracing.outgoing_headers)."""
    started = time.perf_counter()
    reason = None
    try:
        with tracing.client_span(worker_ctx, target_service, method_name, is_failure=_is_call_failure):
            yield
    except ServiceTimeout:
        reason = "timeout"
        raise
    except ServiceUnavailable:
        reason = "unavailable"
        raise
    finally:
        service = worker_ctx.service_name
        _child(RPC_CLIENT_DURATION, service, target_service).observe(time.perf_counter() - started)
        if reason:
            RPC_CLIENT_FAILURES.labels(service, target_service, reason).inc()


_children = {}


def _child(metric, *labels):
    """`metric.labels(*labels)`, looked up once (prometheus_client takes a lock and builds a key every time)."""
    key = (metric, labels)
    child = _children.get(key)
    if child is None:
        child = _children[key] = metric.labels(*labels)
    return child


def rpc_call_refused(service, target_service):
    """A call the caller's circuit breaker refused (services.common.rpc): counted, never sent."""
    RPC_CLIENT_FAILURES.labels(service, target_service, "circuit_open").inc()


def rpc_call_retried(service, target_service):
    RPC_CLIENT_RETRIES.labels(service, target_service).inc()


def set_circuit_state(service, target_service, state):
    """`state`: services.common.breaker's closed, half_open or open."""
    CIRCUIT_STATE.labels(service, target_service).set(("closed", "half_open", "open").index(state))


def cache_read(service, cache, hit):
    CACHE_REQUESTS.labels(service, cache, "hit" if hit else "miss").inc()


def cache_invalidated(service, cache):
    CACHE_INVALIDATIONS.labels(service, cache).inc()


def set_outbox_backlog(service, count):
    """The outbox relay reports how many events wait to be published (after each pass)."""
    OUTBOX_BACKLOG.labels(service).set(count)


def observe_http(service, method, route, status, seconds):
    """One answered HTTP request. `route` must be the route *template* (`/carts/{id}`), or `unmatched`
    for a path no route matches, never the raw path: label values must stay few."""
    method = method.upper() if method and method.upper() in HTTP_METHODS else "other"
    _child(HTTP_REQUESTS, service, method, route, str(int(status))).inc()
    _child(HTTP_DURATION, service, method, route).observe(seconds)


class Telemetry(DependencyProvider):
    """Measures, traces and logs every worker of its service, and serves the process's probes.

    Per worker: `cartmesh_workers_in_flight` while it runs; when it ends, `cartmesh_entrypoint_calls_total`
    by outcome and `cartmesh_entrypoint_duration_seconds`, its span ended (tracing.start_worker_span), and the
    one log line `rpc carts.get_cart success in 3.2 ms` with `duration` and `outcome` as fields (for an HTTP
    worker the request's method, path and status too: `http gateway.handle GET /carts/... 200 success in 3.2 ms`,
    the request's only line). Log lines the worker writes carry its service, entrypoint and request id. Injects
    nothing (the attribute is None). Never fails a worker: a fault here is logged and the worker goes on.

    At set-up, for the whole process: tracing is configured from the environment (services.common.tracing, once
    per process), the service's name is registered for log lines written outside workers (services.common.logs),
    and the process's probe server is started or joined (services.common.probes, `METRICS_PORT`).
    """

    def __init__(self):
        self.started_at = {}  # worker_ctx -> (perf_counter at setup, kind)
        self.in_flight = set()
        self.probe_server = None
        self.series = {}  # (entrypoint, kind) -> (calls by outcome, duration): the label lookups done once

    def setup(self):
        tracing.configure_from_env()
        service = self.container.service_name
        logs.register_service(service)
        # Series exist (at 0) from the start, so rates and dashboards do not wait for the first failure.
        self.in_flight_gauge = WORKERS_IN_FLIGHT.labels(service)
        for entrypoint in self.container.entrypoints:
            self._series(entrypoint)
        self.probe_server = probes.attach(self)

    def _series(self, entrypoint):
        key = (entrypoint.method_name, entrypoint_kind(entrypoint))
        series = self.series.get(key)
        if series is None:
            service, (name, kind) = self.container.service_name, key
            calls = {outcome: ENTRYPOINT_CALLS.labels(service, name, kind, outcome) for outcome in OUTCOMES}
            series = self.series[key] = (kind, calls, ENTRYPOINT_DURATION.labels(service, name, kind))
        return series

    def stop(self):
        probes.detach(self)

    def kill(self):
        probes.detach(self)

    def get_dependency(self, worker_ctx):
        return None

    def worker_setup(self, worker_ctx):
        try:
            kind = self._series(worker_ctx.entrypoint)[0]
            self.in_flight_gauge.inc()
            self.in_flight.add(worker_ctx)
            trace_id = tracing.start_worker_span(worker_ctx, kind)
            logs.bind_worker(
                worker_ctx.service_name, worker_ctx.entrypoint.method_name, worker_ctx.data.get("request_id"), trace_id
            )
            self.started_at[worker_ctx] = time.perf_counter()
        except Exception:
            log.exception("telemetry could not set up %s", worker_ctx)

    def worker_result(self, worker_ctx, result=None, exc_info=None):
        started_at = self.started_at.pop(worker_ctx, None)
        if started_at is None:
            return
        try:
            duration = time.perf_counter() - started_at
            entrypoint = worker_ctx.entrypoint
            kind, calls, duration_histogram = self._series(entrypoint)
            outcome = outcome_of(entrypoint, kind, result, exc_info)
            calls[outcome].inc()
            duration_histogram.observe(duration)
            tracing.end_worker_span(worker_ctx, outcome, exc_info[1] if exc_info else None)
            detail = _http_detail(worker_ctx, result) if kind == "http" else None
            logs.log_worker_end(kind, worker_ctx.service_name, entrypoint.method_name, duration, outcome, detail)
        except Exception:
            log.exception("telemetry could not record %s", worker_ctx)

    def worker_teardown(self, worker_ctx):
        self.started_at.pop(worker_ctx, None)
        if worker_ctx in self.in_flight:
            self.in_flight.discard(worker_ctx)
            self.in_flight_gauge.dec()
        tracing.end_worker_span(worker_ctx, "error")  # only if worker_result never ran
        logs.unbind_worker()
