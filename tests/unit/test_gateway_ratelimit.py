"""The limiter core without a gateway: GCRA, the counters in memory and in Redis (127.0.0.1:6379, as in CI), the
fallback when Redis fails, client addresses behind proxies, and login throttling."""

import uuid

import pytest
import redis

from gateway_http.errors import HttpError
from gateway_http.ratelimit import (
    FallbackStore,
    LoginThrottle,
    MemoryStore,
    RateLimiter,
    RedisStore,
    address_key,
    client_address,
    email_key,
    gcra,
    guarded_login,
)
from services.common.errors import ServiceUnavailable, Unauthorized

REDIS_URL = "redis://127.0.0.1:6379/0"


class Clock:
    def __init__(self, now=1000.0):
        self.now = now

    def __call__(self):
        return self.now


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


def test_memory_store_rate_limit_and_remaining():
    clock = Clock()
    limiter = RateLimiter(MemoryStore(clock), per_address=3, per_user=0, window=60)
    remaining = [limiter.check_address("10.0.0.1").remaining for _ in range(3)]
    assert remaining == [2, 1, 0]
    refused = limiter.check_address("10.0.0.1")
    assert not refused.allowed and refused.retry_after == pytest.approx(20.0)
    assert limiter.check_address("10.0.0.2").allowed  # another address has its own allowance
    assert limiter.check_user("anyone").allowed  # 0: no per-user limit
    clock.now += 20
    assert limiter.check_address("10.0.0.1").allowed


def test_memory_store_forgets_what_expired():
    clock = Clock()
    store = MemoryStore(clock)
    for n in range(100):
        store.acquire(f"k{n}", 10, 1.0)
        store.add(f"c{n}", 1, 1.0)
    clock.now += 60
    store.acquire("fresh", 10, 1.0)
    assert set(store._tats) == {"fresh"} and store._counters == {}


def test_memory_counter_expires_and_refunds():
    clock = Clock()
    store = MemoryStore(clock)
    assert store.add("k", 1, 10) == (1, 10)
    clock.now += 4
    assert store.add("k", 1, 10) == (2, 6)  # the window runs from the first count
    assert store.add("k", -1, 10) == (1, 6)
    clock.now += 6
    assert store.add("k", 1, 10) == (1, 10)
    assert store.add("k", -1, 10) == (0, 0.0)
    assert "k" not in store._counters


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
    first = RateLimiter(RedisStore(client), 4, 0, 60, prefix)
    second = RateLimiter(RedisStore(other), 4, 0, 60, prefix)
    answers = [limiter.check_address("192.0.2.7").allowed for limiter in (first, second, first, second)]
    assert answers == [True] * 4
    refused = second.check_address("192.0.2.7")
    assert not refused.allowed and 14 < refused.retry_after <= 15
    assert client.pttl(f"{prefix}rl:addr:192.0.2.7") > 0  # nothing is kept forever
    other.close()


def test_redis_counter_window_refund_and_delete(redis_client):
    client, prefix = redis_client
    store = RedisStore(client)
    key = prefix + "count"
    assert store.add(key, 1, 30)[0] == 1
    count, ttl = store.add(key, 1, 30)
    assert count == 2 and 29 < ttl <= 30
    assert store.add(key, -1, 30)[0] == 1
    assert store.add(key, -1, 30)[0] == 0 and not client.exists(key)
    store.add(key, 1, 30)
    store.delete(key)
    assert not client.exists(key)


def test_fallback_uses_memory_while_redis_is_down_and_logs_it(caplog):
    broken = RedisStore(redis.Redis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=0.2))
    clock = Clock()
    store = FallbackStore(broken, MemoryStore(clock), retry_seconds=5, clock=clock, errors=(redis.RedisError,))
    limiter = RateLimiter(store, 2, 0, 60)
    assert [limiter.check_address("a").allowed for _ in range(3)] == [True, True, False]
    assert not store.shared
    assert "does not answer" in caplog.text and caplog.text.count("does not answer") == 1
    assert store.down_until == 1005  # not asked again before then


def test_fallback_returns_to_redis_when_it_answers(redis_client, caplog):
    client, prefix = redis_client
    clock = Clock()

    class Flaky(RedisStore):
        down = True

        def acquire(self, *args):
            if self.down:
                raise redis.ConnectionError("gone")
            return super().acquire(*args)

    flaky = Flaky(client)
    store = FallbackStore(flaky, MemoryStore(clock), retry_seconds=5, clock=clock, errors=(redis.RedisError,))
    assert store.acquire(prefix + "k", 5, 60).allowed
    flaky.down = False
    clock.now += 5
    assert store.acquire(prefix + "k", 5, 60).allowed and store.shared
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
    assert client_address(environ, trusted) == expected


def test_address_keys_group_an_ipv6_slash_64():
    assert address_key("2001:db8:1:2:aaaa::1") == address_key("2001:db8:1:2:bbbb::9") == "2001:db8:1:2::/64"
    assert address_key("::ffff:192.0.2.1") == "192.0.2.1"
    assert address_key("192.0.2.1") == "192.0.2.1"
    assert email_key(" Ann@Example.com ") == email_key("ann@example.com") != email_key("bob@example.com")


def throttle(clock, per_email=4, per_address=10):
    return LoginThrottle(MemoryStore(clock), per_email, per_address, window=900, max_delay=2.0)


def test_login_throttle_delays_past_half_then_refuses_until_the_window_ends():
    clock = Clock()
    guard = throttle(clock)
    steps = []
    for _ in range(5):
        decision, delay = guard.begin("ann@example.com", "192.0.2.1")
        guard.failed("ann@example.com", "192.0.2.1")
        steps.append((decision.allowed, delay))
    assert steps == [(True, 0.0), (True, 0.0), (True, 1.0), (True, 2.0), (False, 0.0)]
    clock.now += 899
    assert not guard.begin("ann@example.com", "192.0.2.1")[0].allowed
    clock.now += 1
    assert guard.begin("ann@example.com", "192.0.2.1") == ((True, 0.0, 0), 0.0)


def test_login_throttle_counts_unknown_emails_like_known_ones_and_per_address():
    guard = throttle(Clock(), per_email=100, per_address=3)
    for n in range(3):
        assert guard.begin(f"nobody-{n}@example.com", "192.0.2.1")[0].allowed
    assert not guard.begin("someone-else@example.com", "192.0.2.1")[0].allowed  # the address is used up
    assert guard.begin("someone-else@example.com", "192.0.2.2")[0].allowed


def test_a_successful_login_clears_the_email_and_gives_the_address_its_attempt_back():
    clock = Clock()
    guard = throttle(clock, per_email=4, per_address=4)
    for _ in range(3):
        guard.begin("ann@example.com", "192.0.2.1")
        guard.failed("ann@example.com", "192.0.2.1")
    guard.begin("ann@example.com", "192.0.2.1")
    guard.succeeded("ann@example.com", "192.0.2.1")
    assert guard.begin("ann@example.com", "192.0.2.9") == ((True, 0.0, 0), 0.0)  # first attempt again
    assert guard.begin("bob@example.com", "192.0.2.1")[1] == 2.0  # 3 failures + this one on the address


def test_guarded_login_records_each_outcome():
    clock = Clock()
    guard = throttle(clock, per_email=2, per_address=100)
    sleeps = []

    def attempt(outcome):
        with guarded_login(guard, "ann@example.com", "192.0.2.1", sleep=sleeps.append):
            if outcome is not None:
                raise outcome

    with pytest.raises(ServiceUnavailable):  # accounts did not answer: not counted
        attempt(ServiceUnavailable("down"))
    with pytest.raises(Unauthorized):
        attempt(Unauthorized("wrong"))
    with pytest.raises(Unauthorized):
        attempt(Unauthorized("wrong"))
    assert sleeps == [2.0]
    with pytest.raises(HttpError) as refused:
        attempt(None)
    assert (refused.value.status, refused.value.code) == (429, "rate_limited")
    assert refused.value.headers["Retry-After"] == "900"
