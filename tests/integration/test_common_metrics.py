"""`Telemetry` in real containers on the real broker: the metrics move (scraped over HTTP and parsed as
Prometheus exposition), the probes answer (readiness fails when the database goes away, on SQLite and
PostgreSQL), and the JSON log lines of a worker carry its request id, entrypoint, duration and outcome."""

import io
import json
import logging
import os
import uuid

import eventlet
import pytest
import requests
from eventlet.event import Event
from kombu.exceptions import OperationalError
from nameko.events import event_handler
from nameko.rpc import rpc
from nameko.standalone.events import event_dispatcher
from nameko.standalone.rpc import ServiceRpcProxy
from nameko.testing.utils import find_free_port
from nameko.timer import Timer
from nameko.web.handlers import http
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import text

from conftest import create_postgres_database
from services.common import logs, probes
from services.common.context import RequestId
from services.common.db import Database, make_engine
from services.common.errors import EXPECTED, Conflict, ServiceTimeout, ServiceUnavailable
from services.common.metrics import Telemetry, entrypoint_kind, observe_http, set_outbox_backlog
from services.common.rpc import Rpc
from tests.waiting import wait_until

log = logging.getLogger(__name__)

# Set by a test, waited on by MeteredService.hold: a worker that stays in flight until the test lets it go.
RELEASE = {"event": Event()}


class MeteredService:
    name = "metered"
    telemetry = Telemetry()
    request_id = RequestId()
    db = Database("DATABASE_URL")

    @rpc(expected_exceptions=EXPECTED)
    def work(self, mode, card_number=None):
        self.db.execute(text("SELECT 1"))
        log.info("working in mode %s with card_number=%s", mode, card_number)
        if mode == "expected":
            raise Conflict("refused on purpose")
        if mode == "error":
            raise RuntimeError("a bug")
        return "ok"

    @rpc
    def hold(self):
        RELEASE["event"].wait()
        return "released"

    @rpc
    def pause(self, seconds):
        eventlet.sleep(seconds)  # a slow service, for the caller's timeout
        return "late"

    @event_handler("outside", "happened")
    def on_happened(self, payload):
        if payload.get("fail"):
            raise ValueError("bad event")

    @http("GET", "/status/<int:code>")
    def status(self, request, code):
        return code, "answer"


class CallerService:
    name = "meter_caller"
    telemetry = Telemetry()
    metered = Rpc("metered", timeout=0.3)
    absent = Rpc("absent", timeout=0.3)

    @rpc
    def call(self, mode):
        return self.metered.work(mode)

    @rpc
    def call_slow(self):
        try:
            return self.metered.pause(2)
        except ServiceTimeout:
            return "timeout"

    @rpc
    def call_absent(self):
        try:
            return self.absent.anything()
        except ServiceUnavailable:
            return "unavailable"


def scrape(port):
    """{(name, frozenset(labels)): value} of every sample /metrics exposes."""
    response = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=5)
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/plain")
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def value(samples, name, **labels):
    return samples.get((name, frozenset(labels.items())), 0.0)


@pytest.fixture
def sqlite_url(tmp_path):
    """A SQLite database file that exists, as after migrations (readiness refuses a missing file)."""
    url = f"sqlite:///{tmp_path}/data/metered.db"
    engine = make_engine(url)
    engine.connect().close()
    engine.dispose()
    return url


@pytest.fixture
def metered(container_factory, rabbit_config, sqlite_url):
    """A running MeteredService with its probes on a free port: (container, metrics port, web port)."""
    port, web_port = find_free_port(), find_free_port()
    container = container_factory(
        MeteredService,
        dict(
            rabbit_config,
            DATABASE_URL=sqlite_url,
            METRICS_PORT=port,
            METRICS_BIND="127.0.0.1",
            WEB_SERVER_ADDRESS=f"127.0.0.1:{web_port}",
        ),
    )
    container.start()
    return container, port, web_port


def calls(samples, entrypoint, kind, outcome):
    return value(
        samples, "cartmesh_entrypoint_calls_total", service="metered", entrypoint=entrypoint, kind=kind, outcome=outcome
    )


def duration_count(samples, entrypoint, kind):
    return value(
        samples, "cartmesh_entrypoint_duration_seconds_count", service="metered", entrypoint=entrypoint, kind=kind
    )


def test_entrypoint_counters_and_histograms_by_outcome(metered, rabbit_config):
    _, port, web_port = metered
    before = scrape(port)
    # Every series exists from the start, at zero.
    assert (
        "cartmesh_entrypoint_calls_total",
        frozenset(dict(service="metered", entrypoint="work", kind="rpc", outcome="error").items()),
    ) in before
    assert value(before, "process_resident_memory_bytes") > 0
    assert ("process_cpu_seconds_total", frozenset()) in before

    with ServiceRpcProxy("metered", rabbit_config) as service:
        assert service.work("fine") == "ok"
        assert service.work("fine") == "ok"
        with pytest.raises(Conflict):
            service.work("expected")
        with pytest.raises(Exception) as failure:
            service.work("error")
        assert failure.value.exc_type == "RuntimeError"
    dispatch = event_dispatcher(rabbit_config)
    dispatch("outside", "happened", {"fail": False})
    dispatch("outside", "happened", {"fail": True})
    for code in (200, 404, 503):
        assert requests.get(f"http://127.0.0.1:{web_port}/status/{code}", timeout=5).status_code == code

    # Workers are counted after they reply (nameko replies before worker_result): wait for the last ones.
    def every_worker_counted():
        now = scrape(port)
        return (
            duration_count(now, "work", "rpc") - duration_count(before, "work", "rpc") == 4
            and duration_count(now, "on_happened", "event") == 2
            and duration_count(now, "status", "http") == 3
        )

    wait_until(every_worker_counted, what="every worker counted")
    after = scrape(port)
    assert calls(after, "work", "rpc", "success") - calls(before, "work", "rpc", "success") == 2
    assert calls(after, "work", "rpc", "expected_error") - calls(before, "work", "rpc", "expected_error") == 1
    assert calls(after, "work", "rpc", "error") - calls(before, "work", "rpc", "error") == 1
    assert duration_count(after, "work", "rpc") - duration_count(before, "work", "rpc") == 4
    total = value(after, "cartmesh_entrypoint_duration_seconds_sum", service="metered", entrypoint="work", kind="rpc")
    assert total > 0
    assert calls(after, "on_happened", "event", "success") == 1
    assert calls(after, "on_happened", "event", "error") == 1
    # HTTP workers are judged by their status: 4xx is the caller's fault, 5xx the service's.
    assert [calls(after, "status", "http", outcome) for outcome in ("success", "expected_error", "error")] == [1, 1, 1]


def test_in_flight_workers_gauge(metered, rabbit_config):
    _, port, _ = metered
    RELEASE["event"] = Event()

    def in_flight():
        return value(scrape(port), "cartmesh_workers_in_flight", service="metered")

    assert in_flight() == 0
    with ServiceRpcProxy("metered", rabbit_config) as service:
        replies = [service.hold.call_async() for _ in range(2)]
        wait_until(lambda: in_flight() == 2, what="two workers in flight")
        RELEASE["event"].send()
        assert [reply.result() for reply in replies] == ["released", "released"]
    wait_until(lambda: in_flight() == 0, what="no worker in flight")


def test_rpc_client_latency_timeouts_and_unavailable(runner_factory, rabbit_config, sqlite_url):
    port = find_free_port()
    runner = runner_factory(
        dict(rabbit_config, DATABASE_URL=sqlite_url, METRICS_PORT=port, METRICS_BIND="127.0.0.1"),
        MeteredService,
        CallerService,
    )
    runner.start()
    labels = dict(service="meter_caller")
    before = scrape(port)
    with ServiceRpcProxy("meter_caller", rabbit_config) as caller:
        assert caller.call("fine") == "ok"
        assert caller.call_slow() == "timeout"
        assert caller.call_absent() == "unavailable"
    # The caller's client metrics are recorded before it replies; its own worker is counted just after.
    wait_until(
        lambda: (
            value(
                scrape(port),
                "cartmesh_entrypoint_calls_total",
                service="meter_caller",
                entrypoint="call_absent",
                kind="rpc",
                outcome="success",
            )
            >= 1
        ),
        what="caller counted",
    )
    after = scrape(port)

    def delta(name, **extra):
        return value(after, name, **labels, **extra) - value(before, name, **labels, **extra)

    assert delta("cartmesh_rpc_client_duration_seconds_count", target="metered") == 2
    assert delta("cartmesh_rpc_client_duration_seconds_sum", target="metered") >= 0.3  # the timed-out call
    assert delta("cartmesh_rpc_client_failures_total", target="metered", reason="timeout") == 1
    assert delta("cartmesh_rpc_client_failures_total", target="metered", reason="unavailable") == 0
    assert delta("cartmesh_rpc_client_failures_total", target="absent", reason="unavailable") == 1


def test_liveness_readiness_and_a_shared_server(runner_factory, rabbit_config, sqlite_url):
    port = find_free_port()
    runner = runner_factory(
        dict(rabbit_config, DATABASE_URL=sqlite_url, METRICS_PORT=port, METRICS_BIND="127.0.0.1"),
        MeteredService,
        CallerService,
    )
    runner.start()
    base = f"http://127.0.0.1:{port}"
    assert requests.get(f"{base}/health/live", timeout=5).status_code == 200
    ready = requests.get(f"{base}/health/ready", timeout=5)
    assert ready.status_code == 200
    assert ready.json() == {"status": "ok", "checks": {"broker": "ok", "metered.db": "ok"}}
    assert requests.get(f"{base}/nothing", timeout=5).status_code == 404
    assert requests.post(f"{base}/metrics", timeout=5).status_code == 405

    runner.stop()
    with pytest.raises(requests.ConnectionError):  # the last container took the server with it
        requests.get(f"{base}/health/live", timeout=5)


def break_sqlite(url):
    folder = os.path.dirname(url.removeprefix("sqlite:///"))
    os.rename(folder, folder + ".away")
    return lambda: os.rename(folder + ".away", folder)


def test_readiness_fails_when_the_database_goes_away(container_factory, rabbit_config, sqlite_url, db_backend):
    if db_backend == "sqlite":
        url, take_away = sqlite_url, break_sqlite
    else:
        url, drop = create_postgres_database()
        take_away = lambda _url: drop()  # noqa: E731
    port = find_free_port()
    container = container_factory(
        MeteredService, dict(rabbit_config, DATABASE_URL=url, METRICS_PORT=port, METRICS_BIND="127.0.0.1")
    )
    container.start()
    ready_url = f"http://127.0.0.1:{port}/health/ready"
    with ServiceRpcProxy("metered", rabbit_config) as service:
        assert service.work("fine") == "ok"  # the service's own pool now holds a connection
    assert requests.get(ready_url, timeout=5).status_code == 200

    bring_back = take_away(url)
    response = requests.get(ready_url, timeout=10)
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "unavailable" and body["failed"] == ["metered.db"]
    assert body["checks"]["broker"] == "ok" and body["checks"]["metered.db"] != "ok"
    assert requests.get(f"http://127.0.0.1:{port}/health/live", timeout=5).status_code == 200

    if bring_back:  # SQLite: the folder is back, and so is readiness
        bring_back()
        assert requests.get(ready_url, timeout=5).status_code == 200


def test_broker_check_fails_on_a_closed_port():
    check = probes.broker_check(f"amqp://guest:guest@127.0.0.1:{find_free_port()}//", None, 1)
    with pytest.raises((OSError, OperationalError)):
        check()


def test_no_server_without_a_port(container_factory, rabbit_config, sqlite_url):
    container = container_factory(MeteredService, dict(rabbit_config, DATABASE_URL=sqlite_url, METRICS_PORT=0))
    container.start()
    assert probes._servers == {}
    with ServiceRpcProxy("metered", rabbit_config) as service:
        assert service.work("fine") == "ok"


@pytest.fixture
def json_log():
    """Every log line of the test, as the JSON formatter writes it."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logs.Formatter(log_format="json"))
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    yield lambda: [json.loads(line) for line in stream.getvalue().splitlines()]
    root.removeHandler(handler)
    root.setLevel(old_level)


def test_json_log_lines_of_a_worker(metered, rabbit_config, json_log):
    request_id = uuid.uuid4().hex
    with ServiceRpcProxy("metered", rabbit_config, context_data={"request_id": request_id}) as service:
        assert service.work("fine", card_number="4242424242424242") == "ok"
        with pytest.raises(Conflict):
            service.work("expected")

    def finished_lines():
        return [
            line for line in json_log() if line.get("request_id") == request_id and line["logger"] == "cartmesh.worker"
        ]

    # The line is written after the reply has gone (nameko replies before worker_result).
    wait_until(lambda: len(finished_lines()) == 2, what="two worker lines")
    finished = finished_lines()
    lines = [line for line in json_log() if line.get("request_id") == request_id]
    assert [line["outcome"] for line in finished] == ["success", "expected_error"]
    for line in finished:
        assert line["service"] == "metered" and line["entrypoint"] == "work" and line["kind"] == "rpc"
        assert isinstance(line["duration"], float) and line["duration"] >= 0
        assert line["level"] == "INFO" and line["time"].endswith("Z")
    [own] = [line for line in lines if line["message"].startswith("working in mode fine")]
    assert own["entrypoint"] == "work" and own["service"] == "metered"
    assert "4242424242424242" not in json.dumps(json_log())
    assert own["message"].endswith("card_number=[REDACTED]")


def test_entrypoint_kinds_outbox_backlog_and_http_route_metrics():
    assert entrypoint_kind(Timer(interval=1)) == "timer"
    set_outbox_backlog("orders", 7)
    observe_http("gateway", "BREW", "/coffee", 418, 0.01)
    observe_http("gateway", "get", "/carts/{cart_id}", 200, 0.02)
    assert (
        REGISTRY.get_sample_value(
            "cartmesh_http_requests_total", dict(service="gateway", method="other", route="/coffee", status="418")
        )
        >= 1
    )
    assert (
        REGISTRY.get_sample_value(
            "cartmesh_http_request_duration_seconds_count",
            dict(service="gateway", method="GET", route="/carts/{cart_id}"),
        )
        >= 1
    )
    assert REGISTRY.get_sample_value("cartmesh_outbox_backlog", dict(service="orders")) == 7
