"""RPC calls that always end: nameko's `RpcProxy` waits forever for a reply (nameko issue #360).

`Rpc(target)` injects a proxy like nameko's, but each call waits at most `timeout` seconds. The request is
published with the same time to live, so a call the caller has given up on is never run later by an instance
that comes back. On timeout the target's queue is inspected: no consumer → `ServiceUnavailable`, else
`ServiceTimeout`.
"""
import eventlet
from kombu import Connection
from nameko.constants import AMQP_URI_CONFIG_KEY
from nameko.exceptions import UnknownService
from nameko.rpc import MethodProxy, RpcProxy, ServiceProxy

from services.common.errors import ServiceTimeout, ServiceUnavailable
from services.common.metrics import rpc_call
from services.common.tracing import outgoing_headers

DEFAULT_TIMEOUT = 5.0


def rpc_timeout(config, target_service, default=DEFAULT_TIMEOUT):
    """Seconds to wait for `target_service`: `RPC_TIMEOUTS[target]`, else `RPC_TIMEOUT`, else `default`."""
    per_target = config.get("RPC_TIMEOUTS") or {}
    return float(per_target.get(target_service) or config.get("RPC_TIMEOUT") or default)


def consumer_count(amqp_uri, service_name, ssl=None):
    """How many consumers the broker has on `service_name`'s RPC queue (0 if there is no such queue)."""
    with Connection(amqp_uri, ssl=ssl, connect_timeout=2) as connection:
        channel = connection.channel()
        try:
            _, _, consumers = channel.queue_declare(f"rpc-{service_name}", passive=True)
        except Exception:  # the broker closes the channel when the queue does not exist
            return 0
        return consumers


class TimedMethodProxy(MethodProxy):
    def __init__(self, worker_ctx, service_name, method_name, reply_listener, timeout, **options):
        self.timeout = timeout
        super().__init__(worker_ctx, service_name, method_name, reply_listener,
                         expiration=timeout, **options)

    def __call__(self, *args, **kwargs):
        # Timed, counted (timeout / unavailable) and traced as a CLIENT span: services.common.metrics.
        with rpc_call(self.worker_ctx, self.service_name, self.method_name):
            return self._timed_call(*args, **kwargs)

    def _timed_call(self, *args, **kwargs):
        try:
            reply = self._call(*args, **kwargs)
        except UnknownService:
            raise ServiceUnavailable(f"the {self.service_name} service is not available")
        try:
            with eventlet.Timeout(self.timeout):
                return reply.result()
        except eventlet.Timeout:
            self._forget(reply)
            if consumer_count(self.amqp_uri, self.service_name, self.ssl) == 0:
                raise ServiceUnavailable(f"the {self.service_name} service is not available")
            raise ServiceTimeout(f"the {self.service_name} service did not answer in time")

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
    def __init__(self, worker_ctx, service_name, reply_listener, timeout, **options):
        super().__init__(worker_ctx, service_name, reply_listener, **options)
        self.timeout = timeout

    def __getattr__(self, name):
        return TimedMethodProxy(self.worker_ctx, self.service_name, name, self.reply_listener,
                                self.timeout, **self.options)


class Rpc(RpcProxy):
    """Injects a proxy to `target_service` whose calls time out (see the module docstring).

    The timeout is `timeout` if given, else config `RPC_TIMEOUTS[target_service]`, else `RPC_TIMEOUT`, else 5 s.
    """

    def __init__(self, target_service, timeout=None, **options):
        super().__init__(target_service, **options)
        self.timeout = timeout

    def setup(self):
        super().setup()
        if self.timeout is None:
            self.timeout = rpc_timeout(self.container.config, self.target_service)

    def get_dependency(self, worker_ctx):
        return TimedServiceProxy(worker_ctx, self.target_service, self.rpc_reply_listener,
                                 self.timeout, **self.options)
