"""The gateway's view of its backends: every service it calls, asked for `health()` at once."""

import logging

import eventlet
from nameko.extensions import DependencyProvider

from services.common.errors import ServiceTimeout, ServiceUnavailable
from services.common.rpc import CallTarget, Rpc, RpcCalls, TimedServiceProxy

DEFAULT_HEALTH_TIMEOUT = 1.0

log = logging.getLogger(__name__)


class HealthProbe(DependencyProvider):
    """Injects `check()` → {service: "ok" | "unavailable" | "timeout" | "error"}.

    The services checked are the targets of the service's `Rpc` dependencies, so a backend the gateway calls
    is a backend /health reports, with nothing to keep in step. They are asked concurrently, each for at most
    config `HEALTH_TIMEOUT` seconds.
    """

    # What the service's Rpc proxies share: the reply queue and the channel.
    calls = RpcCalls()

    def setup(self):
        self.timeout = float(self.container.config.get("HEALTH_TIMEOUT") or DEFAULT_HEALTH_TIMEOUT)
        self.backends = sorted(
            {dependency.target_service for dependency in self.container.dependencies if isinstance(dependency, Rpc)}
        )
        self.targets = {name: CallTarget(name, self.calls, self.timeout) for name in self.backends}

    def get_dependency(self, worker_ctx):
        return lambda: self.check(worker_ctx)

    def check(self, worker_ctx):
        pool = eventlet.GreenPool(max(len(self.backends), 1))
        states = pool.imap(lambda name: self.probe(worker_ctx, name), self.backends)
        return dict(zip(self.backends, states, strict=True))

    def probe(self, worker_ctx, name):
        proxy = TimedServiceProxy(worker_ctx, self.targets[name])
        try:
            answer = proxy.health()
        except ServiceUnavailable:
            return "unavailable"
        except ServiceTimeout:
            return "timeout"
        except Exception as exc:  # it answers, but with an error (its database is down): not healthy
            log.warning("health check of %s failed (request %s): %r", name, worker_ctx.data.get("request_id"), exc)
            return "error"
        return "ok" if answer == "ok" else "error"
