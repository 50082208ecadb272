"""RPC calls that always end, end fast when the callee or the broker is away, and cost few messages.

nameko's `RpcProxy` waits forever for a reply. `Rpc(target)` injects a proxy like nameko's,
but:

- **each call waits at most `timeout` seconds.** The request is published with the same time to live, so a call
  the caller has given up on is never run later by an instance that comes back. On timeout the target's queue is
  inspected: no consumer → `ServiceUnavailable`, else `ServiceTimeout`.
- **the broker being away is `ServiceUnavailable` within about a second**, not a hang: nameko's publisher retries
  a failed publish three times with pauses and kombu connects with a 5 s timeout (a publish to a stopped broker
  took 5.0 s), so the publish here retries once, at once (which also replaces a pooled connection the broker
  closed), with a 1 s connect timeout, and is itself bounded by `timeout`.
- **with a circuit breaker** (config `BREAKER_FAILURES` > 0; the gateway sets it), one per target service per
  container (services.common.breaker): after `BREAKER_FAILURES` calls in a row got no answer (timeout,
  unavailable, broker away), calls are refused at once with `CircuitOpen` (503) for `BREAKER_RESET_SECONDS`,
  then one probe call decides. A service's deliberate errors (NotFound...) are answers and never count, and
  neither does a timeout during which the caller's own broker connection was lost (`BrokerFailover`, a 504: the
  request or its reply went with the connection when a broker node died, and the service is not to blame).
- **reads named in `idempotent` are sent a second time** after a random pause of up to
  `RPC_RETRY_JITTER_SECONDS` (default 0.1 s) when the first got no answer (timeout or unavailable). Nothing else
  is: a write may have been done by the service even though its answer never came.

What a call costs. A round trip through nameko is six messages and four waits on the broker: the request and
its publisher confirm, the reply and its confirm, and an acknowledgement for each of the two deliveries; on
this machine every one of them is a system call of ~0.1 ms on each side, and most of the CPU of a call. Here:

- **requests are confirmed only until the target's queue is known to exist.** The first call to a target (per
  process and broker) is published `mandatory` with a publisher confirm, so a service that never started is
  `ServiceUnavailable` at once; later calls go without a confirm (and without `mandatory`, whose returns nobody
  would read). If the queue goes away after all, the call ends at its timeout, the queue check answers
  `ServiceUnavailable`, and the next call is confirmed again.
- **replies are not confirmed.** A reply lost with a broker that crashed ends as the caller's timeout, which it
  handles anyway.
- **replies are not acknowledged**: each container's reply queue (`ReplyQueue`) is exclusive to its connection
  and consumed in no-ack mode; a reply is handed to its waiting call in the consumer's own thread, without a
  greenthread per message. The queue goes with the connection (a reply sent while the caller reconnects is
  lost, and the call times out).
- **requests and replies are transient** (delivery mode 1): nothing that a broker restart should keep, since the
  caller waiting for the answer does not survive it either.

The serving side: `rpc` is nameko's `@rpc` entrypoint with that reply path, serialising the reply once (nameko
serialises it twice: once to check it can), and a reply that cannot be sent because the broker is away is logged
and dropped. nameko lets that error end the worker's managed thread, which kills the whole container (and
`nameko run` with it): every service busy with a request when the broker went away died with it. The caller has
its own timeout, and the unacknowledged request goes back to the queue with the connection.
"""

import inspect
import logging
import random
import sys
import uuid
from contextlib import nullcontext

import eventlet
import kombu.serialization
from eventlet.event import Event
from kombu import Connection, Queue
from nameko.amqp.publish import Publisher, UndeliverableMessage
from nameko.constants import (
    AMQP_SSL_CONFIG_KEY,
    AMQP_URI_CONFIG_KEY,
    DEFAULT_SERIALIZER,
    LOGIN_METHOD_CONFIG_KEY,
    SERIALIZER_CONFIG_KEY,
)
from nameko.exceptions import UnserializableValueError, deserialize, serialize
from nameko.extensions import DependencyProvider, SharedExtension
from nameko.messaging import HeaderEncoder
from nameko.rpc import RPC_REPLY_QUEUE_TEMPLATE, get_rpc_exchange
from nameko.rpc import Rpc as RpcEntrypoint

import services.common.remote_errors  # noqa: F401  (registers the error classes with nameko)
from services.common import metrics
from services.common.breaker import CLOSED, CircuitBreaker, CircuitOpen
from services.common.errors import BrokerFailover, ServiceTimeout, ServiceUnavailable
from services.common.metrics import rpc_call
from services.common.queues import TypedRpcConsumer
from services.common.rpc_transport import BROKER_ERRORS, TRANSIENT, ReplyConsumer, RpcChannel, addresses, connect
from services.common.tracing import outgoing_headers

DEFAULT_TIMEOUT = 5.0
DEFAULT_RETRY_JITTER_SECONDS = 0.1
DEFAULT_BREAKER_RESET_SECONDS = 10.0
# A failed publish is retried once, at once: enough to replace a pooled connection the broker has closed (after
# it restarted), not enough to keep a caller waiting while the broker is down.
PUBLISH_RETRY_POLICY = {"max_retries": 1, "interval_start": 0, "interval_step": 0.2, "interval_max": 0.2}
PUBLISH_TRANSPORT_OPTIONS = {
    "max_retries": 1,
    "interval_start": 0,
    "interval_step": 0.2,
    "interval_max": 0.2,
    "connect_timeout": 1,
}

log = logging.getLogger(__name__)

# (broker URI, service) pairs whose RPC queue a confirmed, mandatory publish has reached (see the docstring).
_known_queues = set()


def rpc_timeout(config, target_service, default=DEFAULT_TIMEOUT):
    """Seconds to wait for `target_service`: `RPC_TIMEOUTS[target]`, else `RPC_TIMEOUT`, else `default`."""
    per_target = config.get("RPC_TIMEOUTS") or {}
    return float(per_target.get(target_service) or config.get("RPC_TIMEOUT") or default)


def consumer_count(amqp_uri, service_name, ssl=None):
    """How many consumers the broker has on `service_name`'s RPC queue (0 if there is no such queue, or no
    broker to ask)."""
    try:
        with Connection(amqp_uri, ssl=ssl, connect_timeout=2) as connection:
            channel = connect(connection).channel()
            try:
                _, _, consumers = channel.queue_declare(f"rpc-{service_name}", passive=True)
            except Exception:  # the broker closes the channel when the queue does not exist
                return 0
            return consumers
    except BROKER_ERRORS:
        return 0


def is_no_answer(exc):
    """The failures a circuit breaker counts: the call got no answer (not a service's deliberate error), and not
    because the caller's own broker connection was lost meanwhile (`BrokerFailover`: the service is not to blame)."""
    return isinstance(exc, (ServiceTimeout, ServiceUnavailable)) and not isinstance(exc, (CircuitOpen, BrokerFailover))


def fast_publisher(amqp_uri, ssl=None, login_method=None, **options):
    """A nameko `Publisher` that gives up after one immediate retry and a 1 s connect timeout."""
    retry_policy, transport_options = failover_policies(amqp_uri)
    publisher = Publisher(amqp_uri, ssl=ssl, login_method=login_method, retry_policy=retry_policy, **options)
    # An instance attribute: nameko's class-level default is shared by every publisher, and mutated.
    publisher.transport_options = transport_options
    return publisher


def failover_policies(amqp_uri):
    """(retry policy, transport options) of a publisher that fails fast: one immediate retry per broker address,
    so that with several (`a;b;c`) a publish that meets a dead node moves on to the next one at once."""
    retries = max(1, len(addresses(amqp_uri)))
    return (
        dict(PUBLISH_RETRY_POLICY, max_retries=retries),
        dict(PUBLISH_TRANSPORT_OPTIONS, max_retries=retries),
    )


# --- the calling side --------------------------------------------------------------------------------------------


class ReplyQueue(SharedExtension):
    """The container's reply queue and the calls waiting on it; shared by every `Rpc` of the container and the
    gateway's health probe. Replies are consumed without acknowledgements (services.common.rpc_transport)."""

    consumer = ReplyConsumer()

    def __init__(self):
        self.waiting = {}  # correlation id -> Event

    def setup(self):
        self.routing_key = str(uuid.uuid4())
        self.queue = Queue(
            RPC_REPLY_QUEUE_TEMPLATE.format(self.container.service_name, self.routing_key),
            exchange=get_rpc_exchange(self.container.config),
            routing_key=self.routing_key,
            durable=False,
            exclusive=True,
            auto_delete=True,
        )
        self.consumer.listen(self.queue, self.on_reply)

    def expect(self, correlation_id):
        """Make ready to receive the reply to `correlation_id` (before its request leaves)."""
        self.waiting[correlation_id] = Event()

    def wait(self, correlation_id):
        """The body of the reply to `correlation_id`, when it comes."""
        return self.waiting[correlation_id].wait()

    def forget(self, correlation_id):
        """Drop the slot of a call whose reply will not be waited for."""
        self.waiting.pop(correlation_id, None)

    def on_reply(self, correlation_id, body):
        event = self.waiting.get(correlation_id)
        if event is not None and not event.ready():  # else the call has given up (or it is a duplicate)
            event.send(body)


def reply_result(body):
    """The result a reply body carries, or the remote error it carries, raised."""
    error = body.get("error")
    if error:
        raise deserialize(error)
    return body["result"]


class CallTarget:
    """Everything about calling one service that does not change from one worker to the next."""

    def __init__(
        self, service_name, calls, timeout, breaker=None, idempotent=(), retry_jitter=DEFAULT_RETRY_JITTER_SECONDS
    ):
        self.service_name = service_name
        self.calls = calls
        self.timeout = timeout
        self.expiration = str(int(timeout * 1000))  # ms: the request expires with the call
        self.breaker = breaker
        self.idempotent = frozenset(idempotent)
        self.retry_jitter = retry_jitter


class TimedMethodProxy(HeaderEncoder):
    """One method of a target service; calling it makes the call (see the module docstring)."""

    def __init__(self, worker_ctx, target, method_name):
        self.worker_ctx = worker_ctx
        self.target = target
        self.service_name = target.service_name
        self.method_name = method_name

    def __call__(self, *args, **kwargs):
        try:
            return self._guarded_call(*args, **kwargs)
        except CircuitOpen:
            raise
        except (ServiceTimeout, ServiceUnavailable):
            if self.method_name not in self.target.idempotent:
                raise
        metrics.rpc_call_retried(self.worker_ctx.service_name, self.service_name)
        eventlet.sleep(random.uniform(0, self.target.retry_jitter))  # callers that failed together retry apart
        return self._guarded_call(*args, **kwargs)

    def _guarded_call(self, *args, **kwargs):
        breaker = self.target.breaker
        guard = breaker.calling(is_no_answer) if breaker is not None else nullcontext()
        try:
            with guard:
                # Timed, counted (timeout / unavailable) and traced as a CLIENT span: services.common.metrics.
                with rpc_call(self.worker_ctx, self.service_name, self.method_name):
                    return self._timed_call(*args, **kwargs)
        except CircuitOpen:
            metrics.rpc_call_refused(self.worker_ctx.service_name, self.service_name)
            raise

    def _timed_call(self, *args, **kwargs):
        target, calls = self.target, self.target.calls
        correlation_id = None
        connections = calls.connections()
        with eventlet.Timeout(target.timeout, False):  # publishing and waiting together
            correlation_id = self._publish(args, kwargs)
            try:
                return reply_result(calls.reply_queue.wait(correlation_id))
            finally:
                calls.reply_queue.forget(correlation_id)  # a reply that never came (the request expired)
        if calls.connections() != connections:
            # The request or its reply went with a broker connection (a node lost, the client failed over).
            raise BrokerFailover(
                f"the {self.service_name} service did not answer in time (the connection to the message broker "
                "was lost meanwhile)"
            )
        if correlation_id is None:  # the publish itself did not end in time
            raise ServiceUnavailable(
                f"the {self.service_name} service is not available (the message broker is not reachable)"
            )
        if consumer_count(calls.amqp_uri, self.service_name, calls.ssl) == 0:
            _known_queues.discard((calls.amqp_uri, self.service_name))  # confirm the next call again
            raise ServiceUnavailable(f"the {self.service_name} service is not available")
        raise ServiceTimeout(f"the {self.service_name} service did not answer in time")

    def _publish(self, args, kwargs):
        """Send the request; its correlation id, expected on the reply queue."""
        target, calls = self.target, self.target.calls
        known = (calls.amqp_uri, self.service_name)
        correlation_id = str(uuid.uuid4())
        calls.reply_queue.expect(correlation_id)
        routing_key = f"{self.service_name}.{self.method_name}"
        # The CLIENT span's traceparent replaces the worker's, so the callee's span is the call's child.
        headers = outgoing_headers(self.get_message_headers(self.worker_ctx))
        try:
            if known in _known_queues:
                content_type, encoding, body = kombu.serialization.dumps(
                    {"args": args, "kwargs": kwargs}, calls.serializer
                )
                calls.channel.publish(
                    body,
                    content_type,
                    encoding,
                    calls.exchange.name,
                    routing_key,
                    reply_to=calls.reply_queue.routing_key,
                    correlation_id=correlation_id,
                    expiration=target.expiration,
                    application_headers=headers,
                )
            else:  # confirmed and mandatory: a target with no queue is known at once
                calls.confirmed_publisher.publish(
                    {"args": args, "kwargs": kwargs},
                    exchange=calls.exchange,
                    routing_key=routing_key,
                    mandatory=True,
                    expiration=target.timeout,
                    reply_to=calls.reply_queue.routing_key,
                    correlation_id=correlation_id,
                    extra_headers=headers,
                )
                _known_queues.add(known)
        except UndeliverableMessage:  # no queue bound for the service: the publisher confirm tells at once
            calls.reply_queue.forget(correlation_id)
            raise ServiceUnavailable(f"the {self.service_name} service is not available")
        except BROKER_ERRORS:
            calls.reply_queue.forget(correlation_id)
            raise ServiceUnavailable(
                f"the {self.service_name} service is not available (the message broker is not reachable)"
            )
        return correlation_id


class TimedServiceProxy:
    """The proxy to one service that a worker is given: `proxy.method(*args)` calls it."""

    __slots__ = ("worker_ctx", "target")

    def __init__(self, worker_ctx, target):
        self.worker_ctx = worker_ctx
        self.target = target

    def __getattr__(self, name):
        return TimedMethodProxy(self.worker_ctx, self.target, name)


class RpcCalls(SharedExtension):
    """What every RPC caller of a container shares: the reply queue, the channel for requests, a confirming
    publisher for a target's first request, and the settings they all use."""

    reply_queue = ReplyQueue()
    channel = RpcChannel()

    def setup(self):
        config = self.container.config
        self.amqp_uri = config[AMQP_URI_CONFIG_KEY]
        self.ssl = config.get(AMQP_SSL_CONFIG_KEY)
        self.exchange = get_rpc_exchange(config)
        self.serializer = config.get(SERIALIZER_CONFIG_KEY, DEFAULT_SERIALIZER)
        self.confirmed_publisher = fast_publisher(
            self.amqp_uri,
            ssl=self.ssl,
            login_method=config.get(LOGIN_METHOD_CONFIG_KEY),
            serializer=self.serializer,
            use_confirms=True,
            delivery_mode=TRANSIENT,
        )

    def connections(self):
        """Broker connections lost or made so far by the reply consumer and the request channel: a call during
        which this changed may have lost its request or its reply with a connection."""
        return (self.reply_queue.consumer.connections, self.reply_queue.consumer.consuming, self.channel.losses)


class Rpc(DependencyProvider):
    """Injects a proxy to `target_service` whose calls time out, fail fast and may be retried (see the module
    docstring).

    The timeout is `timeout` if given, else config `RPC_TIMEOUTS[target_service]`, else `RPC_TIMEOUT`, else 5 s.
    `idempotent` names the target's methods that are safe to send twice (reads): they are retried once.
    Config `BREAKER_FAILURES` (0 or unset: no breaker) and `BREAKER_RESET_SECONDS` (default 10) set the circuit
    breaker, whose state is the gauge `cartmesh_circuit_state`.
    """

    calls = RpcCalls()

    def __init__(self, target_service, timeout=None, idempotent=()):
        self.target_service = target_service
        self.timeout = timeout
        self.idempotent = frozenset(idempotent)
        self.target = None

    def setup(self):
        config = self.container.config
        metrics.rpc_client_series(self.container.service_name, self.target_service)
        breaker = None
        failures = int(config.get("BREAKER_FAILURES") or 0)
        if failures > 0:
            breaker = CircuitBreaker(
                self.target_service,
                failures=failures,
                reset_seconds=float(config.get("BREAKER_RESET_SECONDS") or DEFAULT_BREAKER_RESET_SECONDS),
                on_change=lambda old, new: self._circuit_changed(old, new),
            )
            metrics.set_circuit_state(self.container.service_name, self.target_service, breaker.state)
        self.target = CallTarget(
            self.target_service,
            self.calls,
            self.timeout if self.timeout is not None else rpc_timeout(config, self.target_service),
            breaker=breaker,
            idempotent=self.idempotent,
            retry_jitter=float(config.get("RPC_RETRY_JITTER_SECONDS", DEFAULT_RETRY_JITTER_SECONDS)),
        )

    @property
    def breaker(self):
        return self.target.breaker

    def _circuit_changed(self, old, new):
        metrics.set_circuit_state(self.container.service_name, self.target_service, new)
        log.log(
            logging.INFO if new == CLOSED else logging.WARNING,
            "circuit to %s: %s -> %s",
            self.target_service,
            old,
            new,
        )

    def get_dependency(self, worker_ctx):
        return TimedServiceProxy(worker_ctx, self.target)


# --- the serving side -------------------------------------------------------------------------------------------


class ResilientRpc(RpcEntrypoint):
    """nameko's RPC entrypoint with the cheaper reply path, surviving a reply it cannot send (see the module
    docstring). Use `rpc`."""

    channel = RpcChannel()
    rpc_consumer = TypedRpcConsumer()

    def setup(self):
        super().setup()
        self.reply_exchange = get_rpc_exchange(self.container.config).name
        self.arity = Arity(getattr(self.container.service_cls, self.method_name))

    def check_signature(self, args, kwargs):
        # nameko binds every call's arguments with inspect.getcallargs (the dearest step of receiving a call); a
        # call that plainly fits the method needs no binding, any other gets nameko's exact check and message.
        if not self.arity.fits(args, kwargs):
            super().check_signature(args, kwargs)

    def handle_result(self, message, worker_ctx, result, exc_info):
        try:
            result, exc_info = self.reply(message, result, exc_info)
        except BROKER_ERRORS as exc:
            log.warning(
                "the reply of %s could not be sent (the message broker is not reachable): %s",
                message.delivery_info.get("routing_key"),
                exc,
            )
        try:  # acknowledged even when the reply was lost: the work is done, and running it again is worse
            self.rpc_consumer.queue_consumer.ack_message(message)
        except BROKER_ERRORS:
            pass  # the connection is gone, and the broker gives the request to another instance
        return result, exc_info

    def reply(self, message, result, exc_info):
        """Send the answer to the caller's reply queue, encoded as the request was; (result, exc_info) as sent."""
        serializer = kombu.serialization.registry.type_to_name[message.properties["content_type"]]
        error = serialize(exc_info[1]) if exc_info is not None else None
        try:
            content_type, encoding, body = kombu.serialization.dumps({"result": result, "error": error}, serializer)
        except Exception:  # the result cannot be sent: the caller gets an error that can
            exc_info = sys.exc_info()
            error = serialize(UnserializableValueError(result))
            result = None
            content_type, encoding, body = kombu.serialization.dumps({"result": None, "error": error}, serializer)
        self.channel.publish(
            body,
            content_type,
            encoding,
            self.reply_exchange,
            message.properties["reply_to"],
            correlation_id=message.properties.get("correlation_id"),
        )
        return result, exc_info


class Arity:
    """The arguments a service method takes after `self`, to tell quickly that a call's arguments fit it."""

    def __init__(self, method):
        parameters = list(inspect.signature(method).parameters.values())[1:]
        plain = (inspect.Parameter.POSITIONAL_OR_KEYWORD,)
        self.simple = all(parameter.kind in plain for parameter in parameters)  # no *args, **kwargs, / or *
        self.names = tuple(parameter.name for parameter in parameters)
        self.required = frozenset(p.name for p in parameters if p.default is inspect.Parameter.empty)

    def fits(self, args, kwargs):
        """True when `method(self, *args, **kwargs)` certainly binds; False means "check it the long way"."""
        if not self.simple or len(args) > len(self.names):
            return False
        positional = self.names[: len(args)]
        if not kwargs:
            return self.required <= set(positional)
        if any(name not in self.names or name in positional for name in kwargs):
            return False
        return self.required <= set(positional).union(kwargs)


rpc = ResilientRpc.decorator
