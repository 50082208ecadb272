"""OpenTelemetry traces across services: a span per worker, per outgoing RPC call and per outbox event.

Off unless `OTEL_EXPORTER_OTLP_ENDPOINT` (or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is set: then spans go out over
OTLP http/protobuf in batches, and the standard `OTEL_*` variables (sampler, headers, resource attributes)
apply. Off, every function here returns after one check. `configure(exporter)` turns tracing on with any
exporter (tests use an in-memory one); `disable()` turns it off again.

The W3C trace context travels in nameko context data under `traceparent` (and `tracestate`), which nameko
copies into the headers of every RPC request and event a worker sends, and back into `worker_ctx.data` on the
receiving side. A worker's span becomes the parent of what the worker sends: `start_worker_span` writes the
span's own `traceparent` into `worker_ctx.data`. RPC calls get a CLIENT span of their own (`client_span`, and
`outgoing_headers` puts it into the request's headers); outbox events a PRODUCER span (`producer_headers`).

Each service gets its own tracer provider, so the spans of several services in one process (tests) still carry
their own `service.name`.
"""

import logging
import os
import threading
from contextlib import contextmanager

from nameko.constants import HEADER_PREFIX
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

log = logging.getLogger(__name__)

TRACEPARENT = "traceparent"
TRACESTATE = "tracestate"
_CONTEXT_KEYS = (TRACEPARENT, TRACESTATE)
ENDPOINT_VARIABLES = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")

_propagator = TraceContextTextMapPropagator()
_lock = threading.Lock()
_state = {"processor": None, "providers": {}, "from_env_checked": False}
# The span (and the context token) of each running worker; keyed by the WorkerContext object itself.
_worker_spans = {}


def enabled():
    return _state["processor"] is not None


def configure(exporter, batch=False):
    """Turn tracing on: every span ends up in `exporter` (batched in the background when `batch`, else exported
    as each span ends)."""
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor

    disable()
    _state["processor"] = BatchSpanProcessor(exporter) if batch else SimpleSpanProcessor(exporter)


def configure_from_env():
    """Turn tracing on with the OTLP http/protobuf exporter when an OTLP endpoint variable is set (once per
    process; later calls only look at a flag). Returns whether tracing is on."""
    if _state["from_env_checked"]:
        return enabled()
    with _lock:
        if not _state["from_env_checked"]:
            _state["from_env_checked"] = True
            wanted = any(os.environ.get(name) for name in ENDPOINT_VARIABLES)
            if wanted and os.environ.get("OTEL_SDK_DISABLED", "").lower() != "true" and not enabled():
                from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

                configure(OTLPSpanExporter(), batch=True)
                log.info(
                    "tracing on: spans are exported over OTLP to %s",
                    os.environ.get(ENDPOINT_VARIABLES[1]) or os.environ.get(ENDPOINT_VARIABLES[0]),
                )
    return enabled()


def disable():
    """Turn tracing off, exporting what is still buffered first."""
    processor = _state["processor"]
    _state["processor"] = None
    _state["providers"] = {}
    if processor is not None:
        processor.shutdown()


def force_flush(timeout_millis=5000):
    if enabled():
        _state["processor"].force_flush(timeout_millis)


def _tracer(service_name):
    providers = _state["providers"]
    provider = providers.get(service_name)
    if provider is None:
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider

        # shutdown_on_exit=False: the processor is shared by every provider; `disable` shuts it down once.
        provider = TracerProvider(resource=Resource.create({"service.name": service_name}), shutdown_on_exit=False)
        provider.add_span_processor(_state["processor"])
        providers[service_name] = provider
    return provider.get_tracer("cartmesh")


def _extract(carrier):
    """The OTel context whose parent is the span named by `carrier`'s `traceparent` (empty when none)."""
    return _propagator.extract({key: carrier[key] for key in _CONTEXT_KEYS if carrier.get(key)})


def _inject(context):
    carrier = {}
    _propagator.inject(carrier, context=context)
    return carrier


def _parent_context(worker_ctx):
    """The context of `worker_ctx`'s own span, else of the trace context that arrived with it."""
    entry = _worker_spans.get(worker_ctx)
    if entry is not None:
        return trace.set_span_in_context(entry[0])
    return _extract(worker_ctx.data)


# Span kinds by entrypoint kind (see metrics.entrypoint_kind).
_SPAN_KINDS = {
    "rpc": SpanKind.SERVER,
    "http": SpanKind.SERVER,
    "event": SpanKind.CONSUMER,
    "consumer": SpanKind.CONSUMER,
}


def start_worker_span(worker_ctx, kind):
    """Start the span of a worker (its entrypoint of `kind`: rpc, event, http, timer...), make it the worker's
    current span and the parent of everything the worker sends. Returns its trace id (hex) or None."""
    if not enabled():
        return None
    entrypoint = worker_ctx.entrypoint
    carrier = worker_ctx.data
    if kind == "http" and worker_ctx.args:  # a caller of the gateway may send its own trace context
        carrier = getattr(worker_ctx.args[0], "headers", None) or {}
    service = worker_ctx.service_name
    attributes = {
        "rpc.system": "nameko",
        "rpc.service": service,
        "rpc.method": entrypoint.method_name,
        "cartmesh.entrypoint.kind": kind,
    }
    request_id = worker_ctx.data.get("request_id")
    if request_id:
        attributes["cartmesh.request_id"] = request_id
    if kind == "event":
        attributes["messaging.source"] = f"{entrypoint.source_service}.{entrypoint.event_type}"
    span = _tracer(service).start_span(
        f"{service}.{entrypoint.method_name}",
        context=_extract(carrier),
        kind=_SPAN_KINDS.get(kind, SpanKind.INTERNAL),
        attributes=attributes,
    )
    context = trace.set_span_in_context(span)
    token = otel_context.attach(context)
    _worker_spans[worker_ctx] = (span, token)
    worker_ctx.data.update(_inject(context))
    return format(span.get_span_context().trace_id, "032x")


def end_worker_span(worker_ctx, outcome, exc=None):
    """End the worker's span, marked with its outcome (success, expected_error, error)."""
    entry = _worker_spans.pop(worker_ctx, None)
    if entry is None:
        return
    span, token = entry
    span.set_attribute("cartmesh.outcome", outcome)
    if exc is not None:
        span.record_exception(exc)
    if outcome == "error":
        span.set_status(Status(StatusCode.ERROR, type(exc).__name__ if exc is not None else None))
    span.end()
    try:
        otel_context.detach(token)
    except Exception:  # ended from another greenthread: nothing is attached there
        pass


@contextmanager
def client_span(worker_ctx, target_service, method_name, is_failure=None):
    """Around one outgoing RPC call: a CLIENT span, child of the worker's span, current while the request is
    sent (`outgoing_headers` reads it). `is_failure(exc)` says whether an exception marks the span as failed
    (default: every exception)."""
    if not enabled():
        yield None
        return
    span = _tracer(worker_ctx.service_name).start_span(
        f"{target_service}.{method_name}",
        context=_parent_context(worker_ctx),
        kind=SpanKind.CLIENT,
        attributes={"rpc.system": "nameko", "rpc.service": target_service, "rpc.method": method_name},
    )
    token = otel_context.attach(trace.set_span_in_context(span))
    try:
        yield span
    except BaseException as exc:
        span.set_attribute("error.type", type(exc).__name__)
        if is_failure is None or is_failure(exc):
            span.record_exception(exc)
            span.set_status(Status(StatusCode.ERROR, type(exc).__name__))
        raise
    finally:
        span.end()
        otel_context.detach(token)


def _header(key):
    return f"{HEADER_PREFIX}.{key}"


def outgoing_headers(headers):
    """`headers` (nameko message headers of an outgoing RPC request) naming the current span as the parent:
    the CLIENT span of `client_span` when inside one. Unchanged when tracing is off or no span is current."""
    if not enabled() or not trace.get_current_span().get_span_context().is_valid:
        return headers
    headers = dict(headers)
    for key, value in _inject(otel_context.get_current()).items():
        headers[_header(key)] = value
    return headers


def producer_headers(worker_ctx, event_type, headers):
    """`headers` (nameko message headers of an event `worker_ctx` emits) naming a new PRODUCER span as the
    event's parent: the outbox calls this when it records the event. Unchanged when tracing is off."""
    if not enabled():
        return headers
    service = worker_ctx.service_name
    span = _tracer(service).start_span(
        f"{service}.{event_type} publish",
        context=_parent_context(worker_ctx),
        kind=SpanKind.PRODUCER,
        attributes={
            "messaging.system": "rabbitmq",
            "messaging.destination.name": f"{service}.events",
            "messaging.rabbitmq.destination.routing_key": event_type,
        },
    )
    span.end()
    headers = dict(headers)
    for key, value in _inject(trace.set_span_in_context(span)).items():
        headers[_header(key)] = value
    return headers
