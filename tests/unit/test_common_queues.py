"""Queue arguments from AMQP_QUEUE_TYPE, broker address lists, and what the breaker counts during a fail-over."""

import pytest
from kombu import Queue

from services.common.breaker import CircuitOpen
from services.common.errors import BrokerFailover, ServiceTimeout, ServiceUnavailable
from services.common.queues import arguments, queue_type, typed
from services.common.rpc import PUBLISH_RETRY_POLICY, failover_policies, is_no_answer
from services.common.rpc_transport import addresses

QUORUM = {"AMQP_QUEUE_TYPE": "quorum"}


def test_classic_is_the_default_and_adds_nothing():
    assert queue_type({}) == queue_type({"AMQP_QUEUE_TYPE": None}) == "classic"
    assert arguments({}, Queue("rpc-carts", durable=True)) == {}


def test_quorum_marks_a_durable_shared_queue_and_keeps_its_own_arguments():
    queue = Queue("evt.retry", durable=True, queue_arguments={"x-dead-letter-exchange": ""})
    assert arguments(QUORUM, queue) == {"x-dead-letter-exchange": "", "x-queue-type": "quorum"}
    assert typed(queue, QUORUM).queue_arguments["x-queue-type"] == "quorum"


@pytest.mark.parametrize(
    "queue",
    [
        Queue("rpc.reply-gateway-1", durable=False, exclusive=True, auto_delete=True),  # a reply queue
        Queue("evt-catalog-product_changed--gateway.x-1", durable=True, exclusive=True, auto_delete=True),
        Queue("transient", durable=False),
    ],
)
def test_queues_that_go_with_their_connection_stay_classic(queue):
    assert "x-queue-type" not in arguments(QUORUM, queue)
    assert typed(queue, QUORUM).queue_arguments is None


def test_the_type_is_read_loosely_but_checked():
    assert queue_type({"AMQP_QUEUE_TYPE": " Quorum "}) == "quorum"
    with pytest.raises(ValueError, match="AMQP_QUEUE_TYPE"):
        queue_type({"AMQP_QUEUE_TYPE": "stream"})


def test_addresses_split_a_fail_over_list():
    assert addresses("amqp://a:5672/v") == ["amqp://a:5672/v"]
    assert addresses("amqp://a:5672/v; amqp://b:5673/v;") == ["amqp://a:5672/v", "amqp://b:5673/v"]


def test_a_fast_publisher_retries_once_per_broker_address():
    retry, transport = failover_policies("amqp://a/;amqp://b/;amqp://c/")
    assert retry["max_retries"] == transport["max_retries"] == 3
    assert retry["interval_start"] == 0
    assert failover_policies("amqp://a/")[0] == PUBLISH_RETRY_POLICY


def test_the_breaker_does_not_count_a_call_lost_in_the_callers_own_fail_over():
    assert is_no_answer(ServiceTimeout("late")) and is_no_answer(ServiceUnavailable("away"))
    assert not is_no_answer(BrokerFailover("lost with the connection"))
    assert not is_no_answer(CircuitOpen("open"))
    assert BrokerFailover("x").status == 504
