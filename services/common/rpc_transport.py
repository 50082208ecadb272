"""How RPC requests and replies travel: one channel per container to send them, one no-ack consumer for replies.

nameko sends every message through its `Publisher` and kombu's `Producer` (a pooled producer per message,
kombu's retry wrapper, two header dictionaries copied, the body serialised through two layers) and receives
through kombu's `Consumer` and a greenthread per message. For the small, unconfirmed, transient messages of RPC
(see services.common.rpc) that was two thirds of the CPU of publishing one (150 µs against 53 µs for py-amqp's
own `basic_publish` here). This module keeps what those layers give that RPC needs, and nothing else:

- `RpcChannel` (a SharedExtension: one per container) publishes on one py-amqp channel of one connection, shared by
  the container's greenthreads under a semaphore (their frames must not interleave on the socket). The
  connection is made at the first publish, with a 1 s connect timeout; a publish that meets a broken connection
  makes a new one and is tried once more, and then fails (the caller answers `ServiceUnavailable`).
- `ReplyConsumer` (a SharedExtension) declares the container's reply queue — exclusive to its connection, so the
  broker deletes it with the connection — and consumes it in no-ack mode in one managed thread, handing each
  reply to its waiting call directly. A lost connection is made again (the queue with it) at once, then every
  second until a broker answers; calls waiting meanwhile end at their timeouts.

`AMQP_URI` may name several brokers, `;`-separated (the nodes of a cluster): kombu then connects to the first
that answers, and both connect to the next one in turn, without pausing, when one is away (`connect`).
"""

import logging

import amqp
import eventlet
import kombu.serialization
from amqp.exceptions import AMQPError as AmqpError
from amqp.exceptions import ConnectionError as AmqpConnectionError
from amqp.exceptions import RecoverableConnectionError
from eventlet.event import Event
from eventlet.semaphore import Semaphore
from kombu import Connection
from kombu.exceptions import OperationalError
from nameko.constants import (
    AMQP_SSL_CONFIG_KEY,
    AMQP_URI_CONFIG_KEY,
    DEFAULT_HEARTBEAT,
    HEARTBEAT_CONFIG_KEY,
    LOGIN_METHOD_CONFIG_KEY,
)
from nameko.extensions import SharedExtension

log = logging.getLogger(__name__)

CONNECT_TIMEOUT = 1.0  # seconds: a broker that does not answer by then is away
RECONNECT_SECONDS = 1.0
TRANSIENT = 1  # AMQP delivery mode: kept in memory only
# What the broker being away looks like (kombu wraps socket errors in OperationalError).
BROKER_ERRORS = (OSError, OperationalError, AmqpConnectionError, RecoverableConnectionError)


def connection_for(config, **options):
    """A kombu `Connection` (not yet connected) to the container's broker, as nameko's own are made."""
    return Connection(
        config[AMQP_URI_CONFIG_KEY],
        ssl=config.get(AMQP_SSL_CONFIG_KEY),
        login_method=config.get(LOGIN_METHOD_CONFIG_KEY),
        connect_timeout=CONNECT_TIMEOUT,
        **options,
    )


def addresses(amqp_uri):
    """The broker URLs of an `AMQP_URI`: one, or several `;`-separated (kombu's fail-over list)."""
    return [url.strip() for url in amqp_uri.split(";") if url.strip()]


def connect(connection):
    """Connect `connection` now, trying each of its broker addresses once without pausing (kombu's `connect()`
    waits 2 s before its one retry); raises one of `BROKER_ERRORS` when none answers."""
    connection.ensure_connection(
        max_retries=max(1, len(connection.alt)), interval_start=0, interval_step=0, interval_max=0
    )
    return connection


def close_or_collect(connection, broken):
    """Close `connection` (None: nothing to do); one known to be `broken` is only freed: closing it politely
    waits for the broker's answer on a socket that may never give one."""
    if connection is None:
        return
    if not broken:
        try:
            connection.close()
            return
        except Exception:  # broken after all: only its resources are left to free
            pass
    connection.collect()


class RpcChannel(SharedExtension):
    """The container's channel for RPC requests and replies: unconfirmed publishes of ready-made bodies."""

    def __init__(self):
        self.connection = None
        self.channel = None
        self.lock = Semaphore()
        self.losses = 0  # connections found broken so far

    def publish(self, body, content_type, content_encoding, exchange, routing_key, **properties):
        """Send `body` (bytes, already serialised) with the AMQP `properties` (reply_to, correlation_id,
        expiration in ms as a string, application_headers...); transient. Raises one of `BROKER_ERRORS` when the
        broker cannot be reached."""
        message = amqp.Message(
            body, content_type=content_type, content_encoding=content_encoding, delivery_mode=TRANSIENT, **properties
        )
        with self.lock:
            try:
                self._channel().basic_publish(message, exchange=exchange, routing_key=routing_key)
            except BROKER_ERRORS:
                self.losses += 1
                self._close(broken=True)  # a connection the broker dropped (it restarted): make a new one, once
                self._channel().basic_publish(message, exchange=exchange, routing_key=routing_key)

    def _channel(self):
        if self.channel is None:
            connection = connection_for(self.container.config)
            try:
                self.channel = connect(connection).channel()
            except BaseException:
                connection.collect()
                raise
            self.connection = connection
        return self.channel

    def _close(self, broken=False):
        connection, self.connection, self.channel = self.connection, None, None
        close_or_collect(connection, broken)

    def stop(self):
        with self.lock:
            self._close()

    def kill(self):
        self.connection, self.channel = None, None


class ReplyConsumer(SharedExtension):
    """Consumes a reply queue without acknowledgements and hands each body to `on_reply(correlation_id, body)`.

    `listen(queue, on_reply)` (once, at set-up) names the kombu `Queue` (it must be exclusive) and the callback;
    consuming starts with the container and `start()` returns once the queue is being consumed.
    """

    def __init__(self):
        self.queue = None
        self.on_reply = None
        self.connection = None
        self.running = False
        self.consuming = False  # on the current connection
        self.connections = 0  # made so far: more than one means it reconnected
        self.ready = Event()
        self.thread = None

    def listen(self, queue, on_reply):
        self.queue, self.on_reply = queue, on_reply

    def start(self):
        if self.queue is None or self.running:
            return
        self.running = True
        self.thread = self.container.spawn_managed_thread(self._consume_forever)
        self.ready.wait()

    def stop(self):
        self.running = False
        if self.thread is not None:
            self.thread.wait()

    def kill(self):
        self.running = False
        if self.thread is not None:
            self.thread.kill()
        self._close()

    def _consume_forever(self):
        while self.running:
            try:
                self._consume()
            except BROKER_ERRORS + (AmqpError,) as exc:
                # Also a channel error: after a reconnection the broker may still hold the old connection's
                # exclusive queue for a moment (RESOURCE_LOCKED) until it notices that connection is gone.
                was_consuming = self.consuming
                self._close(broken=True)  # not consuming from now on, not only after the pause
                if self.running:
                    log.warning("reply queue %s: not consuming (%s); trying again", self.queue.name, exc)
                    if not was_consuming:  # a connection that was serving is replaced at once (another node)
                        eventlet.sleep(RECONNECT_SECONDS)
            finally:
                self._close()

    def _consume(self):
        config = self.container.config
        self.connection = connection_for(config, heartbeat=config.get(HEARTBEAT_CONFIG_KEY, DEFAULT_HEARTBEAT))
        channel = connect(self.connection).channel()
        self.queue.bind(channel).declare()
        channel.basic_consume(queue=self.queue.name, no_ack=True, callback=self._deliver)
        self.consuming = True
        self.connections += 1
        if not self.ready.ready():
            self.ready.send(None)
        while self.running:
            try:
                self.connection.drain_events(timeout=1)
            except TimeoutError:
                self.connection.heartbeat_check()

    def _deliver(self, message):
        properties = message.properties
        try:
            body = kombu.serialization.loads(
                message.body, properties.get("content_type"), properties.get("content_encoding")
            )
        except Exception:  # a reply nobody can read: its call ends at its timeout
            log.exception("reply queue %s: a reply could not be decoded", self.queue.name)
            return
        self.on_reply(properties.get("correlation_id"), body)

    def _close(self, broken=False):
        self.consuming = False
        connection, self.connection = self.connection, None
        close_or_collect(connection, broken)
