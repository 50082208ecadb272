"""Queue types on the real broker: AMQP_QUEUE_TYPE=quorum declares every queue that outlives its connection as a
quorum queue, and leaves the per-connection ones classic; and AMQP_URI's fail-over list moves past a dead broker."""

import socket

import pytest
from nameko.events import BROADCAST, event_handler
from nameko.standalone.events import event_dispatcher
from nameko.standalone.rpc import ServiceRpcProxy

from services.common.deadletters import parked_events
from services.common.events import reliable_event_handler
from services.common.rpc import Rpc, rpc
from tests.waiting import wait_until

heard = []


class Tally:
    name = "tally"

    @rpc
    def ping(self):
        return "pong"

    @reliable_event_handler("shop", "sold")
    def on_sold(self, payload):
        if payload == "poison":
            raise ValueError("cannot count this")
        heard.append(payload)

    @event_handler("shop", "sold", handler_type=BROADCAST, reliable_delivery=False)
    def on_sold_here(self, payload):
        pass


class Caller:
    name = "caller"
    tally = Rpc("tally", timeout=5)

    @rpc
    def ask(self):
        return self.tally.ping()


def queue_types(rabbit_manager, vhost):
    return {queue["name"]: queue.get("type") for queue in rabbit_manager.get_queues(vhost)}


def start(container_factory, rabbit_config, **settings):
    config = dict(rabbit_config, EVENT_MAX_ATTEMPTS=2, EVENT_RETRY_SECONDS=0.2, **settings)
    for service in (Tally, Caller):
        container_factory(service, config).start()
    return config


def test_quorum_makes_every_lasting_queue_a_quorum_queue_and_leaves_the_rest_classic(
    container_factory, rabbit_config, rabbit_manager
):
    heard.clear()
    config = start(container_factory, rabbit_config, AMQP_QUEUE_TYPE="quorum")
    with ServiceRpcProxy("caller", config, timeout=10) as caller:
        assert caller.ask() == "pong"  # the request and reply went through the quorum rpc-tally
    dispatch = event_dispatcher(config)
    dispatch("shop", "sold", "poison")  # retried once, through the .retry queue, then parked
    dispatch("shop", "sold", "one")
    wait_until(lambda: heard == ["one"], timeout=10, what="the event handled from the quorum queue")
    wait_until(lambda: len(parked_events(config, "tally")) == 1, timeout=15, what="the poison event parked")

    types = queue_types(rabbit_manager, rabbit_config["vhost"])
    assert types["rpc-tally"] == types["rpc-caller"] == "quorum"
    assert types["evt-shop-sold--tally.on_sold"] == "quorum"
    assert types["evt-shop-sold--tally.on_sold.retry"] == "quorum"
    assert types["parked-tally"] == "quorum"
    replies = [name for name in types if name.startswith("rpc.reply-caller-")]
    assert replies and all(types[name] == "classic" for name in replies)  # exclusive: goes with its connection
    broadcast = [name for name in types if name.startswith("evt-shop-sold--tally.on_sold_here-")]
    assert broadcast and types[broadcast[0]] == "classic"


def test_classic_by_default(container_factory, rabbit_config, rabbit_manager):
    config = start(container_factory, rabbit_config)
    with ServiceRpcProxy("caller", config, timeout=10) as caller:
        assert caller.ask() == "pong"
    types = queue_types(rabbit_manager, rabbit_config["vhost"])
    assert types["rpc-tally"] == types["evt-shop-sold--tally.on_sold"] == "classic"


def dead_broker_uri(vhost):
    """An AMQP URI on a loopback port where nothing listens: connections to it are refused at once."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"amqp://guest:guest@127.0.0.1:{port}/{vhost}"


def test_a_dead_first_broker_in_the_list_is_passed_over(container_factory, rabbit_config):
    alive = rabbit_config["AMQP_URI"]
    config = start(container_factory, rabbit_config, AMQP_URI=f"{dead_broker_uri(rabbit_config['vhost'])};{alive}")
    with ServiceRpcProxy("caller", dict(config, AMQP_URI=alive), timeout=10) as caller:
        # caller's request channel, reply consumer and entrypoint consumer all connected past the dead address
        assert caller.ask() == "pong"


@pytest.mark.parametrize("value", ["fast", "mirrored"])
def test_an_unknown_queue_type_stops_the_container(container_factory, rabbit_config, value):
    with pytest.raises(ValueError, match="AMQP_QUEUE_TYPE"):
        container_factory(Tally, dict(rabbit_config, AMQP_QUEUE_TYPE=value)).start()
