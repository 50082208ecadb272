"""The `health` RPC every service answers: the gateway's `/health` and container healthchecks call it."""

from sqlalchemy import text

from services.common.rpc import rpc


class HealthRpc:
    """Mix into a service that has a `db` session: `health()` answers "ok" when the database answers."""

    @rpc
    def health(self):
        self.db.execute(text("SELECT 1"))
        return "ok"
