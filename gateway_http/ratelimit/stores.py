"""The counters behind rate limits and login throttling, and the two atomic steps taken on them. Plain Python and
Redis, no framework.

Each step is written once in Python (MemoryStore runs it) and once in Lua (RedisStore runs it: one round trip,
atomic, so every gateway instance on the same Redis shares the counters exactly):

- `acquire`: one request against one or more rate limits, checked in order, with GCRA (the generic cell rate
  algorithm): one number per client, its "theoretical arrival time". It allows a burst of the whole allowance,
  then one request per window/limit, with no doubled burst at a window boundary (the flaw of a fixed INCR+EXPIRE
  window) and an exact `Retry-After`. The Lua reads Redis's clock, so the gateways' clocks do not matter.
- `reserve_login` / `release`: one login attempt against three counters of attempts (its email and address
  pair, its email, its address), each in a fixed window from its first count: refused (and not counted) by
  `login_refusal`, else counted in all three until `release` gives it back. Counting before accounts is asked
  is what keeps concurrent attempts from slipping past a limit.
"""

import logging
import time
from typing import NamedTuple

log = logging.getLogger(__name__)

DEFAULT_RETRY_SECONDS = 5.0
_SWEEP_EVERY = 10.0  # seconds between sweeps of expired in-memory entries
PAIR, ADDRESS = "pair", "address"  # what refused a login attempt (login_refusal)


class Decision(NamedTuple):
    allowed: bool
    retry_after: float = 0.0  # seconds until a request would be allowed


ALLOWED = Decision(True)


class Reservation(NamedTuple):
    """A login attempt's place in the counters (reserve_login)."""

    allowed: bool
    retry_after: float = 0.0  # refused: seconds until the refusing counter's window ends
    email_count: int = 0  # allowed: the email's counted attempts from every address, this one included
    address_over: float = 0.0  # allowed with the address at its limit: seconds until its window ends; else 0


# --- the algorithms, in plain Python ------------------------------------------------------------------------


def gcra(tat, now, limit, window):
    """One request at `now` against `limit` per `window` seconds, given the stored arrival time `tat` (None:
    never seen). Returns (decision, new tat to store)."""
    interval = window / limit
    tat = now if tat is None or tat < now else tat
    new_tat = tat + interval
    allow_at = new_tat - window
    if now < allow_at:
        return Decision(False, allow_at - now), tat
    return ALLOWED, new_tat


def login_refusal(pair, address, pair_limit, address_limit):
    """Why a login attempt is refused before accounts is asked, given the attempts counted (failed, or still
    being answered) for its (email, address) pair and for its address: PAIR when the pair is at its limit;
    ADDRESS when the address is at its limit and this pair has counted there; None: ask accounts. A pair that
    has not counted at its address is always asked, so other emails' failures there never refuse a correct
    password. A limit of 0 is off."""
    if pair_limit and pair >= pair_limit:
        return PAIR
    if address_limit and address >= address_limit and pair > 0:
        return ADDRESS
    return None


class MemoryStore:
    """The counters of this process only. Green threads switch only on I/O, so no lock is needed."""

    def __init__(self, clock=time.monotonic):
        self.clock = clock
        self._tats = {}  # key -> arrival time (also when the entry may be forgotten)
        self._counters = {}  # key -> [count, expires_at]
        self._swept = clock()

    def acquire(self, limits, window):
        """One request against each (key, limit) in turn, per `window` seconds; stops at the first refusal."""
        now = self._now()
        for key, limit in limits:
            decision, tat = gcra(self._tats.get(key), now, limit, window)
            if not decision.allowed:
                return decision
            self._tats[key] = tat
        return ALLOWED

    def reserve_login(self, pair, email, address, pair_limit, address_limit, window):
        now = self._now()
        pair_count, pair_ttl = self._count(pair, now)
        address_count, address_ttl = self._count(address, now)
        refusal = login_refusal(pair_count, address_count, pair_limit, address_limit)
        if refusal == PAIR:
            return Reservation(False, pair_ttl)
        if refusal == ADDRESS:
            return Reservation(False, min(pair_ttl, address_ttl))
        address_over = address_ttl if address_limit and address_count >= address_limit else 0.0
        counts = [self._add(key, now, window) for key in (pair, email, address)]
        return Reservation(True, 0.0, counts[1], address_over)

    def release(self, decrement=(), delete=()):
        """Takes one from each counter in `decrement` (forgetting it at 0) and forgets those in `delete`."""
        now = self._now()
        for key in decrement:
            entry = self._counters.get(key)
            if entry is not None and entry[1] > now:
                entry[0] -= 1
                if entry[0] <= 0:
                    del self._counters[key]
        for key in delete:
            self._counters.pop(key, None)

    def _count(self, key, now):
        """(count, seconds left in its window) of a live counter; (0, 0.0) for none."""
        entry = self._counters.get(key)
        if entry is None or entry[1] <= now:
            return 0, 0.0
        return entry[0], entry[1] - now

    def _add(self, key, now, window):
        entry = self._counters.get(key)
        if entry is None or entry[1] <= now:
            entry = self._counters[key] = [0, now + window]
        entry[0] += 1
        return entry[0]

    def _now(self):
        now = self.clock()
        if now - self._swept > _SWEEP_EVERY:  # forget what has expired, so memory follows the live clients
            self._swept = now
            self._tats = {key: tat for key, tat in self._tats.items() if tat > now}
            self._counters = {key: entry for key, entry in self._counters.items() if entry[1] > now}
        return now


# --- the same in Redis --------------------------------------------------------------------------------------

# GCRA in milliseconds on Redis's clock, for each key in turn. ARGV: interval ms and window ms for each key.
_GCRA_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
for i, key in ipairs(KEYS) do
  local interval = tonumber(ARGV[2 * i - 1])
  local window = tonumber(ARGV[2 * i])
  local tat = tonumber(redis.call('GET', key) or now)
  if tat < now then tat = now end
  local new_tat = tat + interval
  local allow_at = new_tat - window
  if now < allow_at then return {0, allow_at - now} end
  redis.call('SET', key, new_tat, 'PX', new_tat - now)
end
return {1, 0}
"""

# login_refusal, then the count. KEYS: pair, email, address; ARGV: pair limit, address limit, window ms.
_RESERVE_LOGIN_LUA = """
local pair = tonumber(redis.call('GET', KEYS[1]) or '0')
local address = tonumber(redis.call('GET', KEYS[3]) or '0')
local pair_limit = tonumber(ARGV[1])
local address_limit = tonumber(ARGV[2])
local address_over = address_limit > 0 and address >= address_limit
if pair_limit > 0 and pair >= pair_limit then return {0, redis.call('PTTL', KEYS[1]), 0, 0} end
if address_over and pair > 0 then
  return {0, math.min(redis.call('PTTL', KEYS[1]), redis.call('PTTL', KEYS[3])), 0, 0}
end
local email = 0
for i, key in ipairs(KEYS) do
  local n = redis.call('INCR', key)
  if redis.call('PTTL', key) < 0 then redis.call('PEXPIRE', key, ARGV[3]) end
  if i == 2 then email = n end
end
local over_ms = 0
if address_over then over_ms = redis.call('PTTL', KEYS[3]) end
return {1, 0, email, over_ms}
"""

# The first ARGV[1] KEYS lose one count (deleted at 0); the rest are deleted.
_RELEASE_LUA = """
local decrement = tonumber(ARGV[1])
for i, key in ipairs(KEYS) do
  if i > decrement or redis.call('DECR', key) <= 0 then redis.call('DEL', key) end
end
"""


class RedisStore:
    """The same counters in Redis, shared by every gateway instance that uses the same Redis and key `prefix`."""

    def __init__(self, client, prefix=""):
        self.client = client
        self.prefix = prefix
        # register_script: EVALSHA, loading the script again after a flush.
        self._gcra = client.register_script(_GCRA_LUA)
        self._reserve_login = client.register_script(_RESERVE_LOGIN_LUA)
        self._release = client.register_script(_RELEASE_LUA)

    def acquire(self, limits, window):
        window_ms = max(1, int(window * 1000))
        keys, args = [], []
        for key, limit in limits:
            interval = max(1, window_ms // limit)  # whole milliseconds: Lua prints big fractions inexactly
            keys.append(self.prefix + key)
            args += [interval, interval * limit]
        allowed, wait_ms = self._gcra(keys=keys, args=args)
        return ALLOWED if allowed else Decision(False, int(wait_ms) / 1000)

    def reserve_login(self, pair, email, address, pair_limit, address_limit, window):
        keys = [self.prefix + key for key in (pair, email, address)]
        allowed, wait_ms, email_count, over_ms = self._reserve_login(
            keys=keys, args=[pair_limit, address_limit, max(1, int(window * 1000))]
        )
        return Reservation(bool(allowed), max(0, int(wait_ms)) / 1000, int(email_count), max(0, int(over_ms)) / 1000)

    def release(self, decrement=(), delete=()):
        keys = [self.prefix + key for key in (*decrement, *delete)]
        if keys:
            self._release(keys=keys, args=[len(decrement)])


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

    def acquire(self, limits, window):
        return self._call("acquire", limits, window)

    def reserve_login(self, pair, email, address, pair_limit, address_limit, window):
        return self._call("reserve_login", pair, email, address, pair_limit, address_limit, window)

    def release(self, decrement=(), delete=()):
        return self._call("release", decrement, delete)

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
