"""Transactional outbox: an event exists if and only if the change it describes was committed.

`Outbox()` injects `emit(message)` (a `services.common.messages.Message`), which writes the event into the `outbox`
table in the worker's own database transaction (the session of the service's `Database` dependency). A relay running
in the same container publishes unpublished rows, oldest first, to the service's nameko events exchange
(`<service>.events`, so ordinary `@event_handler`s receive them) with publisher confirms, then marks them published.
A crash between commit and publish only delays the event: the next relay pass publishes it. A crash between publish
and marking publishes it again: every event carries `event_id`, and consumers record the ids they processed
(`services.common.events.first_delivery`). On PostgreSQL, relays of several instances take turns (a transaction
advisory lock per database): batches taken side by side would publish a later event before an earlier one.

While the broker is away the relay does not wait on it: a publish fails within about a second (a refused
connection at once; the RPC client's retry policy, not nameko's default of about 10 s of retries), and each
publish waits at most `CONFIRM_TIMEOUT_SECONDS` for the broker's confirm. The relay then tries again on its own
schedule: after the poll interval, doubled after each failed pass up to `MAX_RETRY_SECONDS`. A failed publish
ends its pass: the events before it are marked published, it and the later ones wait for the next pass, so
none overtakes an older one.
"""

import json
import logging
import time
import uuid

import eventlet
from eventlet.event import Event
from nameko.constants import AMQP_SSL_CONFIG_KEY, AMQP_URI_CONFIG_KEY
from nameko.extensions import DependencyProvider
from nameko.messaging import HeaderEncoder
from nameko.standalone.events import get_event_exchange
from sqlalchemy import Column, Index, MetaData, String, Table, Text, func, insert, select, update

from services.common import publishing
from services.common.clock import utcnow
from services.common.db import Database, UtcDateTime, after_commit
from services.common.messages import EVENT_ID
from services.common.metrics import set_outbox_backlog
from services.common.rpc import fast_publisher
from services.common.tracing import producer_headers

log = logging.getLogger(__name__)

CONFIRM_TIMEOUT_SECONDS = 5.0  # a broker that takes the message but never confirms it is away too
MAX_RETRY_SECONDS = 5.0  # the longest pause between failed passes (never shorter than the poll interval)
RELAY_LOCK = 0x6F7574626F78  # "outbox": the advisory lock relays of one database take turns with (PostgreSQL)


def outbox_table(metadata: MetaData):
    """The `outbox` table on a service's metadata (each service keeps its own, in its own database)."""
    return Table(
        "outbox",
        metadata,
        Column("id", String(36), primary_key=True),
        Column("event_type", String(100), nullable=False),
        Column("payload", Text, nullable=False),
        Column("headers", Text, nullable=False),
        Column("created_at", UtcDateTime, nullable=False),
        Column("published_at", UtcDateTime, nullable=True),
        Index("ix_outbox_unpublished", "published_at", "created_at"),
    )


# The same table on a private metadata, for the relay's own queries.
OUTBOX = outbox_table(MetaData())


class Outbox(DependencyProvider, HeaderEncoder):
    """Injects `emit(message) -> event_id`: records the event in the worker's transaction; the container's relay
    publishes it after commit (see the module docstring).

    `message` is a `services.common.messages.Message`: its `event_type` is the routing key, its `to_dict()` the JSON
    body, with `event_id` added. Config: `OUTBOX_POLL_SECONDS` (default 1), how often the relay looks for rows when
    no commit has woken it.

    At set-up, for the whole process: nameko's publishers keep their kombu `Connection` objects
    (services.common.publishing) instead of building one per message.
    """

    batch_size = 100

    def __init__(self, database_attr="db"):
        self.database_attr = database_attr
        self.table = OUTBOX
        self._wake = Event()
        self._stopping = Event()
        self._running = False
        self._thread = None
        self._count_backlog_at = 0.0

    def setup(self):
        publishing.install()
        config = self.container.config
        self.poll_seconds = float(config.get("OUTBOX_POLL_SECONDS", 1))
        self.exchange = get_event_exchange(self.container.service_name, config)
        self.publisher = fast_publisher(
            config[AMQP_URI_CONFIG_KEY], ssl=config.get(AMQP_SSL_CONFIG_KEY), use_confirms=True, declare=[self.exchange]
        )
        self._database()  # fail at setup, not at the first emit

    def _database(self):
        for provider in self.container.dependencies:
            if isinstance(provider, Database) and provider.attr_name == self.database_attr:
                return provider
        raise RuntimeError(f"Outbox needs a Database dependency named {self.database_attr!r}")

    def start(self):
        self._running = True
        self._stopping = Event()
        self._thread = self.container.spawn_managed_thread(self._relay_forever)

    def stop(self):
        self.kill()
        if self._thread is not None:
            self._thread.wait()

    def kill(self):
        self._running = False
        self.wake()
        if not self._stopping.ready():
            self._stopping.send()

    def get_dependency(self, worker_ctx):
        def emit(message):
            # Looked up at call time: nameko injects dependencies in no particular order.
            session = self._database().sessions[worker_ctx]
            event_type = message.event_type
            headers = producer_headers(worker_ctx, event_type, self.get_message_headers(worker_ctx))
            event_id = str(uuid.uuid4())
            body = dict(message.to_dict(), **{EVENT_ID: event_id})
            session.execute(
                insert(self.table).values(
                    id=event_id,
                    event_type=event_type,
                    payload=json.dumps(body),
                    headers=json.dumps(headers),
                    created_at=utcnow(),
                )
            )
            after_commit(session, self.wake)
            return event_id

        return emit

    def wake(self):
        if not self._wake.ready():
            self._wake.send()

    def _relay_forever(self):
        failures = 0
        while self._running:
            if failures:
                # Not woken by commits meanwhile: while the broker is away each try would fail at once.
                with eventlet.Timeout(self.retry_seconds(failures), False):
                    self._stopping.wait()
            else:
                with eventlet.Timeout(self.poll_seconds, False):
                    self._wake.wait()
            self._wake = Event()
            if not self._running:
                break
            try:
                while self.relay_once() == self.batch_size:
                    pass
                # Counted at most once per poll interval: under load the relay runs after nearly every commit,
                # and a COUNT per pass was 1-3 % of a busy service's time. The gauge lags by one interval at most.
                if time.monotonic() >= self._count_backlog_at:
                    set_outbox_backlog(self.container.service_name, self.backlog())
                    self._count_backlog_at = time.monotonic() + self.poll_seconds
            except Exception as exc:  # the broker or the database is away: keep the rows, try again later
                failures += 1
                log.warning(
                    "outbox relay pass failed (%s: %s); next try in %.1f s",
                    type(exc).__name__,
                    exc,
                    self.retry_seconds(failures),
                    exc_info=failures == 1,  # the whole story once, then a line per try
                )
            else:
                if failures:
                    log.info("outbox relay publishing again after %d failed passes", failures)
                failures = 0

    def retry_seconds(self, failures):
        """The pause after `failures` failed passes in a row: the poll interval, doubled each time, capped."""
        return min(self.poll_seconds * 2 ** (failures - 1), max(self.poll_seconds, MAX_RETRY_SECONDS))

    def relay_once(self):
        """Publish the oldest unpublished events, at most `batch_size`, in order; returns how many were published.

        A publish that fails ends the batch: the events published before it are marked, and the error is raised.
        """
        engine = self._database().engine
        failure = None
        with engine.begin() as connection:
            if connection.dialect.name == "postgresql":
                # Waits while another instance's relay publishes its batch (ms), then takes the rows after it.
                connection.execute(select(func.pg_advisory_xact_lock(RELAY_LOCK)))
            query = (
                select(self.table)
                .where(self.table.c.published_at.is_(None))
                .order_by(self.table.c.created_at)
                .limit(self.batch_size)
            )
            published = []
            for row in connection.execute(query).all():
                try:
                    self.publisher.publish(
                        json.loads(row.payload),
                        exchange=self.exchange,
                        routing_key=row.event_type,
                        headers=json.loads(row.headers),
                        confirm_timeout=CONFIRM_TIMEOUT_SECONDS,
                    )
                except Exception as exc:
                    failure = exc
                    break
                published.append(row.id)
            if published:
                connection.execute(
                    update(self.table).where(self.table.c.id.in_(published)).values(published_at=utcnow())
                )
        if failure is not None:
            raise failure
        return len(published)

    def backlog(self):
        """How many recorded events are not published yet."""
        with self._database().engine.connect() as connection:
            return connection.execute(
                select(func.count()).select_from(self.table).where(self.table.c.published_at.is_(None))
            ).scalar_one()
