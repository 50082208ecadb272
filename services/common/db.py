"""SQLAlchemy 2 for nameko services: one engine per container, one session per worker, and the commit rule.

**The commit rule.** An entrypoint's writes are one transaction: `Database` commits when the entrypoint method
returns and rolls back when it raises, before nameko replies to an RPC call or acks an event. Nothing else in a
service calls `commit()`. nameko sends a reply (or acks an event) *before* it calls `worker_result`, so committing
there would let a caller see an answer for a write that is not yet visible, or lost.

Two kinds of entrypoint need several transactions, and say so with `commit_step(session)`, never a bare
`commit()`:

- the order saga: each step's outcome must be durable before the next call to another service, because that
  call's effect cannot be taken back by a rollback here (a cart checked out, stock reserved, a card charged). A
  crash after the call must find the step recorded, so the saga resumes from it instead of redoing or losing it;
  an error that reaches the caller must not undo what was recorded before it; and on SQLite the write lock must
  not be held across the call (see `Database`).
- a sweep (a timer) that handles many independent items: one item's outcome is kept whatever happens to the next.

An entrypoint may roll back its own uncommitted work to start again after losing a race (`session.rollback()`):
that discards nothing another transaction committed. Code outside a worker (start-up tasks, scripts) opens its own
session and ends it with `session.begin()`'s block.

`services.common.clock` has the time helpers (`utcnow`, `iso_utc`); `UtcDateTime` stores their datetimes.
"""

import functools
import os
import sqlite3
from datetime import UTC

from nameko.extensions import DependencyProvider
from sqlalchemy import DateTime, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import sessionmaker
from sqlalchemy.pool import NullPool
from sqlalchemy.types import TypeDecorator


class UtcDateTime(TypeDecorator):
    """A timestamp that is timezone-aware UTC in Python on every backend (SQLite keeps no zone: values read
    back naive are UTC, because only UTC is written)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value, dialect):
        return value.astimezone(UTC) if value is not None else None

    def process_result_value(self, value, dialect):
        if value is not None and value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value


# Connections a container needs besides one per worker: the outbox relay, and one spare.
EXTRA_CONNECTIONS = 2


def pool_options(max_workers):
    """Pool settings for a container running `max_workers` workers: every worker keeps a pooled connection.

    SQLAlchemy's default (5 pooled + 10 overflow) closes every connection beyond the fifth when it is returned,
    so under load a 10-worker service opened and closed a database connection every few requests (a new
    PostgreSQL backend each time: a fork and an authentication). A few overflow connections remain for bursts
    beyond the estimate.
    """
    return {"pool_size": max_workers + EXTRA_CONNECTIONS, "max_overflow": 5}


def make_engine(url, **options):
    """An engine for `url`; SQLite files get a busy timeout, WAL with `synchronous=NORMAL` and foreign keys,
    and their folder is made."""
    url = make_url(url)
    if url.get_backend_name() != "sqlite":
        return create_engine(url, pool_pre_ping=True, **options)
    if url.database and url.database != ":memory:":
        os.makedirs(os.path.dirname(os.path.abspath(url.database)), exist_ok=True)
    else:  # an in-memory database lives in one connection (SingletonThreadPool): no pool to size
        options.pop("pool_size", None)
        options.pop("max_overflow", None)
    # Green threads share pooled connections, so the thread check must go; writers wait up to 30 s for the
    # file lock instead of failing at once when another process holds it.
    engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30}, **options)

    @event.listens_for(engine, "connect")
    def _sqlite_pragmas(dbapi_connection, _record):
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        # In WAL mode NORMAL syncs the log at checkpoints instead of at every commit: a committed transaction
        # survives the process being killed (the WAL is in the OS's page cache), only an OS crash or a power
        # loss can undo the last ones, and the file is never corrupted. FULL made each commit an fsync that
        # blocks the process's event loop (19 % of orders' samples under checkout load).
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    return engine


def after_commit(session, callback):
    """Run `callback()` once, right after `session`'s next successful commit (never if it rolls back).

    A crash between the commit and the callback loses what the callback does: use it for notifications
    that can be lost, not for state other services depend on.
    """
    event.listen(session, "after_commit", lambda _session: callback(), once=True)


def commit_step(session):
    """Commit `session`'s work so far as one step of an entrypoint that runs in several transactions.

    The exception to the commit rule (module docstring): a saga step whose outcome must be durable before the
    next call to another service, or one item of a sweep. What follows runs in a new transaction, which
    `Database` commits or rolls back as usual when the entrypoint ends.
    """
    session.commit()


class Database(DependencyProvider):
    """Injects a SQLAlchemy `Session` for the worker's entrypoint.

    The session commits when the entrypoint method returns and rolls back when it raises — both before nameko
    replies to an RPC call or acks an event (the commit rule, module docstring) — and is closed when the worker is
    torn down. The engine (URL
    from config key `url_key`) lives as long as the container.

    Under eventlet a SQLite write lock must not be held across a yield: do RPC calls before the first write.
    """

    def __init__(self, url_key):
        self.url_key = url_key
        self.engine = None
        self.Session = None
        self.sessions = {}

    def setup(self):
        self.engine = make_engine(self.container.config[self.url_key], **pool_options(self.container.max_workers))
        self.Session = sessionmaker(self.engine, expire_on_commit=False)

    def stop(self):
        self.engine.dispose()

    def readiness_check(self):
        """A `DatabaseCheck` of this dependency's database, for the process's readiness probe
        (services.common.probes)."""
        return DatabaseCheck(self)

    def kill(self):
        # Killed workers have rolled back and returned their connections: close them now, not at garbage
        # collection (a killed container's pool would otherwise hold its database connections open).
        self.engine.dispose()

    def get_dependency(self, worker_ctx):
        session = self.sessions[worker_ctx] = self.Session()
        return session

    def worker_setup(self, worker_ctx):
        name = worker_ctx.entrypoint.method_name
        method = getattr(worker_ctx.service, name)
        session = self.sessions[worker_ctx]

        @functools.wraps(method)
        def in_transaction(*args, **kwargs):
            try:
                result = method(*args, **kwargs)
            except BaseException:
                session.rollback()
                raise
            session.commit()
            return result

        # nameko looks the method up on the worker's own service instance after worker_setup.
        setattr(worker_ctx.service, name, in_transaction)

    def worker_teardown(self, worker_ctx):
        session = self.sessions.pop(worker_ctx, None)
        if session is not None:
            session.close()


# A readiness check's own time limit on opening the database (the probe server also bounds the whole check).
READINESS_TIMEOUT = 2.0


class DatabaseCheck:
    """`SELECT 1` on a fresh connection (not the service's pool, so a pooled connection to a database that has
    gone away does not hide it). A SQLite file is opened read-write without being created: a missing file is
    a failure, not a new empty database."""

    def __init__(self, database):
        url = database.engine.url
        self.engine = database.engine
        if url.get_backend_name() == "sqlite":
            path = url.database
            if path and path != ":memory:":
                self.engine = create_engine(
                    "sqlite://",
                    poolclass=NullPool,
                    creator=lambda: sqlite3.connect(f"file:{path}?mode=rw", uri=True, timeout=READINESS_TIMEOUT),
                )
        else:
            connect_args = (
                {"connect_timeout": int(max(READINESS_TIMEOUT, 2))} if url.get_backend_name() == "postgresql" else {}
            )
            self.engine = create_engine(make_url(url), poolclass=NullPool, connect_args=connect_args)

    def __call__(self):
        with self.engine.connect() as connection:
            connection.execute(text("SELECT 1"))

    def close(self):
        self.engine.dispose()
