"""The limiter core without a gateway: GCRA, the counters in memory and in Redis (127.0.0.1:6379, as in CI), the
fallback when Redis fails, client addresses behind proxies, and every rule of login throttling (on both stores
where time plays no part; on a fake clock where it does)."""

import uuid

import pytest
import redis

from gateway_http.errors import HttpError
from gateway_http.http import client_address, trusted_networks
from gateway_http.ratelimit.extensions import guarded_login
from gateway_http.ratelimit.policies import LoginThrottle, RateLimiter, address_key, email_key
from gateway_http.ratelimit.stores import FallbackStore, MemoryStore, RedisStore, gcra
from services.common.errors import ServiceUnavailable, Unauthorized

REDIS_URL = "redis://127.0.0.1:6379/0"


class Clock:
    def __init__(self, now=1000.0):
        self.now = now

    def __call__(self):
        return self.now


class Recording:
    """A store that records the calls made on it and passes them on."""

    def __init__(self, store):
        self.store = store
        self.calls = []

    def __getattr__(self, method):
        def call(*args):
            self.calls.append((method, args))
            return getattr(self.store, method)(*args)

        return call


def test_gcra_allows_the_whole_burst_then_one_per_interval():
    tat, allowed = None, []
    for _ in range(6):
        decision, tat = gcra(tat, 100.0, limit=5, window=10.0)
        allowed.append(decision.allowed)
    assert allowed == [True] * 5 + [False]
    assert decision.retry_after == pytest.approx(2.0)  # one request per 10/5 s
    assert gcra(tat, 101.9, 5, 10.0)[0].allowed is False
    assert gcra(tat, 102.0, 5, 10.0)[0].allowed is True


def test_gcra_has_no_double_burst_at_a_window_boundary():
    # A fixed window would allow 5 at 9.9 s and 5 more at 10.0 s; GCRA refills evenly.
    tat = None
    for _ in range(5):
        _decision, tat = gcra(tat, 9.9, 5, 10.0)
    decisions = []
    for _ in range(5):
        decision, tat = gcra(tat, 10.0, 5, 10.0)
        decisions.append(decision.allowed)
    assert decisions.count(True) == 0


def test_memory_store_rate_limit_per_address():
    clock = Clock()
    limiter = RateLimiter(MemoryStore(clock), per_address=3, per_user=0, window=60)
    assert [limiter.check("10.0.0.1").allowed for _ in range(3)] == [True] * 3
    refused = limiter.check("10.0.0.1")
    assert not refused.allowed and refused.retry_after == pytest.approx(20.0)
    assert limiter.check("10.0.0.2").allowed  # another address has its own allowance
    clock.now += 20
    assert limiter.check("10.0.0.1").allowed


def test_one_store_call_per_request_and_none_without_limits():
    store = Recording(MemoryStore(Clock()))
    limiter = RateLimiter(store, per_address=5, per_user=2, window=60)
    assert limiter.check("10.0.0.1", "ann").allowed
    assert store.calls == [("acquire", ([("rl:addr:10.0.0.1", 5), ("rl:user:ann", 2)], 60))]
    assert limiter.check("10.0.0.1").allowed  # anonymous: the address only
    assert store.calls[-1] == ("acquire", ([("rl:addr:10.0.0.1", 5)], 60))
    off = Recording(MemoryStore(Clock()))
    assert RateLimiter(off, 0, 0, 60).check("10.0.0.1", "ann").allowed
    assert off.calls == []


def test_a_request_refused_for_its_address_is_not_counted_against_its_user():
    limiter = RateLimiter(MemoryStore(Clock()), per_address=1, per_user=2, window=60)
    assert limiter.check("10.0.0.1", "ann").allowed
    assert not limiter.check("10.0.0.1", "ann").allowed  # the address's limit
    assert limiter.check("10.0.0.2", "ann").allowed  # ann's second request
    refused = limiter.check("10.0.0.3", "ann")  # her third: the user's limit
    assert not refused.allowed and refused.retry_after == pytest.approx(30.0)


def test_memory_store_forgets_what_expired():
    clock = Clock()
    store = MemoryStore(clock)
    for n in range(100):
        store.acquire([(f"k{n}", 10)], 1.0)
        store.reserve_login(f"p{n}", f"e{n}", f"a{n}", 5, 5, 1.0)
    clock.now += 60
    store.acquire([("fresh", 10)], 1.0)
    assert set(store._tats) == {"fresh"} and store._counters == {}


@pytest.fixture
def redis_client():
    client = redis.Redis.from_url(REDIS_URL, socket_timeout=1, socket_connect_timeout=1)
    try:
        client.ping()
    except redis.RedisError as exc:
        pytest.skip(f"Redis is not running at {REDIS_URL}: {exc} (.ci/run starts it)")
    prefix = f"test-{uuid.uuid4().hex[:8]}:"
    yield client, prefix
    keys = client.keys(prefix + "*")
    if keys:
        client.delete(*keys)
    client.close()


def test_redis_store_gcra_is_shared_by_two_clients(redis_client):
    client, prefix = redis_client
    other = redis.Redis.from_url(REDIS_URL)  # as a second gateway instance would
    first = RateLimiter(RedisStore(client, prefix), 4, 0, 60)
    second = RateLimiter(RedisStore(other, prefix), 4, 0, 60)
    answers = [limiter.check("192.0.2.7").allowed for limiter in (first, second, first, second)]
    assert answers == [True] * 4
    refused = second.check("192.0.2.7")
    assert not refused.allowed and 14 < refused.retry_after <= 15
    assert client.pttl(f"{prefix}rl:addr:192.0.2.7") > 0  # nothing is kept forever
    other.close()


def test_redis_store_checks_address_then_user_in_one_call(redis_client):
    client, prefix = redis_client
    limiter = RateLimiter(RedisStore(client, prefix), per_address=1, per_user=5, window=60)
    assert limiter.check("192.0.2.8", "ann").allowed
    refused = limiter.check("192.0.2.8", "ann")
    assert not refused.allowed and 59 < refused.retry_after <= 60
    # The refused request did not reach the user's limit: one request's worth of GCRA time, not two.
    seconds, micros = client.time()
    assert 11000 < int(client.get(f"{prefix}rl:user:ann")) - (seconds * 1000 + micros // 1000) <= 12000


def test_fallback_uses_memory_while_redis_is_down_and_logs_it(caplog):
    broken = RedisStore(redis.Redis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=0.2))
    clock = Clock()
    store = FallbackStore(broken, MemoryStore(clock), retry_seconds=5, clock=clock, errors=(redis.RedisError,))
    limiter = RateLimiter(store, 2, 0, 60)
    assert [limiter.check("a").allowed for _ in range(3)] == [True, True, False]
    assert not store.shared
    assert "does not answer" in caplog.text and caplog.text.count("does not answer") == 1
    assert store.down_until == 1005  # not asked again before then
    throttle = LoginThrottle(store, 1, 0, 0, 900, 2.0)
    assert throttle.begin("ann@example.com", "a").allowed  # login throttling falls back too
    assert not throttle.begin("ann@example.com", "a").allowed


def test_fallback_returns_to_redis_when_it_answers(redis_client, caplog):
    client, prefix = redis_client
    clock = Clock()

    class Flaky(RedisStore):
        down = True

        def acquire(self, *args):
            if self.down:
                raise redis.ConnectionError("gone")
            return super().acquire(*args)

    flaky = Flaky(client, prefix)
    store = FallbackStore(flaky, MemoryStore(clock), retry_seconds=5, clock=clock, errors=(redis.RedisError,))
    assert store.acquire([("k", 5)], 60).allowed
    flaky.down = False
    clock.now += 5
    assert store.acquire([("k", 5)], 60).allowed and store.shared
    assert client.exists(prefix + "k")
    assert "answers again" in caplog.text


@pytest.mark.parametrize(
    "environ, trusted, expected",
    [
        ({"REMOTE_ADDR": "203.0.113.5", "HTTP_X_FORWARDED_FOR": "1.2.3.4"}, "", "203.0.113.5"),  # not believed
        ({"REMOTE_ADDR": "10.0.0.2", "HTTP_X_FORWARDED_FOR": "1.2.3.4, 198.51.100.9"}, "10.0.0.0/8", "198.51.100.9"),
        ({"REMOTE_ADDR": "10.0.0.2", "HTTP_X_FORWARDED_FOR": "198.51.100.9, 10.0.0.7"}, "10.0.0.0/8", "198.51.100.9"),
        ({"REMOTE_ADDR": "10.0.0.2"}, "10.0.0.0/8", "10.0.0.2"),
        ({"REMOTE_ADDR": "10.0.0.2", "HTTP_X_FORWARDED_FOR": "not-an-ip"}, "10.0.0.0/8", "not-an-ip"),
    ],
)
def test_client_address_believes_only_trusted_proxies(environ, trusted, expected):
    assert client_address(environ, trusted_networks(trusted)) == expected


def test_trusted_networks_refuses_a_bad_entry():
    assert [str(n) for n in trusted_networks(" 10.0.0.0/8, 127.0.0.1 ,")] == ["10.0.0.0/8", "127.0.0.1/32"]
    with pytest.raises(ValueError):
        trusted_networks("10.0.0.0/8, proxy.example.com")


def test_address_keys_group_an_ipv6_slash_64():
    assert address_key("2001:db8:1:2:aaaa::1") == address_key("2001:db8:1:2:bbbb::9") == "2001:db8:1:2::/64"
    assert address_key("::ffff:192.0.2.1") == "192.0.2.1"
    assert address_key("192.0.2.1") == "192.0.2.1"
    assert email_key(" Ann@Example.com ") == email_key("ann@example.com") != email_key("bob@example.com")


# --- login throttling ---------------------------------------------------------------------------------------

A, B = "192.0.2.1", "198.51.100.2"


@pytest.fixture(params=["memory", "redis"])
def store(request):
    """Each store in turn, for the rules where time plays no part."""
    if request.param == "memory":
        return MemoryStore(Clock())
    client, prefix = request.getfixturevalue("redis_client")
    return RedisStore(client, prefix)


def throttle(store, per_pair=0, per_email=0, per_address=0, window=900):
    return LoginThrottle(store, per_pair, per_email, per_address, window, max_delay=2.0)


def fail(guard, email, address):
    """One attempt that accounts answers 401; returns the attempt as begun."""
    attempt = guard.begin(email, address)
    if attempt.allowed:
        guard.failed(attempt)
    return attempt


def login(guard, email, address, outcome=None):
    """One attempt through guarded_login, the block raising `outcome` (None: a correct password). Returns
    (what the caller got: "ok", 401, 429 or the exception's type name, whether accounts was asked)."""
    asked = []
    try:
        with guarded_login(guard, email, address, sleep=lambda seconds: None):
            asked.append(True)
            if outcome is not None:
                raise outcome
    except HttpError as exc:
        return exc.status, bool(asked)
    except Unauthorized:
        return 401, bool(asked)
    except Exception as exc:
        return type(exc).__name__, bool(asked)
    return "ok", bool(asked)


def test_the_pair_limit_refuses_even_the_right_password_until_its_window_ends():
    clock = Clock()
    guard = throttle(MemoryStore(clock), per_pair=3)
    assert [login(guard, "ann@example.com", A, Unauthorized("wrong")) for _ in range(3)] == [(401, True)] * 3
    clock.now += 100
    refused = guard.begin("ann@example.com", A)
    assert not refused.allowed and refused.retry_after == pytest.approx(800)  # the window runs from the first
    assert login(guard, "ann@example.com", A) == (429, False)  # the right password: accounts is not asked
    assert login(guard, "ann@example.com", B) == ("ok", True)  # the same email from elsewhere
    clock.now += 800
    assert login(guard, "ann@example.com", A) == ("ok", True)


def test_refused_attempts_are_not_counted(store):
    guard = throttle(store, per_pair=2, per_address=3)
    assert [fail(guard, "ann@example.com", A).allowed for _ in range(2)] == [True, True]
    for _ in range(20):
        assert not guard.begin("ann@example.com", A).allowed
    # The address has 2 failures, not 22: bob's failure there is an ordinary 401 ...
    assert login(guard, "bob@example.com", A, Unauthorized("wrong")) == (401, True)
    # ... and only now is the address at its limit.
    assert login(guard, "carl@example.com", A, Unauthorized("wrong")) == (429, True)


def test_the_email_count_from_every_address_only_slows(store):
    guard = throttle(store, per_pair=2, per_email=4)
    attempts = [fail(guard, "ann@example.com", f"10.0.0.{n}") for n in range(12)]
    assert all(attempt.allowed for attempt in attempts)  # never refused
    assert [attempt.delay for attempt in attempts] == [0.0, 0.0, 1.0] + [2.0] * 9  # half free, then up to 2 s
    assert guard.begin("ann@example.com", "10.0.0.99").allowed  # ann from a new address: slowed, not refused


def test_an_address_over_its_limit_refuses_failures_never_a_correct_password_of_an_email_new_there(store):
    guard = throttle(store, per_pair=5, per_address=3)
    for n in range(3):
        fail(guard, f"spray-{n}@example.com", A)
    assert login(guard, "dora@example.com", A) == ("ok", True)  # has not failed from A: asked, and let in
    assert login(guard, "erin@example.com", A, Unauthorized("wrong")) == (429, True)  # asked; the failure is 429
    assert login(guard, "erin@example.com", A) == (429, False)  # she has failed from A now: not asked
    assert login(guard, "spray-0@example.com", A) == (429, False)
    assert login(guard, "erin@example.com", B) == ("ok", True)  # B is not A


def test_the_refusal_for_an_address_lasts_until_its_window_or_the_pairs_ends():
    clock = Clock()
    guard = throttle(MemoryStore(clock), per_pair=5, per_address=2)
    fail(guard, "ann@example.com", A)
    clock.now += 300
    fail(guard, "bob@example.com", A)
    refused = guard.begin("bob@example.com", A)
    assert not refused.allowed and refused.retry_after == pytest.approx(600)  # A's window: from ann's failure
    clock.now += 600
    assert guard.begin("bob@example.com", A).allowed


def test_a_successful_login_clears_the_pair_and_gives_its_counts_back(store):
    guard = throttle(store, per_pair=2, per_email=4, per_address=3)
    fail(guard, "ann@example.com", A)
    assert login(guard, "ann@example.com", A) == ("ok", True)
    # The pair is cleared: two more failures before it is refused.
    assert [fail(guard, "ann@example.com", A).allowed for _ in range(3)] == [True, True, False]
    # The success did not count at the address (3 failures: now at its limit) nor clear the email's failures.
    assert login(guard, "bob@example.com", A, Unauthorized("wrong")) == (429, True)
    assert guard.begin("ann@example.com", B).delay == 2.0  # ann's 4th counted attempt


def test_an_attempt_that_gets_no_answer_is_given_back(store):
    guard = throttle(store, per_pair=1, per_address=1)
    assert login(guard, "ann@example.com", A, ServiceUnavailable("down")) == ("ServiceUnavailable", True)
    assert login(guard, "ann@example.com", A, Unauthorized("wrong")) == (401, True)  # the first that counts


def test_concurrent_attempts_cannot_slip_past_the_pair_limit(store):
    guard = throttle(store, per_pair=2)
    in_flight = [guard.begin("ann@example.com", A) for _ in range(3)]  # none answered yet
    assert [attempt.allowed for attempt in in_flight] == [True, True, False]


def test_unknown_and_known_emails_are_one_and_the_same_to_the_throttle(store):
    # The gateway cannot tell them apart; all it sees is 401. Case and blanks make no new counter either.
    guard = throttle(store, per_pair=2)
    fail(guard, "Nobody@Example.com ", A)
    fail(guard, "nobody@example.com", A)
    assert not guard.begin(" NOBODY@example.com", A).allowed


def test_redis_keeps_nothing_forever_and_a_success_leaves_nothing_behind(redis_client):
    client, prefix = redis_client
    guard = throttle(RedisStore(client, prefix), per_pair=3, per_email=3, per_address=3, window=60)
    fail(guard, "ann@example.com", A)
    keys = client.keys(prefix + "login:*")
    assert len(keys) == 3 and all(55_000 < client.pttl(key) <= 60_000 for key in keys)
    client.delete(*keys)
    assert login(guard, "bob@example.com", A) == ("ok", True)
    assert client.keys(prefix + "*") == []


def test_guarded_login_refusal_answer():
    guard = throttle(MemoryStore(Clock()), per_pair=1)
    fail(guard, "ann@example.com", A)
    with pytest.raises(HttpError) as refused:
        with guarded_login(guard, "ann@example.com", A, sleep=lambda seconds: None):
            pytest.fail("accounts must not be asked")
    error = refused.value
    assert (error.status, error.code) == (429, "rate_limited")
    assert error.message == "Too many failed logins; try again later."
    assert error.headers["Retry-After"] == "900" and error.details == {"retry_after_seconds": 900}


def test_guarded_login_waits_the_delay_before_asking():
    guard = throttle(MemoryStore(Clock()), per_email=2)
    fail(guard, "ann@example.com", A)
    events = []
    with guarded_login(guard, "ann@example.com", A, sleep=lambda seconds: events.append(("slept", seconds))):
        events.append("asked")
    assert events == [("slept", 2.0), "asked"]
