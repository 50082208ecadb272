"""Registers the errors of `services.common.errors` with nameko, so an RPC caller gets them back as themselves.

nameko rebuilds a remote exception as its own class only if that class was registered with
`deserialize_to_instance` in the caller's process; otherwise the caller sees a `RemoteError`. Importing this
module registers every class in `errors.REMOTE`. `services.common.rpc` imports it, so every process that calls or
serves RPC has them registered.
"""

from nameko.exceptions import deserialize_to_instance

from services.common.errors import REMOTE

for error_class in REMOTE:
    deserialize_to_instance(error_class)
