"""The outbox relay while the broker is away (services/common/outbox.py), on the real broker behind a TCP proxy
that the tests cut and restore, and on both databases: a publish fails within about a second instead of waiting
out nameko's retries, the relay tries again on its own, and once the broker is back every event goes out, oldest
first, without a batch that failed halfway sending its published part again."""

import json
import time
import uuid
from datetime import timedelta

import eventlet
import pytest
from nameko.events import event_handler
from nameko.rpc import rpc
from sqlalchemy import Column, Integer, create_engine, func, insert, select
from sqlalchemy.orm import declarative_base

from services.common.clock import utcnow
from services.common.db import Database
from services.common.outbox import Outbox, outbox_table
from tests.broker_proxy import TcpProxy
from tests.waiting import wait_until

Base = declarative_base()
OUTBOX_TABLE = outbox_table(Base.metadata)


class Placeholder(Base):  # the service's own data; the outbox needs only its table
    __tablename__ = "placeholder"
    id = Column(Integer, primary_key=True)


class RelayingService:
    name = "relaying"
    db = Database("DATABASE_URL")
    emit = Outbox()

    @rpc
    def ping(self):
        return "pong"


class Listener:
    """Hears the relay's events on its own connection, straight to the broker (never cut)."""

    name = "relay_listener"
    heard = []

    @event_handler("relaying", "numbered")
    def on_numbered(self, payload):
        self.heard.append(payload["number"])


@pytest.fixture
def proxy():
    """Set up before the containers, so torn down after them: they stop while it still forwards."""
    proxy = TcpProxy()
    yield proxy
    proxy.close()


@pytest.fixture
def database(bare_database):
    url = bare_database("relaying")
    engine = create_engine(url)
    Base.metadata.create_all(engine)
    yield engine
    engine.dispose()


def url_of(engine):
    return engine.url.render_as_string(hide_password=False)


def record(engine, count, start=0):
    """`count` events numbered from `start`, recorded in the order of their numbers (as committed rows are)."""
    first = utcnow()
    with engine.begin() as connection:
        for number in range(start, start + count):
            event_id = str(uuid.uuid4())
            connection.execute(
                insert(OUTBOX_TABLE).values(
                    id=event_id,
                    event_type="numbered",
                    payload=json.dumps({"number": number, "event_id": event_id}),
                    headers="{}",
                    created_at=first + timedelta(milliseconds=number),
                )
            )


def unpublished(engine):
    with engine.connect() as connection:
        return connection.execute(
            select(func.count()).select_from(OUTBOX_TABLE).where(OUTBOX_TABLE.c.published_at.is_(None))
        ).scalar_one()


def relay_of(container):
    return next(dependency for dependency in container.dependencies if isinstance(dependency, Outbox))


def test_a_publish_while_the_broker_is_away_fails_within_seconds(proxy, container_factory, rabbit_config, database):
    proxied = rabbit_config["AMQP_URI"].replace("localhost:5672", f"127.0.0.1:{proxy.port}")
    # The relay's own passes far apart: this test drives it by hand.
    config = dict(rabbit_config, AMQP_URI=proxied, DATABASE_URL=url_of(database), OUTBOX_POLL_SECONDS=600)
    container = container_factory(RelayingService, config)
    container.start()
    relay = relay_of(container)
    record(database, 2)
    assert relay.relay_once() == 2  # a connection in the publisher's pool, which the cut kills

    record(database, 1, start=2)
    proxy.cut()
    try:
        took = []
        for _ in range(2):  # the dead pooled connection, then a refused new one
            started = time.monotonic()
            with pytest.raises(Exception):  # noqa: B017 -- whichever connection error kombu raises
                relay.relay_once()
            took.append(time.monotonic() - started)
    finally:
        proxy.restore()
    # nameko's default retry policy took 3 s and 5 s here (its pauses between reconnections).
    assert max(took) < 1.5, f"failing took {', '.join(f'{seconds:.1f}' for seconds in took)} s"
    assert unpublished(database) == 1
    assert relay.relay_once() == 1  # the broker is back: a new connection, nothing waiting on the old one
    assert unpublished(database) == 0


def test_events_go_out_in_order_after_an_outage_that_cut_a_batch(proxy, container_factory, rabbit_config, database):
    Listener.heard = []
    container_factory(Listener, rabbit_config).start()
    proxied = rabbit_config["AMQP_URI"].replace("localhost:5672", f"127.0.0.1:{proxy.port}")
    config = dict(rabbit_config, AMQP_URI=proxied, DATABASE_URL=url_of(database), OUTBOX_POLL_SECONDS=0.2)
    container_factory(RelayingService, config).start()
    total = 3 * Outbox.batch_size

    record(database, total)
    wait_until(lambda: Listener.heard, timeout=10, what="the relay has begun publishing")
    proxy.cut()  # while its first batch goes out
    try:
        eventlet.sleep(1.5)  # the outage: the relay fails, backs off, fails again
        assert unpublished(database) > 0
    finally:
        proxy.restore()
    back = time.monotonic()
    wait_until(lambda: unpublished(database) == 0 and len(set(Listener.heard)) == total, timeout=15, what="all out")
    print(f"every event out {time.monotonic() - back:.1f} s after the broker came back")

    first_heard = list(dict.fromkeys(Listener.heard))
    assert first_heard == list(range(total))  # none overtook an older one
    # The events published before the failed one were marked: only the one in flight may go out twice.
    assert len(Listener.heard) - total <= 1


def test_relays_of_several_instances_publish_one_after_the_other_in_order(container_factory, rabbit_config, database):
    Listener.heard = []
    container_factory(Listener, rabbit_config).start()
    total = 4 * Outbox.batch_size
    record(database, total)  # a backlog, as after an outage: several batches waiting
    config = dict(rabbit_config, DATABASE_URL=url_of(database), OUTBOX_POLL_SECONDS=0.2)
    for _ in range(3):  # three instances of the service, each with its relay, on the one database
        container_factory(RelayingService, config).start()
    wait_until(lambda: unpublished(database) == 0 and len(set(Listener.heard)) == total, timeout=20, what="all out")

    # Batches taken side by side would interleave: a later batch's first event before an earlier batch's last.
    assert list(dict.fromkeys(Listener.heard)) == list(range(total))
