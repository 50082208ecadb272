"""Tracing through real containers on the real broker: one HTTP request into a gateway-like service, an RPC call
to a second service, an outbox event to a third; one trace, every parent where it belongs. Also: the OTLP
exporter really posts spans when OTEL_EXPORTER_OTLP_ENDPOINT is set, and nothing is traced when it is not."""

import uuid
from collections import Counter
from dataclasses import dataclass

import eventlet
import pytest
import requests
from eventlet import wsgi
from nameko.events import EventDispatcher, event_handler
from nameko.rpc import rpc
from nameko.standalone.rpc import ServiceRpcProxy
from nameko.testing.utils import find_free_port
from nameko.web.handlers import http
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from sqlalchemy import MetaData

from services.common import tracing
from services.common.context import RequestId
from services.common.db import Database, make_engine
from services.common.messages import Message
from services.common.metrics import Telemetry
from services.common.outbox import Outbox, outbox_table
from services.common.rpc import Rpc
from tests.waiting import wait_until

# --- test services -----------------------------------------------------------------------------------------

OUTBOX_METADATA = MetaData()
outbox_table(OUTBOX_METADATA)


class FrontService:
    """Gateway-like: an HTTP entrypoint that calls `middle` over RPC."""

    name = "front"
    telemetry = Telemetry()
    request_id = RequestId()
    middle = Rpc("middle")

    @http("GET", "/work")
    def work(self, request):
        return self.middle.work()


@dataclass(frozen=True)
class Worked(Message):
    """The middle service did its work."""

    event_type = "worked"
    source = "middle"

    by: str


class MiddleService:
    """Answers the RPC call and emits `worked` through the transactional outbox."""

    name = "middle"
    telemetry = Telemetry()
    request_id = RequestId()
    db = Database("DATABASE_URL")
    emit = Outbox()

    @rpc
    def work(self):
        self.emit(Worked(by="middle"))
        return "done"


class ProducerDispatcher(EventDispatcher):
    """nameko's dispatcher, but the headers are taken when the event is sent (nameko takes them when the
    dependency is injected, before the worker's span exists) and name a PRODUCER span: what the outbox does
    once it calls `tracing.producer_headers`."""

    def get_dependency(self, worker_ctx):
        def dispatch(event_type, payload):
            headers = tracing.producer_headers(worker_ctx, event_type, self.get_message_headers(worker_ctx))
            self.publisher.publish(payload, exchange=self.exchange, routing_key=event_type, extra_headers=headers)

        return dispatch


class AnnouncerService:
    name = "announcer"
    telemetry = Telemetry()
    dispatch = ProducerDispatcher()

    @rpc
    def announce(self):
        self.dispatch("announced", {})


class ListenerService:
    name = "listener"
    telemetry = Telemetry()
    request_id = RequestId()

    @event_handler("middle", "worked")
    def on_worked(self, payload):
        pass

    @event_handler("announcer", "announced")
    def on_announced(self, payload):
        pass


@pytest.fixture
def exporter():
    memory = InMemorySpanExporter()
    tracing.configure(memory)
    yield memory
    tracing.disable()


def wait_for_spans(exporter, names, timeout=10.0):
    """The finished spans once every name in `names` is among them (as many times as it is listed). A span
    ends after its worker has replied, so the caller's answer does not mean every span has ended."""
    wanted = Counter(names)

    def all_ended():
        spans = exporter.get_finished_spans()
        seen = Counter(span.name for span in spans)
        assert all(seen[name] >= count for name, count in wanted.items()), f"got {sorted(s.name for s in spans)}"
        return spans

    return wait_until(all_ended, timeout=timeout, interval=0.02, what=f"spans {sorted(names)} all seen")


def by_name(spans, name):
    [span] = [span for span in spans if span.name == name]
    return span


def parent_of(span, spans):
    if span.parent is None:
        return None
    return next((s for s in spans if s.context.span_id == span.parent.span_id), None)


def test_one_trace_from_http_through_rpc_to_an_event(runner_factory, rabbit_config, tmp_path, exporter):
    url = f"sqlite:///{tmp_path}/middle.db"
    OUTBOX_METADATA.create_all(make_engine(url))
    port = find_free_port()
    config = dict(rabbit_config, DATABASE_URL=url, WEB_SERVER_ADDRESS=f"127.0.0.1:{port}", OUTBOX_POLL_SECONDS=0.1)
    runner = runner_factory(config, FrontService, MiddleService, ListenerService)
    runner.start()

    # The caller's own trace context is honoured: the front span continues it.
    caller_trace_id, caller_span_id = uuid.uuid4().hex, uuid.uuid4().hex[:16]
    request_id = uuid.uuid4().hex
    response = requests.get(
        f"http://127.0.0.1:{port}/work",
        timeout=10,
        headers={"traceparent": f"00-{caller_trace_id}-{caller_span_id}-01", "X-Request-ID": request_id},
    )
    assert response.status_code == 200 and response.text == "done"

    spans = wait_for_spans(exporter, ["front.work", "middle.work", "middle.work", "listener.on_worked"])
    front = by_name(spans, "front.work")
    client = next(s for s in spans if s.name == "middle.work" and s.kind == SpanKind.CLIENT)
    server = next(s for s in spans if s.name == "middle.work" and s.kind == SpanKind.SERVER)
    consumer = by_name(spans, "listener.on_worked")

    assert {format(s.context.trace_id, "032x") for s in (front, client, server, consumer)} == {caller_trace_id}
    assert front.kind == SpanKind.SERVER and format(front.parent.span_id, "016x") == caller_span_id
    assert parent_of(client, spans) is front
    assert parent_of(server, spans) is client
    assert consumer.kind == SpanKind.CONSUMER
    # The event's parent is the middle worker's span, or a PRODUCER span of it once the outbox makes one.
    parent = parent_of(consumer, spans)
    if parent.kind == SpanKind.PRODUCER:
        parent = parent_of(parent, spans)
    assert parent is server

    assert front.resource.attributes["service.name"] == "front"
    assert client.resource.attributes["service.name"] == "front"
    assert server.resource.attributes["service.name"] == "middle"
    assert consumer.resource.attributes["service.name"] == "listener"
    assert server.attributes["cartmesh.request_id"] == request_id
    assert consumer.attributes["cartmesh.request_id"] == request_id
    assert all(s.attributes.get("cartmesh.outcome", "success") == "success" for s in spans)


def test_producer_span_parents_the_event(runner_factory, rabbit_config, exporter):
    runner = runner_factory(rabbit_config, AnnouncerService, ListenerService)
    runner.start()
    with ServiceRpcProxy("announcer", rabbit_config) as announcer:
        announcer.announce()

    spans = wait_for_spans(exporter, ["announcer.announce", "announcer.announced publish", "listener.on_announced"])
    worker = by_name(spans, "announcer.announce")
    producer = by_name(spans, "announcer.announced publish")
    consumer = by_name(spans, "listener.on_announced")
    assert producer.kind == SpanKind.PRODUCER and parent_of(producer, spans) is worker
    assert parent_of(consumer, spans) is producer
    assert len({s.context.trace_id for s in (worker, producer, consumer)}) == 1


class FailingService:
    name = "failing"
    telemetry = Telemetry()

    @rpc
    def explode(self):
        raise RuntimeError("boom")


class CallsFailing:
    name = "calls_failing"
    telemetry = Telemetry()
    failing = Rpc("failing")
    absent = Rpc("absent", timeout=0.5)

    @rpc
    def call(self):
        try:
            self.failing.explode()
        except Exception as exc:
            return type(exc).__name__

    @rpc
    def call_absent(self):
        try:
            self.absent.anything()
        except Exception as exc:
            return type(exc).__name__


def test_failures_mark_spans(runner_factory, rabbit_config, exporter):
    runner = runner_factory(rabbit_config, FailingService, CallsFailing)
    runner.start()
    with ServiceRpcProxy("calls_failing", rabbit_config) as caller:
        assert caller.call() == "RemoteError"
        assert caller.call_absent() == "ServiceUnavailable"

    spans = wait_for_spans(
        exporter, ["failing.explode", "failing.explode", "absent.anything", "calls_failing.call_absent"]
    )
    server = next(s for s in spans if s.name == "failing.explode" and s.kind == SpanKind.SERVER)
    assert server.attributes["cartmesh.outcome"] == "error"
    assert not server.status.is_ok and server.status.description == "RuntimeError"
    unavailable = by_name(spans, "absent.anything")
    assert unavailable.kind == SpanKind.CLIENT and not unavailable.status.is_ok
    assert unavailable.attributes["error.type"] == "ServiceUnavailable"


class OtlpReceiver:
    """A stand-in OTLP/HTTP collector on localhost: keeps what is posted to /v1/traces."""

    def __init__(self):
        self.requests = []
        self.socket = eventlet.listen(("127.0.0.1", 0))
        self.port = self.socket.getsockname()[1]
        self.thread = eventlet.spawn(wsgi.server, self.socket, self.app, log_output=False)

    def app(self, environ, start_response):
        body = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
        self.requests.append((environ["PATH_INFO"], environ.get("CONTENT_TYPE"), body))
        start_response("200 OK", [("Content-Type", "application/x-protobuf")])
        return [b""]

    def close(self):
        self.thread.kill()


class PlainService:
    name = "plain"
    telemetry = Telemetry()

    @rpc
    def ping(self):
        return "pong"


def test_otlp_export_only_when_the_endpoint_is_set(container_factory, rabbit_config, monkeypatch):
    tracing.disable()
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_ENDPOINT", raising=False)
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", raising=False)
    monkeypatch.setitem(tracing._state, "from_env_checked", False)
    assert tracing.configure_from_env() is False

    receiver = OtlpReceiver()
    try:
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", f"http://127.0.0.1:{receiver.port}")
        monkeypatch.setitem(tracing._state, "from_env_checked", False)
        container = container_factory(PlainService, rabbit_config)
        container.start()  # Telemetry.setup reads the environment
        assert tracing.enabled()
        with ServiceRpcProxy("plain", rabbit_config) as plain:
            assert plain.ping() == "pong"

        # nameko replies before the worker's span ends (worker_result comes after the reply): flush until the
        # span has gone out.
        def posted():
            tracing.force_flush()
            return receiver.requests

        wait_until(posted, timeout=10, interval=0.02, what="a span posted to the OTLP endpoint")

        assert receiver.requests, "nothing was posted to the OTLP endpoint"
        path, content_type, body = receiver.requests[0]
        assert path == "/v1/traces" and content_type == "application/x-protobuf"
        exported = ExportTraceServiceRequest.FromString(body)
        names = [
            span.name
            for resource_spans in exported.resource_spans
            for scope_spans in resource_spans.scope_spans
            for span in scope_spans.spans
        ]
        assert "plain.ping" in names
    finally:
        tracing.disable()
        receiver.close()
