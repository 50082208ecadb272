"""Work a worker hands on to another worker of its service, once its own transaction has committed.

    class OrdersService:
        later = Later()

        @deferred
        def run_saga(self, order_id): ...

        @rpc
        def checkout(self, ...):
            ...
            self.later("run_saga", order_id)  # runs in a worker of its own after this transaction commits

Instead of an event to itself (an outbox row, a publish with a confirm, a delivery, an acknowledgement and a
processed-events row, all to reach the same service), the work starts in this process as soon as the change it
follows is committed, in a worker of its own (its own session, telemetry, and the request id of the worker that
asked). It is not durable: a process that dies before or during it leaves it undone, so deferred work must be
work that something durable redoes (orders' resume sweep finds every order still in its saga). A transaction
that rolls back runs nothing.
"""

import logging

from nameko.exceptions import ContainerBeingKilled
from nameko.extensions import DependencyProvider, Entrypoint

from services.common.db import Database, after_commit

log = logging.getLogger(__name__)


class Deferred(Entrypoint):
    """The entrypoint of a method that `Later` runs: it receives nothing from outside."""

    def run(self, args, context_data):
        """Run the method with `args` in a worker of its own, from a thread of the container's."""

        def spawn():
            try:
                self.container.spawn_worker(self, args, {}, context_data=context_data)
            except ContainerBeingKilled:
                log.info("%s.%s not run: the service is stopping", self.container.service_name, self.method_name)

        self.container.spawn_managed_thread(spawn, identifier=f"deferred {self.method_name}")


deferred = Deferred.decorator


class Later(DependencyProvider):
    """Injects `later(method_name, *args)`: the `@deferred` method `method_name` runs with `args` in a worker of
    its own once the worker's transaction (its `Database` dependency named `database_attr`) has committed, and
    never if it rolls back. Not durable (see the module docstring)."""

    def __init__(self, database_attr="db"):
        self.database_attr = database_attr

    def setup(self):
        self.entrypoints = {
            entrypoint.method_name: entrypoint
            for entrypoint in self.container.entrypoints
            if isinstance(entrypoint, Deferred)
        }
        self.database = next(
            provider
            for provider in self.container.dependencies
            if isinstance(provider, Database) and provider.attr_name == self.database_attr
        )

    def get_dependency(self, worker_ctx):
        def later(method_name, *args):
            entrypoint = self.entrypoints[method_name]
            session = self.database.sessions[worker_ctx]
            after_commit(session, lambda: entrypoint.run(args, dict(worker_ctx.data)))

        return later
