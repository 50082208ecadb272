"""RPC calls that always end, and end fast when the callee or the broker is away.

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
  then one probe call decides. A service's deliberate errors (NotFound...) are answers and never count.
- **reads named in `idempotent` are sent a second time** after a random pause of up to
  `RPC_RETRY_JITTER_SECONDS` (default 0.1 s) when the first got no answer (timeout or unavailable). Nothing else
  is: a write may have been done by the service even though its answer never came.

The serving side: `rpc` is nameko's `@rpc` entrypoint, except that a reply that cannot be sent because the broker
is away is logged and dropped. nameko lets that error end the worker's managed thread, which kills the whole
container (and `nameko run` with it): every service busy with a request when the broker went away died with it.
The caller has its own timeout, and the unacknowledged request goes back to the queue with the connection.
"""

import logging
import random
import uuid
from contextlib import nullcontext

import eventlet
from amqp.exceptions import ConnectionError as AmqpConnectionError
from amqp.exceptions import RecoverableConnectionError
from kombu import Connection
from kombu.exceptions import OperationalError
from nameko.amqp.publish import UndeliverableMessage
from nameko.rpc import MethodProxy, RpcProxy, RpcReply, ServiceProxy, get_rpc_exchange
from nameko.rpc import Rpc as RpcEntrypoint

import services.common.remote_errors  # noqa: F401  (registers the error classes with nameko)
from services.common import metrics
from services.common.breaker import CLOSED, CircuitBreaker, CircuitOpen
from services.common.errors import ServiceTimeout, ServiceUnavailable
from services.common.metrics import rpc_call
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
# What the broker being away looks like to a publisher (kombu wraps socket errors in OperationalError).
BROKER_ERRORS = (OSError, OperationalError, AmqpConnectionError, RecoverableConnectionError)

log = logging.getLogger(__name__)


def rpc_timeout(config, target_service, default=DEFAULT_TIMEOUT):
    """Seconds to wait for `target_service`: `RPC_TIMEOUTS[target]`, else `RPC_TIMEOUT`, else `default`."""
    per_target = config.get("RPC_TIMEOUTS") or {}
    return float(per_target.get(target_service) or config.get("RPC_TIMEOUT") or default)


def consumer_count(amqp_uri, service_name, ssl=None):
    """How many consumers the broker has on `service_name`'s RPC queue (0 if there is no such queue, or no
    broker to ask)."""
    try:
        with Connection(amqp_uri, ssl=ssl, connect_timeout=2) as connection:
            channel = connection.channel()
            try:
                _, _, consumers = channel.queue_declare(f"rpc-{service_name}", passive=True)
            except Exception:  # the broker closes the channel when the queue does not exist
                return 0
            return consumers
    except BROKER_ERRORS:
        return 0


def is_no_answer(exc):
    """The failures a circuit breaker counts: the call got no answer (not a service's deliberate error)."""
    return isinstance(exc, (ServiceTimeout, ServiceUnavailable)) and not isinstance(exc, CircuitOpen)


class TimedMethodProxy(MethodProxy):
    def __init__(
        self,
        worker_ctx,
        service_name,
        method_name,
        reply_listener,
        timeout,
        breaker=None,
        retry=False,
        retry_jitter=DEFAULT_RETRY_JITTER_SECONDS,
        **options,
    ):
        self.timeout = timeout
        self.breaker = breaker
        # Not `self.retry`: nameko's MethodProxy reads an attribute of that name as its publisher's `retry`, which
        # turned off the publish retry (and with it the replacement of a dead pooled connection) for every call
        # that is not an idempotent read.
        self.resend = retry
        self.retry_jitter = retry_jitter
        options.setdefault("retry_policy", PUBLISH_RETRY_POLICY)
        super().__init__(worker_ctx, service_name, method_name, reply_listener, expiration=timeout, **options)
        # An instance attribute: nameko's class-level default is shared by every publisher, and mutated.
        self.publisher.transport_options = dict(PUBLISH_TRANSPORT_OPTIONS)

    def __call__(self, *args, **kwargs):
        try:
            return self._guarded_call(*args, **kwargs)
        except CircuitOpen:
            raise
        except (ServiceTimeout, ServiceUnavailable):
            if not self.resend:
                raise
        metrics.rpc_call_retried(self.worker_ctx.service_name, self.service_name)
        eventlet.sleep(random.uniform(0, self.retry_jitter))  # callers that failed together retry apart
        return self._guarded_call(*args, **kwargs)

    def _guarded_call(self, *args, **kwargs):
        guard = self.breaker.calling(is_no_answer) if self.breaker is not None else nullcontext()
        try:
            with guard:
                # Timed, counted (timeout / unavailable) and traced as a CLIENT span: services.common.metrics.
                with rpc_call(self.worker_ctx, self.service_name, self.method_name):
                    return self._timed_call(*args, **kwargs)
        except CircuitOpen:
            metrics.rpc_call_refused(self.worker_ctx.service_name, self.service_name)
            raise

    def _timed_call(self, *args, **kwargs):
        reply = self._publish(*args, **kwargs)
        try:
            with eventlet.Timeout(self.timeout):
                return reply.result()
        except eventlet.Timeout:
            self._forget(reply)
            if consumer_count(self.amqp_uri, self.service_name, self.ssl) == 0:
                raise ServiceUnavailable(f"the {self.service_name} service is not available")
            raise ServiceTimeout(f"the {self.service_name} service did not answer in time")

    def _publish(self, *args, **kwargs):
        """nameko's `MethodProxy._call`, bounded, and forgetting the reply slot of a request never sent."""
        correlation_id = str(uuid.uuid4())
        reply_event = self.reply_listener.get_reply_event(correlation_id)
        try:
            with eventlet.Timeout(self.timeout):
                self.publisher.publish(
                    {"args": args, "kwargs": kwargs},
                    exchange=get_rpc_exchange(self.container.config),
                    routing_key=f"{self.service_name}.{self.method_name}",
                    mandatory=True,
                    reply_to=self.reply_listener.routing_key,
                    correlation_id=correlation_id,
                    extra_headers=self.get_message_headers(self.worker_ctx),
                )
        except UndeliverableMessage:  # no queue bound for the service: publisher confirms tell at once
            self.reply_listener._reply_events.pop(correlation_id, None)
            raise ServiceUnavailable(f"the {self.service_name} service is not available")
        except (eventlet.Timeout,) + BROKER_ERRORS:
            self.reply_listener._reply_events.pop(correlation_id, None)
            raise ServiceUnavailable(
                f"the {self.service_name} service is not available (the message broker is not reachable)"
            )
        return RpcReply(reply_event)

    def get_message_headers(self, worker_ctx):
        # The CLIENT span's traceparent replaces the worker's, so the callee's span is the call's child.
        return outgoing_headers(super().get_message_headers(worker_ctx))

    def _forget(self, reply):
        # The reply may never come (the request expired); drop its slot in the shared reply listener.
        events = self.reply_listener._reply_events
        for correlation_id, event in list(events.items()):
            if event is reply.reply_event:
                events.pop(correlation_id, None)


class TimedServiceProxy(ServiceProxy):
    def __init__(
        self,
        worker_ctx,
        service_name,
        reply_listener,
        timeout,
        breaker=None,
        idempotent=(),
        retry_jitter=DEFAULT_RETRY_JITTER_SECONDS,
        **options,
    ):
        super().__init__(worker_ctx, service_name, reply_listener, **options)
        self.timeout = timeout
        self.breaker = breaker
        self.idempotent = idempotent
        self.retry_jitter = retry_jitter

    def __getattr__(self, name):
        return TimedMethodProxy(
            self.worker_ctx,
            self.service_name,
            name,
            self.reply_listener,
            self.timeout,
            breaker=self.breaker,
            retry=name in self.idempotent,
            retry_jitter=self.retry_jitter,
            **self.options,
        )


class Rpc(RpcProxy):
    """Injects a proxy to `target_service` whose calls time out, fail fast and may be retried (see the module
    docstring).

    The timeout is `timeout` if given, else config `RPC_TIMEOUTS[target_service]`, else `RPC_TIMEOUT`, else 5 s.
    `idempotent` names the target's methods that are safe to send twice (reads): they are retried once.
    Config `BREAKER_FAILURES` (0 or unset: no breaker) and `BREAKER_RESET_SECONDS` (default 10) set the circuit
    breaker, whose state is the gauge `cartmesh_circuit_state`.
    """

    def __init__(self, target_service, timeout=None, idempotent=(), **options):
        super().__init__(target_service, **options)
        self.timeout = timeout
        self.idempotent = frozenset(idempotent)
        self.breaker = None

    def setup(self):
        super().setup()
        config = self.container.config
        if self.timeout is None:
            self.timeout = rpc_timeout(config, self.target_service)
        self.retry_jitter = float(config.get("RPC_RETRY_JITTER_SECONDS", DEFAULT_RETRY_JITTER_SECONDS))
        failures = int(config.get("BREAKER_FAILURES") or 0)
        if failures > 0:
            service, target = self.container.service_name, self.target_service
            self.breaker = CircuitBreaker(
                target,
                failures=failures,
                reset_seconds=float(config.get("BREAKER_RESET_SECONDS") or DEFAULT_BREAKER_RESET_SECONDS),
                on_change=lambda old, new: self._circuit_changed(old, new),
            )
            metrics.set_circuit_state(service, target, self.breaker.state)

    def _circuit_changed(self, old, new):
        metrics.set_circuit_state(self.container.service_name, self.target_service, new)
        log.log(
            logging.INFO if new == CLOSED else logging.WARNING, "circuit to %s: %s -> %s", self.target_service, old, new
        )

    def get_dependency(self, worker_ctx):
        return TimedServiceProxy(
            worker_ctx,
            self.target_service,
            self.rpc_reply_listener,
            self.timeout,
            breaker=self.breaker,
            idempotent=self.idempotent,
            retry_jitter=self.retry_jitter,
            **self.options,
        )


class ResilientRpc(RpcEntrypoint):
    """nameko's RPC entrypoint that survives a reply it cannot send (see the module docstring). Use `rpc`."""

    def handle_result(self, message, worker_ctx, result, exc_info):
        try:
            return super().handle_result(message, worker_ctx, result, exc_info)
        except BROKER_ERRORS as exc:
            log.warning(
                "the reply of %s could not be sent (the message broker is not reachable): %s",
                message.delivery_info.get("routing_key"),
                exc,
            )
            return result, exc_info


rpc = ResilientRpc.decorator
