"""The `health` RPC every service answers: the gateway's `/health` and container healthchecks call it."""
from nameko.rpc import rpc
from sqlalchemy import text


class HealthRpc:
    """Mix into a service that has a `db` session: `health()` answers "ok" when the database answers."""

    @rpc
    def health(self):
        self.db.execute(text("SELECT 1"))
        return "ok"
