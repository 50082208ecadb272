"""services.common.publishing: nameko's publishers keep one kombu Connection per setting instead of one per
message, and what they publish still arrives (with and without publisher confirms)."""

import uuid

import pytest
from kombu import Connection, Queue
from nameko.amqp import publish as nameko_publish
from nameko.amqp.publish import Publisher, UndeliverableMessage

from services.common import publishing


@pytest.fixture
def installed():
    publishing.install()
    yield
    publishing.uninstall()


@pytest.fixture
def queue(rabbit_config):
    queue = Queue(f"publishing-test-{uuid.uuid4().hex}", auto_delete=False, durable=False)
    with Connection(rabbit_config["AMQP_URI"]) as connection:
        queue(connection.default_channel).declare()
    return queue


def received(amqp_uri, queue, count):
    bodies = []
    with Connection(amqp_uri) as connection:
        bound = queue(connection.default_channel)
        for _ in range(count):
            message = bound.get(no_ack=True)
            assert message is not None, f"only {len(bodies)} of {count} messages arrived"
            bodies.append(message.payload)
    return bodies


@pytest.mark.parametrize("confirms", [True, False])
def test_messages_arrive_and_one_connection_object_serves_every_publish(installed, rabbit_config, queue, confirms):
    assert nameko_publish.get_producer is publishing.get_producer
    before = len(publishing._connections)
    publisher = Publisher(rabbit_config["AMQP_URI"], use_confirms=confirms)
    for number in range(5):
        publisher.publish({"n": number}, exchange="", routing_key=queue.name)
    assert len(publishing._connections) == before + 1  # one key for this URI and these options
    assert received(rabbit_config["AMQP_URI"], queue, 5) == [{"n": number} for number in range(5)]


def test_confirms_still_report_an_unroutable_mandatory_message(installed, rabbit_config):
    publisher = Publisher(rabbit_config["AMQP_URI"], use_confirms=True)
    with pytest.raises(UndeliverableMessage):
        publisher.publish({}, exchange="amq.direct", routing_key=f"nobody-{uuid.uuid4().hex}", mandatory=True)


def test_uninstall_gives_nameko_its_own_function_back():
    publishing.install()
    publishing.uninstall()
    assert nameko_publish.get_producer is publishing._original_get_producer
