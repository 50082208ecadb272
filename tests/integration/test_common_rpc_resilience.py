"""`Rpc` (services/common/rpc.py) against a real broker: reads retried once, writes never, the circuit breaker
opening on calls that get no answer (and not on a service's deliberate errors), then closing after a probe."""

import eventlet
import pytest
from eventlet.event import Event
from nameko.rpc import rpc
from nameko.standalone.rpc import ServiceRpcProxy
from nameko.testing.services import entrypoint_hook, entrypoint_waiter
from nameko.testing.utils import get_container
from prometheus_client import REGISTRY

from services.common.breaker import CircuitOpen
from services.common.errors import EXPECTED, BrokerFailover, NotFound, ServiceTimeout, ServiceUnavailable
from services.common.rpc import Rpc
from services.common.rpc import rpc as resilient_rpc
from tests.broker_proxy import TcpProxy
from tests.waiting import wait_until

CALLS = []  # (method, argument) as the flaky service received them


class FlakyService:
    """Slow the first time it sees a key, fast after: a retry of a timed-out call succeeds."""

    name = "flaky"
    seen = set()

    @rpc(expected_exceptions=EXPECTED)
    def read(self, key):
        return self._answer("read", key)

    @rpc(expected_exceptions=EXPECTED)
    def write(self, key):
        return self._answer("write", key)

    @rpc(expected_exceptions=EXPECTED)
    def missing(self):
        raise NotFound("nothing here")

    def _answer(self, method, key):
        CALLS.append((method, key))
        if key not in self.seen:
            self.seen.add(key)
            eventlet.sleep(1.0)  # over the caller's 0.5 s timeout
        return f"{method} {key}"


class LateService:
    name = "late"

    @rpc
    def read(self, key):
        return f"late {key}"

    @rpc
    def write(self, key):
        return f"late {key}"


class CallerService:
    name = "resilient_caller"
    flaky = Rpc("flaky", timeout=0.5, idempotent=("read", "missing"))
    late = Rpc("late", timeout=0.5, idempotent=("read",))

    @rpc
    def call(self, target, method, *args):
        return getattr(getattr(self, target), method)(*args)


@pytest.fixture(autouse=True)
def fresh_calls():
    CALLS.clear()
    FlakyService.seen = set()


def caller_config(rabbit_config, **settings):
    return dict(rabbit_config, RPC_RETRY_JITTER_SECONDS=0.05, **settings)


def circuit_state(target):
    return REGISTRY.get_sample_value("cartmesh_circuit_state", {"service": "resilient_caller", "target": target})


def test_a_read_is_retried_once_and_a_write_never(runner_factory, rabbit_config):
    runner = runner_factory(caller_config(rabbit_config), FlakyService, CallerService)
    runner.start()
    flaky = get_container(runner, FlakyService)
    retries = {"service": "resilient_caller", "target": "flaky"}
    before = REGISTRY.get_sample_value("cartmesh_rpc_client_retries_total", retries) or 0
    with ServiceRpcProxy("resilient_caller", rabbit_config, timeout=10) as caller:
        assert caller.call("flaky", "read", "a") == "read a"  # the first try timed out, the retry answered
        assert CALLS.count(("read", "a")) == 2
        # Until the write's one slow worker ends: a retry, sent 0.5 s in, would have arrived meanwhile.
        with entrypoint_waiter(flaky, "write"):
            with pytest.raises(ServiceTimeout):
                caller.call("flaky", "write", "b")
        assert CALLS.count(("write", "b")) == 1
        # Deliberate errors are answers: not retried.
        with entrypoint_waiter(flaky, "missing"):
            with pytest.raises(NotFound):
                caller.call("flaky", "missing")
    assert REGISTRY.get_sample_value("cartmesh_rpc_client_retries_total", retries) - before == 1


def test_the_circuit_opens_refuses_at_once_and_closes_after_a_probe(runner_factory, rabbit_config):
    config = caller_config(rabbit_config, BREAKER_FAILURES=3, BREAKER_RESET_SECONDS=0.5)
    runner = runner_factory(config, CallerService)
    runner.start()
    assert circuit_state("late") == 0
    with ServiceRpcProxy("resilient_caller", rabbit_config, timeout=10) as caller:
        # No queue for "late" yet: each try is unavailable at once; a read tries twice, a write once.
        with pytest.raises(ServiceUnavailable) as first:
            caller.call("late", "read", "x")
        assert not isinstance(first.value, CircuitOpen)
        assert circuit_state("late") == 0
        with pytest.raises(ServiceUnavailable) as second:
            caller.call("late", "write", "x")
        assert not isinstance(second.value, CircuitOpen)
        assert circuit_state("late") == 2  # three failures in a row: open
        with pytest.raises(CircuitOpen) as refused:
            caller.call("late", "read", "x")
        assert refused.value.status == 503 and "circuit is open" in refused.value.message
        assert circuit_state("flaky") == 0  # each target has a circuit of its own

        # The service appears; once the pause is over, one probe gets through and closes the circuit.
        runner_factory(rabbit_config, LateService).start()

        def probe():
            try:
                return caller.call("late", "read", "y")
            except CircuitOpen:
                return None  # still open: not yet

        assert wait_until(probe, timeout=10, what="a probe gets through") == "late y"
        assert circuit_state("late") == 0
        assert caller.call("late", "write", "z") == "late z"


def test_deliberate_errors_never_open_the_circuit(runner_factory, rabbit_config):
    runner = runner_factory(caller_config(rabbit_config, BREAKER_FAILURES=2), FlakyService, CallerService)
    runner.start()
    with ServiceRpcProxy("resilient_caller", rabbit_config, timeout=10) as caller:
        for _ in range(5):
            with pytest.raises(NotFound):
                caller.call("flaky", "missing")
        FlakyService.seen = {"z"}
        assert caller.call("flaky", "write", "z") == "write z"
    assert circuit_state("flaky") == 0


class SlowReplyService:
    name = "slow_reply"
    working = None  # an eventlet Event: a worker has started

    @resilient_rpc
    def slow(self, seconds):
        if not SlowReplyService.working.ready():
            SlowReplyService.working.send()
        eventlet.sleep(seconds)
        return "done"


@pytest.fixture
def proxy():
    """Set up before the containers, so torn down after them: they stop while it still forwards."""
    proxy = TcpProxy()
    yield proxy
    proxy.close()


def test_a_reply_the_broker_cannot_take_does_not_kill_the_service(proxy, container_factory, rabbit_config):
    proxied = rabbit_config["AMQP_URI"].replace("localhost:5672", f"127.0.0.1:{proxy.port}")
    assert proxied != rabbit_config["AMQP_URI"]
    container = container_factory(SlowReplyService, dict(rabbit_config, AMQP_URI=proxied))
    container.start()
    SlowReplyService.working = Event()
    with ServiceRpcProxy("slow_reply", rabbit_config, timeout=60) as caller:
        caller.slow.call_async(0.3)
        SlowReplyService.working.wait()
        proxy.cut()  # the broker goes away while the worker runs: its reply cannot be sent
        try:
            wait_until(lambda: not container._worker_threads, timeout=30, interval=0.1, what="the worker ended")
            assert not container._died.ready()  # nameko's own entrypoint would have killed the container
        finally:
            proxy.restore()
        assert caller.slow(0) == "done"  # reconnected by itself, and serving


def test_a_write_after_the_broker_came_back_goes_out_on_a_new_connection(
    proxy, runner_factory, container_factory, rabbit_config
):
    proxied = rabbit_config["AMQP_URI"].replace("localhost:5672", f"127.0.0.1:{proxy.port}")
    runner_factory(rabbit_config, FlakyService).start()
    caller = container_factory(CallerService, caller_config(dict(rabbit_config, AMQP_URI=proxied)))
    caller.start()
    replies = next(dependency for dependency in caller.dependencies if isinstance(dependency, Rpc))
    FlakyService.seen = {"before", "after"}  # fast answers
    with entrypoint_hook(caller, "call") as call:
        assert call("flaky", "write", "before") == "write before"
        # The broker went away and came back: the connection the caller published on is dead. The publish is
        # retried once, at once, on a new connection (a write is never sent twice: the first try did not leave).
        consumer = replies.calls.reply_queue.consumer
        connections = consumer.connections
        proxy.cut()
        proxy.restore()
        wait_until(
            lambda: consumer.consuming and consumer.connections > connections,
            timeout=30,
            interval=0.1,
            what="the caller listens for replies again",
        )
        assert call("flaky", "write", "after") == "write after"
    assert CALLS == [("write", "before"), ("write", "after")]


def test_a_call_whose_reply_went_with_the_callers_connection_does_not_open_the_circuit(
    proxy, runner_factory, container_factory, rabbit_config
):
    proxied = rabbit_config["AMQP_URI"].replace("localhost:5672", f"127.0.0.1:{proxy.port}")
    runner_factory(rabbit_config, FlakyService).start()
    caller = container_factory(CallerService, caller_config(dict(rabbit_config, AMQP_URI=proxied), BREAKER_FAILURES=1))
    caller.start()
    replies = next(dependency for dependency in caller.dependencies if isinstance(dependency, Rpc))
    consumer = replies.calls.reply_queue.consumer
    connections = consumer.connections
    with entrypoint_hook(caller, "call") as call:
        in_flight = eventlet.spawn(call, "flaky", "write", "slow")  # 1 s of work, over the 0.5 s timeout
        wait_until(lambda: ("write", "slow") in CALLS, timeout=10, interval=0.02, what="the request is being run")
        proxy.cut()  # the caller's connections go (as when its broker node dies); it connects again at once
        proxy.restore()
        with pytest.raises(BrokerFailover):
            in_flight.wait()
        wait_until(lambda: consumer.consuming and consumer.connections > connections, timeout=30, interval=0.1)
        assert replies.breaker.state == "closed"  # one failure would have opened it, had it counted
        assert call("flaky", "write", "slow") == "write slow"
