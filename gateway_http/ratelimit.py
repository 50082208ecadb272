"""Rate limits per client address and per user, and login throttling; counters in Redis, else in memory.

Rate limits (config `RATE_LIMIT_PER_ADDRESS`, `RATE_LIMIT_PER_USER` requests per `RATE_LIMIT_WINDOW_SECONDS`;
0 turns one off) use GCRA, the generic cell rate algorithm: one number per client (its "theoretical arrival
time"), updated by one Lua script in one round trip, so several gateway instances share a limit exactly. It
allows a burst of the whole allowance and then one request per window/limit, with no doubled burst at a window
boundary (the flaw of a fixed INCR+EXPIRE window) and an exact `Retry-After`. The script reads Redis's own
clock, so the gateways' clocks do not matter.

Login throttling (`LOGIN_THROTTLE_*`) counts attempts at POST /auth/token per email and per client address in a
fixed window: an attempt is counted before accounts is asked (so concurrent attempts cannot slip past the
limit), and given back unless the answer was 401. Past half the allowance the answer is delayed, growing to
`LOGIN_THROTTLE_MAX_DELAY_SECONDS`; past the allowance it is 429 with `Retry-After` (the window's rest). The
gateway does not know whether an email exists, so an unknown email is counted, delayed and refused exactly as a
known one. A successful login clears the email's count.

Counters live in Redis at `REDIS_URL` (shared by every gateway instance). Without it, or while Redis does not
answer, each instance counts in its own memory (said in the log at start, and when Redis fails or comes back),
and Redis is tried again every `REDIS_RETRY_SECONDS`.
"""

import hashlib
import ipaddress
import logging
import math
import time
import urllib.parse
from contextlib import contextmanager, nullcontext
from functools import lru_cache
from typing import NamedTuple

import eventlet
import redis
from nameko.exceptions import ConfigurationError
from nameko.extensions import DependencyProvider, SharedExtension
from redis.backoff import NoBackoff
from redis.retry import Retry

from gateway_http.errors import HttpError
from services.common.errors import Unauthorized

log = logging.getLogger(__name__)

DEFAULT_PREFIX = "cartmesh:"
REDIS_SOCKET_TIMEOUT = 0.25  # seconds: a slow Redis must not hold every request up
DEFAULT_RETRY_SECONDS = 5.0
_SWEEP_EVERY = 10.0  # seconds between sweeps of expired in-memory entries


class Decision(NamedTuple):
    allowed: bool
    retry_after: float = 0.0  # seconds until a request would be allowed
    remaining: int = 0


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


# --- the algorithms, in plain Python ------------------------------------------------------------------------


def gcra(tat, now, limit, window):
    """One request at `now` against `limit` per `window` seconds, given the stored arrival time `tat` (None:
    never seen). Returns (decision, new tat to store)."""
    interval = window / limit
    tat = now if tat is None or tat < now else tat
    new_tat = tat + interval
    allow_at = new_tat - window
    if now < allow_at:
        return Decision(False, allow_at - now, 0), tat
    return Decision(True, 0.0, int((now - allow_at) / interval)), new_tat


class MemoryStore:
    """The counters of this process only. Green threads switch only on I/O, so no lock is needed."""

    def __init__(self, clock=time.monotonic):
        self.clock = clock
        self._tats = {}  # key -> arrival time (also when the entry may be forgotten)
        self._counters = {}  # key -> [count, expires_at]
        self._swept = clock()

    def acquire(self, key, limit, window):
        now = self._now()
        decision, tat = gcra(self._tats.get(key), now, limit, window)
        self._tats[key] = tat
        return decision

    def add(self, key, amount, window):
        """Adds `amount` to a counter that lives `window` seconds from its first count: (count, seconds left)."""
        now = self._now()
        entry = self._counters.get(key)
        if entry is None or entry[1] <= now:
            entry = self._counters[key] = [0, now + window]
        entry[0] += amount
        if entry[0] <= 0:
            del self._counters[key]
            return 0, 0.0
        return entry[0], entry[1] - now

    def delete(self, key):
        self._counters.pop(key, None)
        self._tats.pop(key, None)

    def _now(self):
        now = self.clock()
        if now - self._swept > _SWEEP_EVERY:  # forget what has expired, so memory follows the live clients
            self._swept = now
            self._tats = {key: tat for key, tat in self._tats.items() if tat > now}
            self._counters = {key: entry for key, entry in self._counters.items() if entry[1] > now}
        return now


# GCRA in milliseconds on Redis's clock. KEYS[1]; ARGV: interval ms, window ms.
_GCRA_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local interval = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local new_tat = tat + interval
local allow_at = new_tat - window
if now < allow_at then return {0, allow_at - now, 0} end
redis.call('SET', KEYS[1], new_tat, 'PX', new_tat - now)
return {1, 0, math.floor((now - allow_at) / interval)}
"""

# A counter that expires `window` ms after its first count. KEYS[1]; ARGV: amount, window ms.
_ADD_LUA = """
local n = redis.call('INCRBY', KEYS[1], ARGV[1])
if n <= 0 then redis.call('DEL', KEYS[1]) return {0, 0} end
local ttl = redis.call('PTTL', KEYS[1])
if ttl < 0 then ttl = tonumber(ARGV[2]); redis.call('PEXPIRE', KEYS[1], ttl) end
return {n, ttl}
"""


class RedisStore:
    """The same counters in Redis, shared by every gateway instance that uses the same Redis and prefix."""

    def __init__(self, client):
        self.client = client
        self._gcra = client.register_script(_GCRA_LUA)  # EVALSHA, loading the script again after a flush
        self._add = client.register_script(_ADD_LUA)

    def acquire(self, key, limit, window):
        window_ms = max(1, int(window * 1000))
        interval = max(1, window_ms // limit)  # whole milliseconds: Lua prints big fractions inexactly
        allowed, wait_ms, remaining = self._gcra(keys=[key], args=[interval, interval * limit])
        return Decision(bool(allowed), int(wait_ms) / 1000, int(remaining))

    def add(self, key, amount, window):
        count, ttl_ms = self._add(keys=[key], args=[amount, max(1, int(window * 1000))])
        return int(count), int(ttl_ms) / 1000

    def delete(self, key):
        self.client.delete(key)


class FallbackStore:
    """Redis while it answers, this process's memory while it does not; Redis is tried again every
    `retry_seconds`. (Counts made in memory are not carried over: a limit restarts when the store changes.)"""

    def __init__(
        self,
        primary,
        fallback,
        retry_seconds=DEFAULT_RETRY_SECONDS,
        clock=time.monotonic,
        errors=(Exception,),
        where="Redis",
    ):
        self.primary = primary
        self.fallback = fallback
        self.retry_seconds = retry_seconds
        self.clock = clock
        self.errors = errors
        self.where = where
        self.down_until = None  # while set and in the future, Redis is not asked

    @property
    def shared(self):
        return self.primary is not None and self.down_until is None

    def acquire(self, key, limit, window):
        return self._call("acquire", key, limit, window)

    def add(self, key, amount, window):
        return self._call("add", key, amount, window)

    def delete(self, key):
        return self._call("delete", key)

    def _call(self, method, *args):
        if self.primary is not None and (self.down_until is None or self.clock() >= self.down_until):
            try:
                result = getattr(self.primary, method)(*args)
            except self.errors as exc:
                if self.down_until is None:
                    log.warning(
                        "%s does not answer (%s): rate limits are per instance, in memory, until it does",
                        self.where,
                        exc,
                    )
                self.down_until = self.clock() + self.retry_seconds
            else:
                if self.down_until is not None:
                    log.warning("%s answers again: rate limits are shared again", self.where)
                    self.down_until = None
                return result
        return getattr(self.fallback, method)(*args)


# --- who is asking ------------------------------------------------------------------------------------------


@lru_cache(maxsize=16)
def trusted_networks(spec):
    """The networks in a comma list such as "10.0.0.0/8, 127.0.0.1"; ValueError for a bad entry."""
    return tuple(ipaddress.ip_network(part.strip(), strict=False) for part in (spec or "").split(",") if part.strip())


def _address(text):
    try:
        return ipaddress.ip_address(text.strip())
    except ValueError:
        return None


def client_address(environ, trusted=""):
    """The caller's address: the peer's, or, when the peer is a trusted proxy (config `TRUSTED_PROXIES`), the
    nearest untrusted address in `X-Forwarded-For` (the ones further left are the caller's own claims)."""
    peer = environ.get("REMOTE_ADDR") or "unknown"
    networks = trusted_networks(trusted)
    if not networks:
        return peer
    chain = [peer] + [hop for hop in reversed(environ.get("HTTP_X_FORWARDED_FOR", "").split(",")) if hop.strip()]
    for hop in chain:
        address = _address(hop)
        if address is None:  # garbage in the header: stop believing it
            return str(hop).strip()[:64]
        if not any(address in network for network in networks):
            return str(address)
    return str(_address(chain[-1]))


def address_key(address):
    """The bucket of an address: itself for IPv4, its /64 for IPv6 (one host easily has a whole /64)."""
    parsed = _address(address)
    if parsed is not None and parsed.version == 6 and not parsed.ipv4_mapped:
        return str(ipaddress.ip_network(f"{parsed}/64", strict=False))
    if parsed is not None and parsed.version == 6:
        return str(parsed.ipv4_mapped)
    return address


def email_key(email):
    """A login counter's name for an email: hashed, so the store never holds addresses; case and surrounding
    blanks do not make a new counter (accounts treats those as the same account)."""
    return hashlib.sha256(email.strip().lower().encode("utf-8", "surrogatepass")).hexdigest()[:32]


# --- the policies -------------------------------------------------------------------------------------------


class RateLimiter:
    """Requests per client address and per user, `limit` per `window` seconds each (0: no limit)."""

    def __init__(self, store, per_address, per_user, window, prefix=DEFAULT_PREFIX):
        self.store = store
        self.per_address = per_address
        self.per_user = per_user
        self.window = window
        self.prefix = prefix

    def check_address(self, address):
        return self._check(f"{self.prefix}rl:addr:{address_key(address)}", self.per_address)

    def check_user(self, user_id):
        return self._check(f"{self.prefix}rl:user:{user_id}", self.per_user)

    def _check(self, key, limit):
        if not limit:
            return Decision(True)
        return self.store.acquire(key, limit, self.window)


class LoginThrottle:
    """Attempts at logging in per email and per client address in a fixed window (see the module docstring).

    `begin` counts an attempt and says (decision, delay); then exactly one of `failed` (the answer was 401: it
    stays counted), `succeeded` (the email's count is cleared, the address's attempt given back) or `abandoned`
    (any other outcome: both given back)."""

    def __init__(self, store, per_email, per_address, window, max_delay, prefix=DEFAULT_PREFIX):
        self.store = store
        self.per_email = per_email
        self.per_address = per_address
        self.window = window
        self.max_delay = max_delay
        self.prefix = prefix

    def keys(self, email, address):
        """[(kind, key, limit)] of the counters that apply (a limit of 0 is off)."""
        keys = [
            ("email", f"{self.prefix}login:email:{email_key(email)}", self.per_email),
            ("address", f"{self.prefix}login:addr:{address_key(address)}", self.per_address),
        ]
        return [(kind, key, limit) for kind, key, limit in keys if limit]

    def begin(self, email, address):
        delay, refused_for = 0.0, 0.0
        for _kind, key, limit in self.keys(email, address):
            count, ttl = self.store.add(key, 1, self.window)
            if count > limit:
                refused_for = max(refused_for, ttl)
            delay = max(delay, self.delay(count, limit))
        if refused_for:
            return Decision(False, refused_for), 0.0
        return Decision(True), delay

    def delay(self, count, limit):
        """No delay for the first half of the allowance, then growing evenly to `max_delay` at the limit."""
        free = limit // 2
        if count <= free or count > limit:
            return 0.0
        return self.max_delay * (count - free) / (limit - free)

    def failed(self, email, address):
        pass  # the attempt counted in `begin` stands

    def succeeded(self, email, address):
        for kind, key, _limit in self.keys(email, address):
            if kind == "email":
                self.store.delete(key)
            else:
                self.store.add(key, -1, self.window)

    def abandoned(self, email, address):
        for _kind, key, _limit in self.keys(email, address):
            self.store.add(key, -1, self.window)


# --- nameko extensions --------------------------------------------------------------------------------------


def _number(config, name, default, kind=int):
    value = config.get(name)
    return default if value in (None, "") else kind(value)


def _redis_location(url):
    # For the log: never the password.
    parts = urllib.parse.urlsplit(url)
    return f"Redis at {parts.hostname or 'localhost'}:{parts.port or 6379}{parts.path or ''}"


class LimitStore(SharedExtension):
    """The counters of one gateway container, shared by its RateLimit and LoginGuard dependencies: Redis at
    config `REDIS_URL` (keys prefixed with `REDIS_KEY_PREFIX` and a colon), falling back to memory; says at start
    which."""

    def setup(self):
        config = self.container.config
        self.prefix = f"{config.get('REDIS_KEY_PREFIX') or 'cartmesh'}:"
        url = (config.get("REDIS_URL") or "").strip()
        self.client = None
        primary = None
        if url:
            # No retries in the client: a failed call falls back to memory at once instead.
            self.client = redis.Redis.from_url(
                url,
                socket_timeout=REDIS_SOCKET_TIMEOUT,
                socket_connect_timeout=REDIS_SOCKET_TIMEOUT,
                retry=Retry(NoBackoff(), 0),
            )
            primary = RedisStore(self.client)
            errors = (redis.RedisError, OSError)
        else:
            errors = ()
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


class RateLimit(DependencyProvider):
    """Injects a `RateLimiter` (`check_address(address)`, `check_user(user_id)` → Decision) on the container's
    LimitStore, limits from config `RATE_LIMIT_PER_ADDRESS`, `RATE_LIMIT_PER_USER` (requests per
    `RATE_LIMIT_WINDOW_SECONDS`; 0: off). Nothing to commit: each check is one atomic step in the store."""

    limits = LimitStore()
    limiter = None

    def setup(self):
        # The router reads TRUSTED_PROXIES for every request: a bad entry must stop the start, not each request.
        try:
            trusted_networks(self.container.config.get("TRUSTED_PROXIES"))
        except ValueError as exc:
            raise ConfigurationError(f"TRUSTED_PROXIES: {exc}")

    def get_dependency(self, worker_ctx):
        if self.limiter is None:  # here, not in setup: extensions are set up in no particular order
            config = self.container.config
            self.limiter = RateLimiter(
                self.limits.store,
                _number(config, "RATE_LIMIT_PER_ADDRESS", 0),
                _number(config, "RATE_LIMIT_PER_USER", 0),
                _number(config, "RATE_LIMIT_WINDOW_SECONDS", 60, float),
                self.limits.prefix,
            )
        return self.limiter


class LoginGuard(DependencyProvider):
    """Injects `attempt(email, address)`, a context manager around one login: 429 (`rate_limited`, Retry-After)
    when the email or address is over its allowance, else a delay past half of it, then the outcome recorded
    (config `LOGIN_THROTTLE_PER_EMAIL`, `LOGIN_THROTTLE_PER_ADDRESS` attempts per
    `LOGIN_THROTTLE_WINDOW_SECONDS`, `LOGIN_THROTTLE_MAX_DELAY_SECONDS`; 0: off)."""

    limits = LimitStore()
    throttle = None

    def get_dependency(self, worker_ctx):
        if self.throttle is None:  # here, not in setup: extensions are set up in no particular order
            config = self.container.config
            self.throttle = LoginThrottle(
                self.limits.store,
                _number(config, "LOGIN_THROTTLE_PER_EMAIL", 0),
                _number(config, "LOGIN_THROTTLE_PER_ADDRESS", 0),
                _number(config, "LOGIN_THROTTLE_WINDOW_SECONDS", 900, float),
                _number(config, "LOGIN_THROTTLE_MAX_DELAY_SECONDS", 2.0, float),
                self.limits.prefix,
            )
        throttle = self.throttle
        return lambda email, address: guarded_login(throttle, email, address)


@contextmanager
def guarded_login(throttle, email, address, sleep=eventlet.sleep):
    """One login attempt under `throttle` (see LoginGuard)."""
    decision, delay = throttle.begin(email, address)
    if not decision.allowed:
        # The same answer whether or not the email exists: the gateway does not know.
        raise rate_limited(decision.retry_after, "Too many failed logins; try again later.")
    if delay:
        sleep(delay)
    try:
        yield
    except Unauthorized:
        throttle.failed(email, address)
        raise
    except BaseException:
        throttle.abandoned(email, address)
        raise
    throttle.succeeded(email, address)


def login_attempt(call):
    """The throttle around a login (routes.issue_token); nothing when the service has no LoginGuard."""
    guard = getattr(call.service, "login_guard", None)
    if guard is None:
        return nullcontext()
    return guard(call.body.email, call.client)
