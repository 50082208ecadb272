"""Exactly-once effects of write RPC calls: a call id recorded with the change, in the change's transaction.

A write call can arrive twice: the broker gives a request an instance took but never acknowledged (it was killed)
to another instance, and a client retries a request whose answer it never got. Every write RPC method takes a
`call_id` (the gateway makes one per HTTP request: `gateway_http/calls.py`); `@exactly_once` looks it up in the
service's `processed_calls` table first and, when it is there, answers the stored answer and changes nothing.
Otherwise the method runs and `(call_id, method, answer, created_at)` is inserted in the same session, so it
commits with the change (the commit rule, `services.common.db`): a call is either applied and recorded, or
neither.

Two copies of one call that run at the same time both miss the record; the second insert then fails on the
primary key (PostgreSQL waits for the first transaction's commit to tell), its transaction rolls back with its
copy of the change, and it answers the first one's answer. A copy that raises one of the services' errors
(`CartmeshError`: e.g. the line it would remove is gone) looks again too, in case the first copy made exactly
that change meanwhile. Errors are not recorded: nothing changed, and a repeat may succeed.

A call without a call id (the nameko shell, a script) runs as it is and is not recorded. Records older than
config `PROCESSED_CALLS_RETENTION_SECONDS` (default a day) are deleted by the hourly `prune_processed_calls`
timer of `PrunedCalls`: a repeat later than that runs again.
"""

import functools
import inspect
import json
import logging
from datetime import timedelta

from nameko.dependency_providers import Config
from nameko.exceptions import IncorrectSignature
from nameko.timer import timer
from sqlalchemy import Column, Index, MetaData, String, Table, Text, bindparam, delete, insert, select
from sqlalchemy.exc import IntegrityError

from services.common.clock import utcnow
from services.common.db import UtcDateTime
from services.common.errors import CartmeshError, Conflict
from services.common.rules import validate_call_id

log = logging.getLogger(__name__)

DEFAULT_RETENTION_SECONDS = 24 * 3600
PRUNE_INTERVAL_SECONDS = 3600


def processed_calls_table(metadata: MetaData):
    """The `processed_calls` table on a service's metadata: the answer of each write call applied."""
    return Table(
        "processed_calls",
        metadata,
        Column("call_id", String(64), primary_key=True),
        Column("method", String(100), nullable=False),
        Column("answer", Text, nullable=False),  # JSON
        Column("created_at", UtcDateTime, nullable=False),
        Index("ix_processed_calls_created_at", "created_at"),
    )


PROCESSED_CALLS = processed_calls_table(MetaData())
_FIND = select(PROCESSED_CALLS.c.method, PROCESSED_CALLS.c.answer).where(
    PROCESSED_CALLS.c.call_id == bindparam("call_id")
)
_RECORD = insert(PROCESSED_CALLS)
_FORGET = delete(PROCESSED_CALLS).where(PROCESSED_CALLS.c.call_id == bindparam("call_id"))

# What `recorded` answers for a call id that is not recorded (a recorded answer may be None).
MISSING = object()


def recorded(session, call_id, method):
    """The stored answer of call `call_id`, or `MISSING`; Conflict when that id was used for another method."""
    row = session.execute(_FIND, {"call_id": call_id}).first()
    if row is None:
        return MISSING
    if row.method != method:
        raise Conflict(f"call id {call_id} was used for {row.method}")
    return json.loads(row.answer)


def record(session, call_id, method, answer):
    """Record call `call_id` of `method` with its `answer` in this transaction; IntegrityError when it is recorded
    already (on PostgreSQL, once the transaction that recorded it has committed)."""
    session.execute(
        _RECORD, {"call_id": call_id, "method": method, "answer": json.dumps(answer), "created_at": utcnow()}
    )


def forget(session, call_id):
    """Delete the record of call `call_id` in this transaction (a saga step that undid what the call did)."""
    session.execute(_FORGET, {"call_id": call_id})


def prune(session, before):
    """Delete the records made before `before`; how many."""
    return session.execute(delete(PROCESSED_CALLS).where(PROCESSED_CALLS.c.created_at < before)).rowcount


def exactly_once(method):
    """Make the write RPC method `method` (of a service with a `db` session, see `services.common.db.Database`)
    apply each `call_id` once: see the module docstring. `method` takes a `call_id` parameter (default None)."""
    signature = inspect.signature(method)
    if "call_id" not in signature.parameters:
        raise TypeError(f"{method.__name__} takes no call_id")
    name = method.__name__

    @functools.wraps(method)
    def once(self, *args, **kwargs):
        try:
            bound = signature.bind(self, *args, **kwargs)
        except TypeError as exc:  # as nameko answers a call that does not fit (its check sees only this wrapper)
            raise IncorrectSignature(str(exc)) from None
        call_id = validate_call_id(bound.arguments.get("call_id"))
        if call_id is None:
            return method(self, *args, **kwargs)
        session = self.db
        answer = recorded(session, call_id, name)
        if answer is not MISSING:
            return answer
        try:
            answer = method(self, *args, **kwargs)
        except CartmeshError:
            session.rollback()  # nothing of this copy is kept; and a fresh read on SQLite as on PostgreSQL
            earlier = recorded(session, call_id, name)
            if earlier is MISSING:
                raise
            return earlier
        try:
            record(session, call_id, name, answer)
        except IntegrityError:
            # A concurrent copy recorded it first: roll back this copy's change (PostgreSQL allows nothing else in
            # a failed transaction) and answer the first one's.
            session.rollback()
            earlier = recorded(session, call_id, name)
            if earlier is MISSING:
                raise
            log.info("call %s of %s ran twice at once; the second copy was rolled back", call_id, name)
            return earlier
        return answer

    return once


class PrunedCalls:
    """Mix into a service that uses `exactly_once` (it has a `db` session): an hourly timer deletes the records
    older than config `PROCESSED_CALLS_RETENTION_SECONDS` (default a day)."""

    calls_config = Config()

    @timer(interval=PRUNE_INTERVAL_SECONDS)
    def prune_processed_calls(self):
        retention = float(self.calls_config.get("PROCESSED_CALLS_RETENTION_SECONDS", DEFAULT_RETENTION_SECONDS))
        pruned = prune(self.db, utcnow() - timedelta(seconds=retention))
        if pruned:
            log.info("pruned %d processed calls older than %s s", pruned, retention)
