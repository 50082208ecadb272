"""Publishing without building a kombu `Connection` for every message.

nameko's `Publisher.publish` asks `nameko.amqp.publish.get_producer` for a pooled producer, and that function
builds a new kombu `Connection` object on every call only to find the pool it belongs to: parsing the AMQP URI
and hashing the connection's settings took about a third of the CPU of publishing one RPC reply. `install()`
replaces that function with one that keeps the `Connection` object per set of arguments, so each publish goes
straight to the same pool of producers (the pools, their connections and channels are kombu's, unchanged).
Every publisher in the process benefits: RPC requests and replies, events, the outbox relay.
"""

from contextlib import contextmanager

from kombu import Connection
from kombu.pools import producers
from nameko.amqp import publish as nameko_publish
from nameko.constants import DEFAULT_TRANSPORT_OPTIONS

_connections = {}
_original_get_producer = nameko_publish.get_producer


def _key(amqp_uri, confirms, ssl, login_method, transport_options):
    # ssl may be a mapping (AMQP_SSL); repr keeps the key hashable and tells different settings apart.
    return (amqp_uri, bool(confirms), repr(ssl), login_method, repr(sorted(transport_options.items())))


@contextmanager
def get_producer(amqp_uri, confirms=True, ssl=None, login_method=None, transport_options=None):
    """nameko's `get_producer` (same arguments, same pooled producer), with the `Connection` object kept."""
    options = dict(
        DEFAULT_TRANSPORT_OPTIONS if transport_options is None else transport_options, confirm_publish=confirms
    )
    key = _key(amqp_uri, confirms, ssl, login_method, options)
    connection = _connections.get(key)
    if connection is None:
        connection = _connections[key] = Connection(
            amqp_uri, transport_options=options, ssl=ssl, login_method=login_method
        )
    with producers[connection].acquire(block=True) as producer:
        yield producer


def install():
    """Make nameko's publishers in this process use `get_producer` (idempotent)."""
    nameko_publish.get_producer = get_producer


def uninstall():
    nameko_publish.get_producer = _original_get_producer
