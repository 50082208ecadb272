"""What is counted and what a count means: requests per client address and per user (RateLimiter), and login
attempts (LoginThrottle). Plain Python over a store (stores.py); a limit of 0 is off and costs no store call.

Login throttling counts failed attempts at POST /auth/token in three counters, each in a fixed window of
`window` seconds from its first count; the gateway cannot tell an unknown email from a known one, so both are
counted, slowed and refused alike:

- per (email, address) pair, `per_pair`: at the limit the pair is refused (429, even the right password) until
  its window ends. A successful login clears the pair.
- per email from every address, `per_email`: only slows. Past half of it the answer waits, growing evenly to
  `max_delay` at the limit and staying there; never a 429, so nobody can lock an email out from elsewhere.
- per address for every email, `per_address`: at the limit a failed attempt from there is answered 429, and a
  pair that has failed there is refused; a pair that has not is still asked, so a correct password for an
  account that has not failed from that address is never refused.

An attempt is counted before accounts is asked (so concurrent attempts cannot slip past a limit: one in flight
counts as failed until answered) and given back unless accounts answered 401. A refused attempt is not counted.
"""

import hashlib
import ipaddress
from typing import NamedTuple

from gateway_http.http import ip_address
from gateway_http.ratelimit.stores import ALLOWED


def address_key(address):
    """The bucket of an address: itself for IPv4, its /64 for IPv6 (one host easily has a whole /64)."""
    parsed = ip_address(address)
    if parsed is not None and parsed.version == 6 and not parsed.ipv4_mapped:
        return str(ipaddress.ip_network(f"{parsed}/64", strict=False))
    if parsed is not None and parsed.version == 6:
        return str(parsed.ipv4_mapped)
    return address


def email_key(email):
    """A login counter's name for an email: hashed, so the store never holds addresses; case and surrounding
    blanks do not make a new counter (accounts treats those as the same account)."""
    return hashlib.sha256(email.strip().lower().encode("utf-8", "surrogatepass")).hexdigest()[:32]


class RateLimiter:
    """Requests per client address and per user, `limit` per `window` seconds each (0: no limit)."""

    def __init__(self, store, per_address, per_user, window):
        self.store = store
        self.per_address = per_address
        self.per_user = per_user
        self.window = window

    def check(self, address, user_id=None):
        """One request from `address` (and by `user_id`, when given) in one store call: the address's limit
        first, then the user's; a refused request is not counted against the user."""
        limits = []
        if self.per_address:
            limits.append((f"rl:addr:{address_key(address)}", self.per_address))
        if self.per_user and user_id is not None:
            limits.append((f"rl:user:{user_id}", self.per_user))
        if not limits:
            return ALLOWED
        return self.store.acquire(limits, self.window)


class Attempt(NamedTuple):
    """One login attempt as LoginThrottle.begin judged it."""

    allowed: bool
    retry_after: float  # refused: seconds until this email may try again from this address
    delay: float  # allowed: seconds to wait before asking accounts
    failure_retry_after: float  # allowed: when not 0, a failure is answered 429 with this Retry-After
    keys: tuple  # the counters it was counted in: (pair, email, address)


class LoginThrottle:
    """Failed logins per (email, address) pair, per email and per address (see the module docstring).

    `begin` judges and counts an attempt; then exactly one of `failed` (accounts answered 401: it stays counted),
    `succeeded` (the pair is cleared, the email's and address's count given back) or `abandoned` (any other
    outcome: given back)."""

    def __init__(self, store, per_pair, per_email, per_address, window, max_delay):
        self.store = store
        self.per_pair = per_pair
        self.per_email = per_email
        self.per_address = per_address
        self.window = window
        self.max_delay = max_delay

    @property
    def on(self):
        return bool(self.per_pair or self.per_email or self.per_address)

    def begin(self, email, address):
        hashed, bucket = email_key(email), address_key(address)
        keys = (f"login:pair:{hashed}:{bucket}", f"login:email:{hashed}", f"login:addr:{bucket}")
        reservation = self.store.reserve_login(*keys, self.per_pair, self.per_address, self.window)
        if not reservation.allowed:
            return Attempt(False, reservation.retry_after, 0.0, 0.0, keys)
        return Attempt(True, 0.0, self.delay(reservation.email_count), reservation.address_over, keys)

    def delay(self, count):
        """No delay for the first half of `per_email`, then growing evenly to `max_delay` at it, and staying."""
        free = self.per_email // 2
        if not self.per_email or count <= free:
            return 0.0
        return self.max_delay * min(1.0, (count - free) / (self.per_email - free))

    def failed(self, attempt):
        pass  # the count made in `begin` stands

    def succeeded(self, attempt):
        pair, email, address = attempt.keys
        self.store.release(decrement=(email, address), delete=(pair,))

    def abandoned(self, attempt):
        self.store.release(decrement=attempt.keys)
