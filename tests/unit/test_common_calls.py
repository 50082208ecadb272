"""services.common.calls: a write method with a call id runs once per id, and its answer is stored with it in its
own transaction; on a SQLite file, with a session committed as services.common.db.Database does."""

import uuid
from datetime import timedelta

import pytest
from nameko.exceptions import IncorrectSignature
from sqlalchemy import Column, Integer, MetaData, Table, insert, select, update
from sqlalchemy.orm import Session

from services.common import calls
from services.common.clock import utcnow
from services.common.db import make_engine
from services.common.errors import Conflict, NotFound, ValidationFailed

METADATA = MetaData()
COUNTER = Table("counter", METADATA, Column("id", Integer, primary_key=True), Column("value", Integer))
calls.processed_calls_table(METADATA)
TABLE = calls.PROCESSED_CALLS


class Counter:
    """A service-like object: `db` is its session, `bump` its write."""

    def __init__(self, session):
        self.db = session
        self.runs = 0

    @calls.exactly_once
    def bump(self, by, call_id=None):
        self.runs += 1
        self.db.execute(update(COUNTER).values(value=COUNTER.c.value + by))
        if by < 0:
            raise NotFound("no negative bumps")
        return {"value": self.db.execute(select(COUNTER.c.value)).scalar()}

    @calls.exactly_once
    def other(self, call_id=None):
        return "other"

    def call(self, method, *args, **kwargs):
        """As the Database provider runs an entrypoint: commit on return, roll back on raise."""
        try:
            answer = getattr(self, method)(*args, **kwargs)
        except BaseException:
            self.db.rollback()
            raise
        self.db.commit()
        return answer


@pytest.fixture
def engine(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path / 'calls.db'}")
    METADATA.create_all(engine)
    with engine.begin() as connection:
        connection.execute(insert(COUNTER).values(id=1, value=0))
    yield engine
    engine.dispose()


@pytest.fixture
def service(engine):
    with Session(engine) as session:
        yield Counter(session)


def value(engine):
    with engine.connect() as connection:
        return connection.execute(select(COUNTER.c.value)).scalar()


def records(engine):
    with engine.connect() as connection:
        return [tuple(row) for row in connection.execute(select(TABLE.c.call_id, TABLE.c.method, TABLE.c.answer))]


def test_a_repeated_call_id_answers_the_first_answer_and_changes_nothing(service, engine):
    call_id = uuid.uuid4().hex
    assert service.call("bump", 2, call_id=call_id) == {"value": 2}
    assert service.call("bump", 2, call_id=call_id) == {"value": 2}
    assert service.call("bump", 5, call_id) == {"value": 2}  # positional too; the stored answer, whatever the args
    assert (value(engine), service.runs) == (2, 1)
    assert records(engine) == [(call_id, "bump", '{"value": 2}')]


def test_without_a_call_id_every_call_runs_and_nothing_is_recorded(service, engine):
    service.call("bump", 1)
    service.call("bump", 1)
    assert (value(engine), records(engine)) == (2, [])


def test_an_error_is_not_recorded_and_a_repeat_runs_again(service, engine):
    call_id = uuid.uuid4().hex
    with pytest.raises(NotFound):
        service.call("bump", -1, call_id=call_id)
    assert (value(engine), records(engine)) == (0, [])
    assert service.call("bump", 3, call_id=call_id) == {"value": 3}


def test_a_copy_that_fails_after_the_first_copy_succeeded_answers_the_first_answer(service, engine):
    """The first copy commits while the second runs: the second's error (e.g. the line it would remove is gone)
    is not the caller's answer."""
    call_id = uuid.uuid4().hex
    with engine.begin() as connection:
        calls.record(connection, call_id, "bump", {"value": 7})
    real = calls.recorded
    looks = []

    def first_look_misses(session, looked_up, method):
        looks.append(looked_up)
        return calls.MISSING if len(looks) == 1 else real(session, looked_up, method)

    calls.recorded = first_look_misses
    try:
        assert service.call("bump", -1, call_id=call_id) == {"value": 7}
    finally:
        calls.recorded = real
    assert value(engine) == 0 and len(looks) == 2


def test_a_concurrent_copy_that_loses_the_insert_is_rolled_back_and_answers_the_winner(service, engine):
    """Both copies missed the record; the winner committed its change and record first (on SQLite the loser then
    writes after it: the database lock serialises them)."""
    call_id = uuid.uuid4().hex
    with engine.begin() as connection:
        connection.execute(update(COUNTER).values(value=COUNTER.c.value + 4))
        calls.record(connection, call_id, "bump", {"value": 4})
    real = calls.recorded
    looks = []

    def first_look_misses(session, looked_up, method):
        looks.append(looked_up)
        return calls.MISSING if len(looks) == 1 else real(session, looked_up, method)

    calls.recorded = first_look_misses
    try:
        assert service.call("bump", 4, call_id=call_id) == {"value": 4}
    finally:
        calls.recorded = real
    assert service.runs == 1 and value(engine) == 4  # the loser's own +4 was rolled back
    assert records(engine) == [(call_id, "bump", '{"value": 4}')]


def test_a_call_id_of_another_method_is_a_conflict(service, engine):
    call_id = uuid.uuid4().hex
    service.call("bump", 1, call_id=call_id)
    with pytest.raises(Conflict):
        service.call("other", call_id=call_id)


@pytest.mark.parametrize("bad", ["", "x" * 65, "has space", "ünï", 42, ["a"]])
def test_a_malformed_call_id_is_refused_before_anything_runs(service, engine, bad):
    with pytest.raises(ValidationFailed) as refused:
        service.call("bump", 1, call_id=bad)
    assert refused.value.details == {"fields": {"call_id": "must be 1 to 64 characters of A-Z a-z 0-9 - _"}}
    assert (value(engine), service.runs) == (0, 0)


def test_arguments_that_do_not_fit_are_refused_as_nameko_refuses_them(service):
    with pytest.raises(IncorrectSignature):
        service.call("bump", 1, 2, 3)
    with pytest.raises(IncorrectSignature):
        service.call("bump", by=1, colour="red")


def test_a_method_without_a_call_id_parameter_cannot_be_decorated():
    with pytest.raises(TypeError):
        calls.exactly_once(lambda self, x: x)


def test_prune_deletes_only_records_older_than_its_limit(engine):
    now = utcnow()
    with engine.begin() as connection:
        for call_id, age in (("old", timedelta(days=2)), ("new", timedelta(hours=1))):
            connection.execute(
                insert(calls.PROCESSED_CALLS).values(
                    call_id=call_id, method="bump", answer="null", created_at=now - age
                )
            )
    with Session(engine) as session, session.begin():
        assert calls.prune(session, now - timedelta(days=1)) == 1
    assert [row[0] for row in records(engine)] == ["new"]
