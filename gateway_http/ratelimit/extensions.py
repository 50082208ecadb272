"""The nameko side: one store of counters per gateway container (LimitStore), and the two dependencies the
gateway service declares on it, RateLimit and LoginGuard. Each always injects an object; with its limits at 0
that object checks nothing and calls no store, so the router and the login route never ask whether a feature is
there.
"""

import logging
import math
import urllib.parse
from contextlib import contextmanager, nullcontext
from functools import partial

import eventlet
from nameko.extensions import DependencyProvider, SharedExtension

from gateway_http.errors import HttpError
from gateway_http.ratelimit.policies import LoginThrottle, RateLimiter
from gateway_http.ratelimit.stores import DEFAULT_RETRY_SECONDS, FallbackStore, MemoryStore, RedisStore
from services.common.errors import Unauthorized

log = logging.getLogger(__name__)

REDIS_SOCKET_TIMEOUT = 0.25  # seconds: a slow Redis must not hold every request up


def retry_after_header(seconds):
    """`Retry-After` in whole seconds, at least 1 (a client that retries at once would be refused again)."""
    return str(max(1, math.ceil(seconds)))


def rate_limited(seconds, message="Too many requests; try again later."):
    return HttpError(
        429,
        "rate_limited",
        message,
        details={"retry_after_seconds": int(retry_after_header(seconds))},
        headers={"Retry-After": retry_after_header(seconds)},
    )


def _number(config, name, default, kind=int):
    value = config.get(name)
    return default if value in (None, "") else kind(value)


def _redis_location(url):
    # For the log: never the password.
    parts = urllib.parse.urlsplit(url)
    return f"Redis at {parts.hostname or 'localhost'}:{parts.port or 6379}{parts.path or ''}"


class LimitStore(SharedExtension):
    """The counters of one gateway container, shared by its RateLimit and LoginGuard, and a store itself
    (`acquire`, `reserve_login`, `release`, as in stores.py): Redis at config `REDIS_URL` (keys prefixed with
    `REDIS_KEY_PREFIX` and a colon), falling back to this process's memory while Redis does not answer (tried
    again every `REDIS_RETRY_SECONDS`).

    Set-up makes the Redis client (it connects on first use; the redis package, some 8 MiB of a gateway's memory,
    is imported only then); start pings Redis once and logs which store counts; stop closes the client."""

    def setup(self):
        config = self.container.config
        url = (config.get("REDIS_URL") or "").strip()
        self.client = None
        primary, errors = None, ()
        if url:
            import redis
            from redis.backoff import NoBackoff
            from redis.retry import Retry

            # No retries in the client: a failed call falls back to memory at once instead.
            self.client = redis.Redis.from_url(
                url,
                socket_timeout=REDIS_SOCKET_TIMEOUT,
                socket_connect_timeout=REDIS_SOCKET_TIMEOUT,
                retry=Retry(NoBackoff(), 0),
            )
            primary = RedisStore(self.client, f"{config.get('REDIS_KEY_PREFIX') or 'cartmesh'}:")
            errors = (redis.RedisError, OSError)
        self.store = FallbackStore(
            primary,
            MemoryStore(),
            _number(config, "REDIS_RETRY_SECONDS", DEFAULT_RETRY_SECONDS, float),
            errors=errors,
            where=_redis_location(url) if url else "Redis",
        )

    def start(self):
        if self.client is None:
            log.warning("REDIS_URL is not set: rate limits and login throttling are per instance, in memory")
            return
        try:
            self.client.ping()
        except Exception as exc:
            self.store.down_until = self.store.clock() + self.store.retry_seconds
            log.warning(
                "%s does not answer (%s): rate limits and login throttling are per instance, in memory, until it does",
                self.store.where,
                exc,
            )
        else:
            log.info("rate limits and login throttling are shared through %s", self.store.where)

    def stop(self):
        if self.client is not None:
            self.client.close()

    def acquire(self, limits, window):
        return self.store.acquire(limits, window)

    def reserve_login(self, pair, email, address, pair_limit, address_limit, window):
        return self.store.reserve_login(pair, email, address, pair_limit, address_limit, window)

    def release(self, decrement=(), delete=()):
        return self.store.release(decrement, delete)


class RateLimit(DependencyProvider):
    """Injects a `RateLimiter` (`check(address, user_id=None)` → Decision, one store call) on the container's
    LimitStore, limits from config `RATE_LIMIT_PER_ADDRESS`, `RATE_LIMIT_PER_USER` (requests per
    `RATE_LIMIT_WINDOW_SECONDS`; 0: off, and no store call). Nothing to commit: a check is one atomic step."""

    limits = LimitStore()

    def setup(self):
        config = self.container.config
        self.limiter = RateLimiter(
            self.limits,
            _number(config, "RATE_LIMIT_PER_ADDRESS", 0),
            _number(config, "RATE_LIMIT_PER_USER", 0),
            _number(config, "RATE_LIMIT_WINDOW_SECONDS", 60, float),
        )

    def get_dependency(self, worker_ctx):
        return self.limiter


class LoginGuard(DependencyProvider):
    """Injects `attempt(email, address)`, a context manager around one login (`guarded_login`) under the limits
    of config `LOGIN_THROTTLE_PER_EMAIL_AND_ADDRESS`, `LOGIN_THROTTLE_PER_EMAIL`, `LOGIN_THROTTLE_PER_ADDRESS`
    (failed attempts per `LOGIN_THROTTLE_WINDOW_SECONDS`) and `LOGIN_THROTTLE_MAX_DELAY_SECONDS`; with all three
    limits 0, a context manager that does nothing. The outcome is recorded when the block ends."""

    limits = LimitStore()

    def setup(self):
        config = self.container.config
        self.throttle = LoginThrottle(
            self.limits,
            _number(config, "LOGIN_THROTTLE_PER_EMAIL_AND_ADDRESS", 0),
            _number(config, "LOGIN_THROTTLE_PER_EMAIL", 0),
            _number(config, "LOGIN_THROTTLE_PER_ADDRESS", 0),
            _number(config, "LOGIN_THROTTLE_WINDOW_SECONDS", 900, float),
            _number(config, "LOGIN_THROTTLE_MAX_DELAY_SECONDS", 2.0, float),
        )
        self.attempt = partial(guarded_login, self.throttle) if self.throttle.on else _unthrottled

    def get_dependency(self, worker_ctx):
        return self.attempt


def _unthrottled(email, address):
    return nullcontext()


def too_many_failed_logins(seconds):
    # The same answer whether or not the email exists: the gateway does not know.
    return rate_limited(seconds, "Too many failed logins; try again later.")


@contextmanager
def guarded_login(throttle, email, address, sleep=eventlet.sleep):
    """One login attempt under `throttle`: 429 before the block when the attempt is refused, else a delay (when
    the email has failed often), the block (which asks accounts), and its outcome recorded. A failure (the block
    raised Unauthorized) from an address over its limit is answered 429 too."""
    attempt = throttle.begin(email, address)
    if not attempt.allowed:
        raise too_many_failed_logins(attempt.retry_after)
    if attempt.delay:
        sleep(attempt.delay)
    try:
        yield
    except Unauthorized:
        throttle.failed(attempt)
        if attempt.failure_retry_after:
            raise too_many_failed_logins(attempt.failure_retry_after) from None
        raise
    except BaseException:
        throttle.abandoned(attempt)
        raise
    throttle.succeeded(attempt)
