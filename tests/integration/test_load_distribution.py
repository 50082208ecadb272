"""How the broker spreads work over the instances of one service (README: "How services find each other and
share work").

Every instance of a service consumes the same queue, `rpc-<service>`, and nameko sets the consumer's prefetch to
the instance's `max_workers` (MAX_WORKERS). RabbitMQ delivers a message only to a consumer with a free prefetch
slot, round robin among those. Under saturation (a queue that never empties) an instance therefore takes work at
the rate it finishes it: its share follows its worker count when the work waits on I/O, as service calls do.
These tests saturate two real instances on the real broker and count who handled what.
"""

import eventlet
import pytest
from nameko.dependency_providers import Config
from nameko.rpc import rpc
from nameko.standalone.rpc import ClusterRpcProxy

CALLS = 240
# One call's work: waiting on I/O (a query, a downstream call), which is what a worker spends most time on.
WORK_SECONDS = 0.02
TOLERANCE = 0.07  # of the whole: the first and last deliveries of a run are uneven


class WeighedService:
    name = "weighed"

    config = Config()

    @rpc
    def work(self):
        eventlet.sleep(WORK_SECONDS)
        return self.config["INSTANCE"]


def handled_shares(container_factory, rabbit_config, worker_counts):
    """Start one instance per worker count, saturate the queue with CALLS calls, return each instance's share."""
    for index, workers in enumerate(worker_counts):
        config = dict(rabbit_config, max_workers=workers, INSTANCE=index)
        container_factory(WeighedService, config).start()
    with ClusterRpcProxy(rabbit_config, timeout=60) as cluster:
        # All published before any answer is read: the queue stays full until the last few calls.
        replies = [cluster.weighed.work.call_async() for _ in range(CALLS)]
        handled_by = [reply.result() for reply in replies]
    return [handled_by.count(index) / CALLS for index in range(len(worker_counts))]


@pytest.mark.parametrize(
    "worker_counts, expected",
    [
        ((1, 3), (0.25, 0.75)),  # weighted: MAX_WORKERS 1 and 3
        ((2, 2), (0.5, 0.5)),  # equal weights: plain round robin
    ],
)
def test_each_instance_takes_work_in_proportion_to_its_workers(
    container_factory, rabbit_config, worker_counts, expected
):
    shares = handled_shares(container_factory, rabbit_config, worker_counts)

    assert sum(shares) == pytest.approx(1.0)
    for share, wanted in zip(shares, expected, strict=True):
        assert share == pytest.approx(wanted, abs=TOLERANCE), f"shares {shares}, expected {expected}"


def test_a_stopped_instance_gets_no_more_work(container_factory, rabbit_config):
    """No registry to go stale: an instance that stops consuming simply stops being offered messages."""
    configs = [dict(rabbit_config, max_workers=2, INSTANCE=index) for index in range(2)]
    containers = [container_factory(WeighedService, config) for config in configs]
    for container in containers:
        container.start()
    containers[0].stop()

    with ClusterRpcProxy(rabbit_config, timeout=30) as cluster:
        handled_by = [reply.result() for reply in [cluster.weighed.work.call_async() for _ in range(40)]]

    assert handled_by == [1] * 40
