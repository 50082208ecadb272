"""Which type of RabbitMQ queue each queue is: the one place that decides, from config `AMQP_QUEUE_TYPE`.

`classic` (the default) declares every queue as RabbitMQ's default does: a classic queue lives on one node, and
goes with it. `quorum` makes every queue that outlives its connection a quorum queue, replicated on the nodes of
a cluster and available while a majority of them is up: the RPC queues `rpc-<service>`, the event handlers'
queues `evt-...--<service>.<method>`, their `.retry` queues and `parked-<service>`. A queue that goes with its
connection (exclusive or auto-delete: each container's RPC reply queue, the gateway's broadcast queue) stays
classic: quorum queues cannot be exclusive, and nothing in such a queue outlives its consumer anyway.

RabbitMQ 3.10 takes the type only from the declaring client (`x-queue-type`; a policy cannot set it), so every
declaration of such a queue goes through `typed(queue, config)`. The type is fixed when a queue is first
declared: a broker that already holds a classic `rpc-carts` refuses to declare it quorum (PRECONDITION_FAILED).
Switch on a new vhost, or delete the old queues once with the services stopped.
"""

from nameko.rpc import RpcConsumer

CLASSIC, QUORUM = "classic", "quorum"
QUEUE_TYPES = (CLASSIC, QUORUM)


def queue_type(config):
    """The configured type, checked: `AMQP_QUEUE_TYPE` (default classic)."""
    value = (config.get("AMQP_QUEUE_TYPE") or CLASSIC).strip().lower()
    if value not in QUEUE_TYPES:
        raise ValueError(f"AMQP_QUEUE_TYPE must be one of {', '.join(QUEUE_TYPES)}, not {value!r}")
    return value


def outlives_its_connection(queue):
    return bool(queue.durable) and not queue.exclusive and not queue.auto_delete


def arguments(config, queue):
    """The declaration arguments `queue` (a kombu `Queue`) gets under `config`, its own included."""
    declared = dict(queue.queue_arguments or {})
    if queue_type(config) == QUORUM and outlives_its_connection(queue):
        declared["x-queue-type"] = QUORUM
    return declared


def typed(queue, config):
    """`queue` with the type `config` gives it (set in place; returned for chaining)."""
    queue.queue_arguments = arguments(config, queue) or None
    return queue


class TypedRpcConsumer(RpcConsumer):
    """nameko's RPC consumer (one per container), declaring `rpc-<service>` with the configured type."""

    def setup(self):
        super().setup()
        typed(self.queue, self.container.config)
