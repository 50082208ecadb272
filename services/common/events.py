"""Consuming events reliably: each event is applied once, and a handler that keeps failing parks the event.

nameko acks an event whose handler raised, and the event is gone. `reliable_event_handler`
is nameko's `event_handler` with a different ending for failures: the event is republished to a retry queue
whose messages expire after a back-off (`EVENT_RETRY_SECONDS` × 2^(attempt-1), at most 60 s) and then flow back
to the handler's queue; after `EVENT_MAX_ATTEMPTS` attempts (default 5) it goes to the service's parked queue
`parked-<service>` instead. `python -m services.common.deadletters` lists and replays parked events. The handler's
queue, the retry queue and the parked queue are quorum queues when `AMQP_QUEUE_TYPE` says so
(services.common.queues).

Redelivery happens (a relay publishes twice, a retry races a late success), so handlers call
`first_delivery(session, event_id, handler)` before their effect: it records the event id in the
`processed_events` table in the same transaction as the effect, and answers False for an event already applied.
"""

import logging
import traceback

from kombu import Queue
from nameko.amqp.publish import Publisher
from nameko.constants import AMQP_SSL_CONFIG_KEY, AMQP_URI_CONFIG_KEY
from nameko.events import EventHandler
from sqlalchemy import Column, MetaData, String, Table, insert, select

from services.common.clock import utcnow
from services.common.db import UtcDateTime
from services.common.queues import typed

log = logging.getLogger(__name__)

ATTEMPTS_HEADER = "x-cartmesh-attempts"
QUEUE_HEADER = "x-cartmesh-queue"
ERROR_HEADER = "x-cartmesh-error"
MAX_BACKOFF_SECONDS = 60.0


def processed_events_table(metadata: MetaData):
    """The `processed_events` table on a service's metadata: which handler applied which event."""
    return Table(
        "processed_events",
        metadata,
        Column("event_id", String(64), primary_key=True),
        Column("handler", String(200), primary_key=True),
        Column("processed_at", UtcDateTime, nullable=False),
    )


PROCESSED_EVENTS = processed_events_table(MetaData())


def first_delivery(session, event_id, handler):
    """True the first time `handler` sees `event_id` (and records it in this transaction), False after.

    Two concurrent deliveries both pass the check; the second insert then fails on the primary key, its
    transaction rolls back with no effect, and the retry finds the event recorded. Under eventlet on SQLite,
    make RPC calls before this (it writes).
    """
    table = PROCESSED_EVENTS
    seen = session.execute(
        select(table.c.event_id).where(table.c.event_id == event_id, table.c.handler == handler)
    ).first()
    if seen:
        return False
    session.execute(insert(table).values(event_id=event_id, handler=handler, processed_at=utcnow()))
    return True


def retry_delay(attempt, base_seconds):
    """Seconds before attempt `attempt + 1`: doubling from `base_seconds`, capped."""
    return min(base_seconds * 2 ** (attempt - 1), MAX_BACKOFF_SECONDS)


def parked_queue(service_name, config):
    return typed(Queue(f"parked-{service_name}", durable=True), config)


def retry_queue(queue_name, config):
    """Messages wait here until they expire, then the broker dead-letters them back to `queue_name`."""
    return typed(
        Queue(
            f"{queue_name}.retry",
            durable=True,
            queue_arguments={"x-dead-letter-exchange": "", "x-dead-letter-routing-key": queue_name},
        ),
        config,
    )


class ReliableEventHandler(EventHandler):
    """nameko's `EventHandler`, but a failed event is retried with back-off and then parked, never dropped."""

    def setup(self):
        super().setup()
        config = self.container.config
        typed(self.queue, config)
        self.max_attempts = int(config.get("EVENT_MAX_ATTEMPTS", 5))
        self.retry_seconds = float(config.get("EVENT_RETRY_SECONDS", 1))
        self.publisher = Publisher(config[AMQP_URI_CONFIG_KEY], ssl=config.get(AMQP_SSL_CONFIG_KEY), use_confirms=True)

    def handle_message_processed(self, message, result=None, exc_info=None):
        if exc_info is not None:
            try:
                self._retry_or_park(message, exc_info)
            except Exception:  # could not republish: give it back to the queue rather than lose it
                log.exception("could not retry or park a failed event; requeueing it")
                self.queue_consumer.requeue_message(message)
                return
        self.queue_consumer.ack_message(message)

    def _retry_or_park(self, message, exc_info):
        attempt = int(message.headers.get(ATTEMPTS_HEADER, 0)) + 1
        headers = dict(message.headers, **{ATTEMPTS_HEADER: attempt, QUEUE_HEADER: self.queue.name})
        if attempt < self.max_attempts:
            delay = retry_delay(attempt, self.retry_seconds)
            queue = retry_queue(self.queue.name, self.container.config)
            log.warning(
                "event %s failed (attempt %d of %d); retrying in %.1f s",
                self.queue.name,
                attempt,
                self.max_attempts,
                delay,
            )
            self.publisher.publish(
                message.payload, exchange="", routing_key=queue.name, headers=headers, expiration=delay, declare=[queue]
            )
        else:
            queue = parked_queue(self.container.service_name, self.container.config)
            headers[ERROR_HEADER] = "".join(traceback.format_exception_only(*exc_info[:2])).strip()[:1000]
            log.error("event %s failed %d times; parked in %s", self.queue.name, attempt, queue.name)
            self.publisher.publish(
                message.payload, exchange="", routing_key=queue.name, headers=headers, declare=[queue]
            )


reliable_event_handler = ReliableEventHandler.decorator
