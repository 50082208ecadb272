"""The call id of an HTTP request's write (services.common.calls): the services apply each call id once.

A request that carries an `Idempotency-Key` gets a call id made from the caller, the operation and the key, so the
client's retry of it is the same call (applied once, the first answer repeated); any other request gets a fresh
one, which still makes the broker's redelivery of its RPC call harmless.
"""

import hashlib
import uuid


def call_id(user_id, operation, idempotency_key=None):
    """The call id of one request: SHA-256 (hex) of user id, operation and key when a key was sent, else a UUID4."""
    if idempotency_key is None:
        return str(uuid.uuid4())
    text = "\n".join((user_id or "", operation, idempotency_key))
    return hashlib.sha256(text.encode()).hexdigest()
