"""GracefulContainer (services/common/container.py) on the real broker: a stop finishes running workers (their
replies arrive) but is bounded by SHUTDOWN_GRACE_SECONDS, hands messages it has not started back to the queue,
and `nameko run` does all of it on SIGTERM."""

import logging
import os
import signal
import subprocess
import sys
import time
import uuid

import eventlet
import pytest
import yaml
from amqp.exceptions import NotFound
from eventlet.event import Event
from kombu import Connection
from nameko.dependency_providers import Config
from nameko.events import event_handler
from nameko.rpc import rpc
from nameko.standalone.events import event_dispatcher
from nameko.standalone.rpc import ClusterRpcProxy

from services.common.container import GracefulContainer
from tests.waiting import wait_until

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEADLINE = 20  # seconds for anything that should happen at once, on two busy cores


class Gate:
    """A test's hold on a worker: `started` is sent when the worker is in, it returns once `opened` is sent."""

    def __init__(self):
        self.started = Event()
        self.opened = Event()


GATES = {}
HANDLED = {}  # event payload → Event sent with the name of the instance that handled it
NAPS = []  # (instance, token) of every nap begun


class HolderService:
    """`hold(gate)` waits for the test on an instance whose config has HOLDS (and answers at once on the others);
    every call and event answers with the instance's name (config INSTANCE)."""

    name = "holder"
    config = Config()

    @rpc
    def hold(self, gate):
        if self.config.get("HOLDS"):
            GATES[gate].started.send(None)
            GATES[gate].opened.wait()
        return self.config["INSTANCE"]

    @rpc
    def nap(self, seconds, token=None):
        NAPS.append((self.config["INSTANCE"], token))
        eventlet.sleep(seconds)
        return self.config["INSTANCE"]

    @event_handler("tests", "ping")
    def on_ping(self, payload):
        HANDLED[payload].send(self.config["INSTANCE"])


@pytest.fixture
def instance(container_factory, rabbit_config):
    """Factory: `instance(name, **config)` → a started GracefulContainer of HolderService."""

    def make(name, **config):
        container = container_factory(
            HolderService,
            dict(
                rabbit_config,
                INSTANCE=name,
                SERVICE_CONTAINER_CLS="services.common.container.GracefulContainer",
                **config,
            ),
        )
        assert isinstance(container, GracefulContainer)
        container.start()
        return container

    return make


@pytest.fixture
def gate():
    """Factory of gates; every gate is opened at the end of the test, so no worker is left waiting."""
    made = []

    def make():
        name = uuid.uuid4().hex
        GATES[name] = Gate()
        made.append(name)
        return name

    yield make
    for name in made:
        gate = GATES.pop(name)
        if not gate.opened.ready():
            gate.opened.send(None)


def ready_messages(amqp_uri, queue):
    """Messages waiting in `queue` (not delivered to any consumer)."""
    with Connection(amqp_uri) as connection:
        _, count, _ = connection.default_channel.queue_declare(queue, passive=True)
        return count


def consumer_count(amqp_uri, service):
    """Consumers on `service`'s RPC queue now (0 before the queue exists)."""
    with Connection(amqp_uri) as connection:
        try:
            _, _, consumers = connection.default_channel.queue_declare(f"rpc-{service}", passive=True)
        except NotFound:
            return 0
        return consumers


def held_call(cluster, held):
    """Call `hold(held)` and return its pending reply once a worker has started it (and waits at the gate)."""
    reply = cluster.holder.hold.call_async(held)
    with eventlet.Timeout(DEADLINE):
        GATES[held].started.wait()
    return reply


def test_a_stop_waits_for_a_running_worker_whose_reply_arrives_while_others_take_new_calls(
    instance, gate, rabbit_config
):
    first = instance("a", HOLDS=True, SHUTDOWN_GRACE_SECONDS=DEADLINE)
    held = gate()
    with ClusterRpcProxy(rabbit_config, timeout=DEADLINE) as cluster:
        reply = held_call(cluster, held)
        stopping = eventlet.spawn(first.stop)
        # It stops taking messages at once ...
        wait_until(
            lambda: consumer_count(rabbit_config["AMQP_URI"], "holder") == 0,
            timeout=DEADLINE,
            what="a's consumer is cancelled",
        )
        instance("b")
        assert cluster.holder.hold(gate()) == "b"
        # ... but waits for the worker it holds.
        assert not stopping.dead
        GATES[held].opened.send(None)
        assert reply.result() == "a"
    with eventlet.Timeout(DEADLINE):
        stopping.wait()
    assert first._died.ready()


def test_a_running_worker_acks_its_own_message_so_it_is_not_run_again_elsewhere(instance, rabbit_config):
    # HolderService has no RPC proxy, so no reply listener keeps nameko's queue consumer open while its
    # worker runs; the nap outlasts the consume loop's one-second wait, after which nameko would close it.
    first = instance("a", SHUTDOWN_GRACE_SECONDS=DEADLINE)
    token = uuid.uuid4().hex
    with ClusterRpcProxy(rabbit_config, timeout=DEADLINE) as cluster:
        reply = cluster.holder.nap.call_async(2.5, token)
        wait_until(lambda: ("a", token) in NAPS, timeout=DEADLINE, what="a began the nap")
        stopping = eventlet.spawn(first.stop)
        wait_until(
            lambda: consumer_count(rabbit_config["AMQP_URI"], "holder") == 0,
            timeout=DEADLINE,
            what="a's consumer is cancelled",
        )
        instance("b")
        assert reply.result() == "a"
        with eventlet.Timeout(DEADLINE):
            stopping.wait()
        assert cluster.holder.nap(0) == "b"  # b consumes, and has had every chance to get the nap again
    assert [run for run in NAPS if run[1] == token] == [("a", token)]
    assert ready_messages(rabbit_config["AMQP_URI"], "rpc-holder") == 0


def test_a_stop_is_bounded_by_the_grace_and_the_abandoned_call_runs_on_another_instance(
    instance, gate, rabbit_config, caplog
):
    grace = 0.5
    first = instance("a", HOLDS=True, SHUTDOWN_GRACE_SECONDS=grace)
    held = gate()
    with ClusterRpcProxy(rabbit_config, timeout=DEADLINE) as cluster:
        reply = held_call(cluster, held)
        instance("b")
        started = time.monotonic()
        with caplog.at_level(logging.WARNING, logger="services.common.container"), eventlet.Timeout(grace + 5):
            first.stop()  # the worker never ends by itself
        took = time.monotonic() - started
        assert grace <= took < grace + 5
        assert "abandoning 1 running worker(s): holder.hold" in caplog.text
        # Its request went back to the queue when the connection closed, and the other instance answered it.
        assert reply.result() == "b"
    assert first._died.ready()


def test_a_message_waiting_for_a_worker_when_the_stop_begins_goes_back_to_the_queue(instance, gate, rabbit_config):
    # One worker, busy: the event that arrives next is delivered (each consumer prefetches max_workers) but
    # must wait for a worker.
    first = instance("a", HOLDS=True, max_workers=1, SHUTDOWN_GRACE_SECONDS=DEADLINE)
    held = gate()
    with ClusterRpcProxy(rabbit_config, timeout=DEADLINE) as cluster:
        reply = held_call(cluster, held)
        payload = uuid.uuid4().hex
        HANDLED[payload] = Event()
        event_dispatcher(rabbit_config)("tests", "ping", payload)
        queue = "evt-tests-ping--holder.on_ping"
        wait_until(
            lambda: ready_messages(rabbit_config["AMQP_URI"], queue) == 0, timeout=DEADLINE, what="a took the event"
        )
        instance("b")
        stopping = eventlet.spawn(first.stop)
        # The other instance handles the event now, while a still finishes its running worker (nameko's own
        # stop would run the event on a, after that worker).
        with eventlet.Timeout(DEADLINE):
            assert HANDLED[payload].wait() == "b"
        assert not stopping.dead
        GATES[held].opened.send(None)
        assert reply.result() == "a"
    with eventlet.Timeout(DEADLINE):
        stopping.wait()
    HANDLED.pop(payload)


# --- the real thing: `nameko run`, stopped with SIGTERM ----------------------------------------------------------


class NamekoRun:
    """`nameko run` of HolderService as a child process, output in a file."""

    def __init__(self, tmp_path, rabbit_config, grace):
        config = {
            "AMQP_URI": rabbit_config["AMQP_URI"],
            "INSTANCE": "run",
            "SHUTDOWN_GRACE_SECONDS": grace,
            "SERVICE_CONTAINER_CLS": "services.common.container.GracefulContainer",
        }
        config_path = tmp_path / "holder.yml"
        config_path.write_text(yaml.safe_dump(config))
        self.log_path = tmp_path / "holder.log"
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "nameko", "run", "--config", str(config_path), f"{__name__}:HolderService"],
                cwd=ROOT,
                env=dict(os.environ, PYTHONUNBUFFERED="1"),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        wait_until(
            lambda: consumer_count(rabbit_config["AMQP_URI"], "holder") == 1 or self.process.poll() is not None,
            timeout=DEADLINE,
            what="nameko run consumes",
        )
        assert self.process.poll() is None, self.output()

    def output(self):
        return self.log_path.read_text(errors="replace")

    def terminate_and_wait(self):
        """SIGTERM; returns (exit code, seconds until it exited)."""
        started = time.monotonic()
        self.process.send_signal(signal.SIGTERM)
        code = self.process.wait(DEADLINE + 10)
        return code, time.monotonic() - started

    def kill(self):
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


@pytest.fixture
def nameko_run(tmp_path, rabbit_config):
    started = []

    def start(grace):
        started.append(NamekoRun(tmp_path, rabbit_config, grace))
        return started[-1]

    yield start
    for process in started:
        process.kill()


def test_sigterm_to_nameko_run_lets_a_running_call_finish_and_answer(nameko_run, rabbit_config):
    process = nameko_run(grace=DEADLINE)
    with ClusterRpcProxy(rabbit_config, timeout=DEADLINE) as cluster:
        reply = cluster.holder.nap.call_async(1.5)
        wait_until(
            lambda: ready_messages(rabbit_config["AMQP_URI"], "rpc-holder") == 0,
            timeout=DEADLINE,
            what="the call was taken",
        )
        code, took = process.terminate_and_wait()
        assert reply.result() == "run"
    assert code == 0, process.output()
    assert took < DEADLINE
    assert "abandoning" not in process.output()


def test_sigterm_to_nameko_run_is_bounded_and_puts_the_abandoned_call_back_in_the_queue(nameko_run, rabbit_config):
    grace = 1
    process = nameko_run(grace=grace)
    with ClusterRpcProxy(rabbit_config, timeout=DEADLINE) as cluster:
        cluster.holder.nap.call_async(600)
        wait_until(
            lambda: ready_messages(rabbit_config["AMQP_URI"], "rpc-holder") == 0,
            timeout=DEADLINE,
            what="the call was taken",
        )
        code, took = process.terminate_and_wait()
    assert code == 0, process.output()
    assert grace <= took < grace + 10, process.output()
    assert "abandoning 1 running worker(s): holder.nap" in process.output()
    # Nothing consumes the queue now: the abandoned request is waiting there for the next instance.
    assert ready_messages(rabbit_config["AMQP_URI"], "rpc-holder") == 1
