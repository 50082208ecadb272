"""Outbox and reliable event handling on the real broker and both databases."""

import json
import uuid
from dataclasses import dataclass

import eventlet
import pytest
from eventlet.queue import Queue as GreenQueue
from nameko.rpc import rpc
from nameko.standalone.rpc import ServiceRpcProxy
from sqlalchemy import Column, Integer, String, create_engine, insert, select
from sqlalchemy.orm import declarative_base

from services.common import deadletters
from services.common.clock import utcnow
from services.common.db import Database
from services.common.deadletters import parked_events, replay
from services.common.errors import EXPECTED, Conflict
from services.common.events import first_delivery, processed_events_table, reliable_event_handler
from services.common.messages import Message
from services.common.outbox import Outbox, outbox_table
from tests.waiting import wait_until

ProducerBase = declarative_base()
OUTBOX_TABLE = outbox_table(ProducerBase.metadata)
ConsumerBase = declarative_base()
processed_events_table(ConsumerBase.metadata)


class Note(ProducerBase):
    __tablename__ = "notes"
    id = Column(Integer, primary_key=True)
    text = Column(String(100))


class Applied(ConsumerBase):
    __tablename__ = "applied"
    id = Column(Integer, primary_key=True)
    text = Column(String(100))


received = GreenQueue()  # what the consumer applied, in order
poison = {"on": True}


@dataclass(frozen=True)
class Noted(Message):
    """A note was written."""

    event_type = "noted"
    source = "notes"

    text: str


class NotesService:
    name = "notes"
    db = Database("DATABASE_URL")
    emit = Outbox()

    @rpc(expected_exceptions=EXPECTED)
    def write(self, text, fail=False):
        self.db.add(Note(text=text))
        self.emit(Noted(text=text))
        if fail:
            raise Conflict("refused")
        return text


class ListenerService:
    name = "listener"
    db = Database("LISTENER_DATABASE_URL")

    @reliable_event_handler("notes", "noted")
    def on_noted(self, payload):
        if payload["text"].startswith("poison") and poison["on"]:
            raise ValueError("cannot digest this")
        if first_delivery(self.db, payload["event_id"], "listener.on_noted"):
            self.db.add(Applied(text=payload["text"]))
            received.put(payload["text"])


class ParkingListenerService(ListenerService, deadletters.ParkedEventsRpc):
    """The listener, answering for its parked events over RPC (as carts does for the console)."""


@pytest.fixture
def databases(bare_database):
    urls = {}
    for name, base in (("notes", ProducerBase), ("listener", ConsumerBase)):
        urls[name] = bare_database(name)
        engine = create_engine(urls[name])
        base.metadata.create_all(engine)
        engine.dispose()
    return urls


@pytest.fixture
def config(rabbit_config, databases):
    while not received.empty():
        received.get()
    poison["on"] = True
    return dict(
        rabbit_config,
        DATABASE_URL=databases["notes"],
        LISTENER_DATABASE_URL=databases["listener"],
        OUTBOX_POLL_SECONDS=0.2,
        EVENT_MAX_ATTEMPTS=3,
        EVENT_RETRY_SECONDS=0.05,
    )


def next_received(timeout=10):
    with eventlet.Timeout(timeout):
        return received.get()


def test_events_follow_commits_and_rolled_back_ones_never_leave(runner_factory, config):
    runner = runner_factory(config, NotesService, ListenerService)
    runner.start()
    with ServiceRpcProxy("notes", config) as notes:
        notes.write("first")
        with pytest.raises(Conflict):
            notes.write("rolled back", fail=True)
        notes.write("second")
    assert [next_received(), next_received()] == ["first", "second"]


def test_event_recorded_before_a_relay_crash_is_published_after_restart(runner_factory, config, databases):
    # A row committed by a worker whose container died before its relay published it.
    engine = create_engine(databases["notes"])
    with engine.begin() as connection:
        event_id = str(uuid.uuid4())
        connection.execute(
            insert(OUTBOX_TABLE).values(
                id=event_id,
                event_type="noted",
                payload=json.dumps({"text": "orphan", "event_id": event_id}),
                headers="{}",
                created_at=utcnow(),
            )
        )
    runner = runner_factory(config, NotesService, ListenerService)
    runner.start()
    assert next_received() == "orphan"
    with engine.connect() as connection:
        assert connection.execute(select(OUTBOX_TABLE.c.published_at)).scalar_one() is not None
    engine.dispose()


def test_a_redelivered_event_is_applied_once(runner_factory, config, databases):
    runner = runner_factory(config, ListenerService)
    runner.start()
    from nameko.standalone.events import event_dispatcher

    dispatch = event_dispatcher(config)
    event = {"text": "once", "event_id": str(uuid.uuid4())}
    dispatch("notes", "noted", event)
    dispatch("notes", "noted", event)
    dispatch("notes", "noted", {"text": "marker", "event_id": str(uuid.uuid4())})
    # Two deliveries of "once" may run side by side with "marker": compare what was applied, not the order.
    assert sorted([next_received(), next_received()]) == ["marker", "once"]
    engine = create_engine(databases["listener"])
    with engine.connect() as connection:
        assert sorted(row.text for row in connection.execute(select(Applied.__table__))) == ["marker", "once"]
    engine.dispose()


def test_a_poison_event_is_parked_then_replayed(runner_factory, config):
    runner = runner_factory(config, NotesService, ListenerService)
    runner.start()
    with ServiceRpcProxy("notes", config) as notes:
        notes.write("poison pill")
        notes.write("healthy")
    assert next_received() == "healthy"
    parked = wait_until(
        lambda: parked_events(config, "listener"), timeout=15, interval=0.1, what="the poison event parked"
    )
    assert len(parked) == 1
    assert parked[0]["payload"]["text"] == "poison pill" and parked[0]["attempts"] == 3
    assert "cannot digest this" in parked[0]["error"]
    poison["on"] = False
    assert replay(config, "listener") == 1
    assert next_received() == "poison pill"
    assert parked_events(config, "listener") == []


def test_a_service_lists_and_replays_its_parked_events_over_rpc(runner_factory, config):
    runner = runner_factory(config, NotesService, ParkingListenerService)
    runner.start()
    with ServiceRpcProxy("notes", config) as notes:
        notes.write("poison once")
        notes.write("poison twice")
    with ServiceRpcProxy("listener", config) as listener:
        with eventlet.Timeout(15):
            while len(listener.parked_events(50)) < 2:
                eventlet.sleep(0.1)  # polling the broker with a deadline, not a fixed wait
        first = listener.parked_events(1)
        assert len(first) == 1 and first[0]["payload"]["text"] in ("poison once", "poison twice")  # the limit
        assert [event["attempts"] for event in listener.parked_events(50)] == [3, 3]  # still parked
        assert "cannot digest this" in first[0]["error"]
        with pytest.raises(deadletters.ValidationFailed):
            listener.parked_events(0)
        poison["on"] = False
        assert listener.replay_parked() == 2
        assert sorted([next_received(), next_received()]) == ["poison once", "poison twice"]
        assert listener.parked_events(50) == []
