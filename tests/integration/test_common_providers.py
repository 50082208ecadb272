"""The shared providers in real containers on the real broker: commit before reply, rollback on error,
request ids through RPC, timeouts on RPC calls."""

import uuid

import pytest
from nameko.rpc import rpc
from nameko.standalone.rpc import ServiceRpcProxy
from sqlalchemy import Column, Integer, String, select
from sqlalchemy.orm import declarative_base

from services.common.context import RequestId
from services.common.db import Database, make_engine
from services.common.errors import EXPECTED, Conflict, ServiceTimeout, ServiceUnavailable
from services.common.rpc import Rpc

Base = declarative_base()


class Note(Base):
    __tablename__ = "notes"
    id = Column(Integer, primary_key=True)
    text = Column(String(100), nullable=False)


class NotesService:
    name = "notes"
    db = Database("DATABASE_URL")
    request_id = RequestId()

    @rpc(expected_exceptions=EXPECTED)
    def add(self, text, fail=False):
        self.db.add(Note(text=text))
        if fail:
            raise Conflict("refused", {"text": text, "count": 3, "nested": {"none": None}})
        return text

    @rpc(expected_exceptions=EXPECTED)
    def fail_without_details(self):
        raise Conflict("plain")

    @rpc
    def count(self):
        return len(self.db.scalars(select(Note)).all())

    @rpc
    def whoami(self):
        return self.request_id


class SlowService:
    name = "slow"

    @rpc
    def wait(self, seconds):
        import eventlet

        eventlet.sleep(seconds)
        return "done"


class CallerService:
    name = "caller"
    notes = Rpc("notes")
    slow = Rpc("slow", timeout=0.5)
    absent = Rpc("absent", timeout=0.5)
    request_id = RequestId()

    @rpc
    def relay_whoami(self):
        return [self.request_id, self.notes.whoami()]

    @rpc
    def call_slow(self, seconds):
        return self.slow.wait(seconds)

    @rpc
    def call_absent(self):
        return self.absent.anything()


@pytest.fixture
def notes_url(tmp_path):
    url = f"sqlite:///{tmp_path}/notes.db"
    Base.metadata.create_all(make_engine(url))
    return url


def test_commit_before_reply_and_rollback_on_error(container_factory, rabbit_config, notes_url):
    container = container_factory(NotesService, dict(rabbit_config, DATABASE_URL=notes_url))
    container.start()
    with ServiceRpcProxy("notes", rabbit_config) as notes:
        assert notes.add("kept") == "kept"
        assert notes.count() == 1
        with pytest.raises(Conflict) as failure:
            notes.add("dropped", fail=True)
        assert failure.value.details == {"text": "dropped", "count": 3, "nested": {"none": None}}
        with pytest.raises(Conflict) as failure:
            notes.fail_without_details()
        assert failure.value.details is None and str(failure.value) == "plain"
        assert notes.count() == 1


def test_request_id_travels_through_rpc(runner_factory, rabbit_config, notes_url):
    runner = runner_factory(dict(rabbit_config, DATABASE_URL=notes_url), NotesService, CallerService)
    runner.start()
    request_id = uuid.uuid4().hex
    with ServiceRpcProxy("caller", rabbit_config, context_data={"request_id": request_id}) as caller:
        assert caller.relay_whoami() == [request_id, request_id]


def test_rpc_timeout_and_unavailable(runner_factory, rabbit_config, notes_url):
    runner = runner_factory(dict(rabbit_config, DATABASE_URL=notes_url), SlowService, CallerService)
    runner.start()
    with ServiceRpcProxy("caller", rabbit_config) as caller:
        assert caller.call_slow(0) == "done"
        with pytest.raises(ServiceTimeout):
            caller.call_slow(2)
        with pytest.raises(ServiceUnavailable):
            caller.call_absent()
