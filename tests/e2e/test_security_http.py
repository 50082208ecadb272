"""HTTP hygiene over the wire: rate limits (per address, per user, shared through Redis, in memory without it),
login throttling, security headers, CORS, and what the gateway refuses before the app (sizes, slow clients).

Rate limits and throttling are tested on extra gateway instances with their own settings, started on the shared
system's broker (so they reach the same backends, as a second gateway replica would); the shared gateway has
them off (conftest.GATEWAY_TEST_SETTINGS)."""

import contextlib
import json
import logging
import socket
import subprocess
import time
import uuid

import pytest
import redis
import requests
from nameko.containers import ServiceContainer
from nameko.testing.utils import find_free_port

from gateway_http.service import GatewayService
from tests.e2e.conftest import Client, assert_error
from tests.waiting import wait_until

REDIS_URL = "redis://127.0.0.1:6379/0"
SHOP = "https://shop.example.com"


@pytest.fixture
def http_system(system):
    """The shared system; these tests are about HTTP, not storage, so they run on one backend only."""
    if system.backend != "sqlite":
        pytest.skip("HTTP-level behaviour does not depend on the database: run on the SQLite system only")
    return system


@contextlib.contextmanager
def gateway(system, **overrides):
    """Another gateway instance on `system`'s broker with config `overrides`; yields a Client for it."""
    port = find_free_port()
    config = dict(system.configs["gateway"], WEB_SERVER_ADDRESS=f"127.0.0.1:{port}", **overrides)
    container = ServiceContainer(GatewayService, config)
    container.start()
    try:
        yield Client(f"http://127.0.0.1:{port}")
    finally:
        container.stop()


def limits(**settings):
    """Gateway overrides: these limits on, the rest off, counters in memory unless REDIS_URL is given."""
    config = {
        "RATE_LIMIT_PER_ADDRESS": 0,
        "RATE_LIMIT_PER_USER": 0,
        "LOGIN_THROTTLE_PER_EMAIL_AND_ADDRESS": 0,
        "LOGIN_THROTTLE_PER_EMAIL": 0,
        "LOGIN_THROTTLE_PER_ADDRESS": 0,
        "REDIS_URL": "",
        "REDIS_KEY_PREFIX": f"test-{uuid.uuid4().hex[:8]}",
    }
    config.update(settings)
    return config


def assert_rate_limited(response, at_most):
    error = assert_error(response, 429, "rate_limited")
    retry_after = int(response.headers["Retry-After"])
    assert 1 <= retry_after <= at_most
    return error


def register(client):
    email = f"user-{uuid.uuid4().hex[:10]}@example.com"
    assert client.post("/auth/register", json={"email": email, "password": "correct horse"}).status_code == 201
    return email


# --- rate limits ----------------------------------------------------------------------------------------------


def test_rate_limit_per_address_answers_429_with_retry_after(http_system):
    with gateway(http_system, **limits(RATE_LIMIT_PER_ADDRESS=5, RATE_LIMIT_WINDOW_SECONDS=60)) as client:
        statuses = [client.get("/openapi.json").status_code for _ in range(3)]
        statuses += [client.get("/no/such/path").status_code for _ in range(2)]  # every request counts
        assert statuses == [200, 200, 200, 404, 404]
        refused = client.get("/openapi.json")
        assert_rate_limited(refused, 12)  # one request per 60/5 s
        assert refused.headers["X-Content-Type-Options"] == "nosniff"


def test_rate_limit_per_user_is_per_token_subject(http_system):
    with gateway(http_system, **limits(RATE_LIMIT_PER_USER=3, RATE_LIMIT_WINDOW_SECONDS=30)) as client:
        ann = client.login(register(client), "correct horse")
        bob = client.login(register(client), "correct horse")
        assert [ann.get("/me").status_code for _ in range(3)] == [200, 200, 200]
        assert_rate_limited(ann.get("/me"), 10)
        assert bob.get("/me").status_code == 200  # same address, another user
        assert client.get("/openapi.json").status_code == 200  # anonymous requests are not a user's


def test_two_gateways_share_their_counters_through_redis(http_system, caplog):
    caplog.set_level(logging.INFO, logger="gateway_http.ratelimit")
    settings = limits(RATE_LIMIT_PER_ADDRESS=4, RATE_LIMIT_WINDOW_SECONDS=60, REDIS_URL=REDIS_URL)
    with gateway(http_system, **settings) as first, gateway(http_system, **settings) as second:
        assert "shared through Redis at 127.0.0.1:6379" in caplog.text
        answers = [client.get("/openapi.json").status_code for client in (first, second, first, second)]
        assert answers == [200] * 4
        assert_rate_limited(first.get("/openapi.json"), 15)
        assert_rate_limited(second.get("/openapi.json"), 15)
    client = redis.Redis.from_url(REDIS_URL)
    keys = client.keys(settings["REDIS_KEY_PREFIX"] + ":rl:addr:*")
    assert keys and all(client.pttl(key) > 0 for key in keys)
    client.delete(*keys)


def test_without_redis_each_gateway_limits_alone_and_says_so(http_system, caplog):
    caplog.set_level(logging.INFO, logger="gateway_http.ratelimit")
    unreachable = f"redis://127.0.0.1:{find_free_port()}/0"
    settings = limits(RATE_LIMIT_PER_ADDRESS=2, RATE_LIMIT_WINDOW_SECONDS=60, REDIS_URL=unreachable)
    with gateway(http_system, **settings) as first, gateway(http_system, **settings) as second:
        assert "does not answer" in caplog.text and "per instance, in memory" in caplog.text
        assert [first.get("/openapi.json").status_code for _ in range(2)] == [200, 200]
        assert_rate_limited(first.get("/openapi.json"), 30)
        assert second.get("/openapi.json").status_code == 200  # its own memory, its own count
    caplog.clear()
    with gateway(http_system, **limits(RATE_LIMIT_PER_ADDRESS=2)):
        assert "REDIS_URL is not set" in caplog.text


@pytest.fixture
def private_redis(tmp_path):
    """A Redis server of the test's own (the shared one must not be stopped), stopped by `kill()`."""
    port = find_free_port()
    process = subprocess.Popen(
        [
            "redis-server",
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(tmp_path),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{port}/0"
    try:
        wait_until(redis.Redis.from_url(url).ping, timeout=10, what="the private redis-server answers")
    except AssertionError:
        process.kill()
        pytest.fail("could not start a private redis-server")
    process.url = url
    yield process
    process.kill()
    process.wait()


def test_the_gateway_keeps_limiting_when_redis_dies_mid_run(http_system, private_redis, caplog):
    caplog.set_level(logging.INFO, logger="gateway_http.ratelimit")
    settings = limits(
        RATE_LIMIT_PER_ADDRESS=3, RATE_LIMIT_WINDOW_SECONDS=60, REDIS_URL=private_redis.url, REDIS_RETRY_SECONDS=60
    )
    with gateway(http_system, **settings) as client:
        assert client.get("/openapi.json").status_code == 200
        private_redis.kill()
        private_redis.wait()
        # Redis is gone: the same limit, counted in memory from here on, and no 5xx.
        assert [client.get("/openapi.json").status_code for _ in range(3)] == [200, 200, 200]
        assert_rate_limited(client.get("/openapi.json"), 30)
        assert "does not answer" in caplog.text


# --- login throttling -----------------------------------------------------------------------------------------

# Callers at different addresses: the gateway believes X-Forwarded-For from 127.0.0.1 (TRUSTED_PROXIES).
A, B, C = "192.0.2.10", "198.51.100.20", "203.0.113.30"


@pytest.fixture
def shared_limits():
    """limits() with the counters in the shared Redis and 127.0.0.1 a trusted proxy; their keys deleted after."""
    prefixes = []

    def make(**settings):
        config = limits(REDIS_URL=REDIS_URL, TRUSTED_PROXIES="127.0.0.1", **settings)
        prefixes.append(config["REDIS_KEY_PREFIX"])
        return config

    yield make
    client = redis.Redis.from_url(REDIS_URL)
    for prefix in prefixes:
        keys = client.keys(prefix + ":*")
        if keys:
            client.delete(*keys)
    client.close()


def log_in(client, email, password="correct horse", address=None):
    headers = {"X-Forwarded-For": address} if address else {}
    return client.post("/auth/token", json={"email": email, "password": password}, headers=headers)


def failed_logins(client, email, count, address=None):
    return [log_in(client, email, "wrong password", address) for _ in range(count)]


def statuses(responses):
    return [response.status_code for response in responses]


def unknown_email():
    return f"nobody-{uuid.uuid4().hex[:10]}@example.com"


def without_retry_after(body):
    # The seconds left differ between two answers a moment apart; everything else must not.
    body["error"].get("details", {}).pop("retry_after_seconds", None)
    return body


def test_failed_logins_slow_down_then_429_the_same_for_unknown_emails(http_system):
    settings = limits(
        LOGIN_THROTTLE_PER_EMAIL_AND_ADDRESS=4,
        LOGIN_THROTTLE_PER_EMAIL=4,
        LOGIN_THROTTLE_WINDOW_SECONDS=60,
        LOGIN_THROTTLE_MAX_DELAY_SECONDS=0.2,
    )
    with gateway(http_system, **settings) as client:
        known = register(client)
        answers = {}
        for email in (known, unknown_email()):
            responses = failed_logins(client, email, 6)
            for response in responses[:4]:
                assert_error(response, 401, "unauthorized")
            assert responses[3].elapsed.total_seconds() >= 0.2  # the 4th waited the whole delay
            for response in responses[4:]:
                assert_rate_limited(response, 60)
            answers[email] = [
                (r.status_code, without_retry_after(r.json()), sorted(set(r.headers) - {"X-Request-ID", "Date"}))
                for r in responses
            ]
        [known_answers, unknown_answers] = answers.values()
        assert known_answers == unknown_answers  # nothing tells whether the email exists
        # Locked: even the right password waits for the window to end.
        locked = log_in(client, known)
        assert_rate_limited(locked, 60)
        assert without_retry_after(locked.json()) == unknown_answers[-1][1]


def test_refused_logins_are_not_counted_and_a_success_clears_the_pair(http_system, shared_limits):
    settings = shared_limits(
        LOGIN_THROTTLE_PER_EMAIL_AND_ADDRESS=2, LOGIN_THROTTLE_PER_ADDRESS=6, LOGIN_THROTTLE_WINDOW_SECONDS=60
    )
    with gateway(http_system, **settings) as client:
        ann, bob = register(client), register(client)
        assert statuses(failed_logins(client, ann, 12, A)) == [401, 401] + [429] * 10
        # bob: a success between failures starts his pair afresh.
        assert statuses(failed_logins(client, bob, 1, A)) == [401]
        assert log_in(client, bob, address=A).status_code == 200
        assert statuses(failed_logins(client, bob, 3, A)) == [401, 401, 429]
        # A has 5 failures, not 16: one more is an ordinary 401, then A is at its limit and failures are 429.
        assert statuses(failed_logins(client, unknown_email(), 1, A)) == [401]
        assert_rate_limited(failed_logins(client, unknown_email(), 1, A)[0], 60)


def test_a_locked_pair_opens_when_its_window_ends_however_often_it_is_refused(http_system, shared_limits):
    window = 2
    settings = shared_limits(LOGIN_THROTTLE_PER_EMAIL_AND_ADDRESS=2, LOGIN_THROTTLE_WINDOW_SECONDS=window)
    with gateway(http_system, **settings) as client:
        email = register(client)
        started = time.monotonic()
        assert statuses(failed_logins(client, email, 2, A)) == [401, 401]
        # The right password from the attacker's address is refused until the window passes; every refusal in
        # between is not counted, so the pair opens on time.
        refused = []

        def pair_open():
            answer = log_in(client, email, address=A)
            if answer.status_code == 429:
                refused.append(answer)
                return None
            return [answer]

        [answer] = wait_until(pair_open, timeout=started + window + 5 - time.monotonic(), what="the pair opens")
        opened = time.monotonic() - started
        assert answer.status_code == 200, answer.text
        for refusal in refused:
            assert_rate_limited(refusal, window)
        assert refused and window - 0.05 <= opened <= window + 5


def test_an_attacker_on_one_email_only_slows_its_owner_elsewhere(http_system, shared_limits):
    settings = shared_limits(
        LOGIN_THROTTLE_PER_EMAIL_AND_ADDRESS=3,
        LOGIN_THROTTLE_PER_EMAIL=4,
        LOGIN_THROTTLE_WINDOW_SECONDS=60,
        LOGIN_THROTTLE_MAX_DELAY_SECONDS=0.5,
    )
    with gateway(http_system, **settings) as client:
        victim = register(client)
        for address in (A, C):
            assert statuses(failed_logins(client, victim, 5, address)) == [401, 401, 401, 429, 429]
        # Six failures for the victim's email from elsewhere: from B she is slowed to the most, never refused.
        answer = log_in(client, victim, address=B)
        assert answer.status_code == 200, answer.text
        assert answer.elapsed.total_seconds() >= 0.5
        assert_error(failed_logins(client, victim, 1, B)[0], 401, "unauthorized")  # a typo is still a 401


def test_failures_for_many_emails_from_one_address_never_refuse_a_correct_password_new_there(
    http_system, shared_limits
):
    settings = shared_limits(
        LOGIN_THROTTLE_PER_EMAIL_AND_ADDRESS=3, LOGIN_THROTTLE_PER_ADDRESS=4, LOGIN_THROTTLE_WINDOW_SECONDS=60
    )
    with gateway(http_system, **settings) as client:
        dora, erin = register(client), register(client)
        sprayed = [failed_logins(client, unknown_email(), 1, A)[0] for _ in range(6)]
        assert statuses(sprayed) == [401] * 4 + [429] * 2  # past A's limit, failures are refused
        assert log_in(client, dora, address=A).status_code == 200  # dora has not failed from A
        # erin fails from A: her failure is refused like the unknown emails', and then so is her right password.
        failure = failed_logins(client, erin, 1, A)[0]
        assert_rate_limited(failure, 60)
        assert without_retry_after(failure.json()) == without_retry_after(sprayed[-1].json())
        assert_rate_limited(log_in(client, erin, address=A), 60)
        assert log_in(client, erin, address=B).status_code == 200


# --- headers and CORS -----------------------------------------------------------------------------------------


def assert_secure_headers(response):
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["X-Frame-Options"] == "DENY"
    assert "frame-ancestors 'none'" in response.headers["Content-Security-Policy"]
    assert response.headers["Referrer-Policy"] == "no-referrer"
    assert response.headers["X-Request-ID"]


def test_security_headers_on_success_errors_404_and_413(http_system):
    anon = http_system.client()
    user = http_system.new_user()
    cases = [
        (anon.get("/products"), 200),
        (anon.post("/auth/token", json={"email": "nobody@example.com", "password": "whatever1"}), 401),
        (user.get("/me"), 200),
        (user.get("/carts/0f8fad5b-d9cb-469f-a165-70867728950e"), 404),
        (anon.get("/no/such/path"), 404),
        (anon.post("/auth/register", data=b"x" * (70 * 1024), headers={"Content-Type": "application/json"}), 413),
        (anon.delete("/products"), 405),
    ]
    for response, status in cases:
        assert response.status_code == status, response.text
        assert_secure_headers(response)
        assert response.headers["Cache-Control"] == "no-store"  # authenticated, an error, or no handler's choice
        assert "Access-Control-Allow-Origin" not in response.headers  # CORS_ORIGINS is empty
    login = anon.post("/auth/token", json={"email": user_email(user), "password": "correct horse"})
    assert login.status_code == 200 and login.headers["Cache-Control"] == "no-store"  # it carries a token


def user_email(client):
    return client.get("/me").json()["email"]


def test_cors_preflight_allowed_and_denied_and_headers_on_answers(http_system):
    with gateway(http_system, **limits(CORS_ORIGINS=f"{SHOP},http://localhost:3000")) as client:
        allowed = client.request(
            "OPTIONS",
            "/carts",
            headers={
                "Origin": SHOP,
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "Authorization, Content-Type, Idempotency-Key, X-Request-ID",
            },
        )
        assert allowed.status_code == 204
        assert allowed.headers["Access-Control-Allow-Origin"] == SHOP
        assert allowed.headers["Access-Control-Allow-Credentials"] == "true"
        assert {"Authorization", "Content-Type", "Idempotency-Key", "X-Request-ID"} <= set(
            allowed.headers["Access-Control-Allow-Headers"].split(", ")
        )
        assert_secure_headers(allowed)
        for headers in (
            {"Origin": "https://evil.example.com", "Access-Control-Request-Method": "POST"},
            {"Origin": SHOP, "Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "X-Custom"},
        ):
            denied = client.request("OPTIONS", "/carts", headers=headers)
            assert_error(denied, 403, "forbidden")
            assert "Access-Control-Allow-Origin" not in denied.headers
        answer = client.get("/products", headers={"Origin": SHOP})
        assert answer.headers["Access-Control-Allow-Origin"] == SHOP
        assert set(answer.headers["Access-Control-Expose-Headers"].split(", ")) == {"X-Request-ID", "Retry-After"}
        error = client.get("/nowhere", headers={"Origin": SHOP})
        assert error.status_code == 404 and error.headers["Access-Control-Allow-Origin"] == SHOP
        foreign = client.get("/products", headers={"Origin": "https://evil.example.com"})
        assert foreign.status_code == 200 and "Access-Control-Allow-Origin" not in foreign.headers
        assert "Origin" in foreign.headers["Vary"]


# --- before the app: sizes and slow clients -------------------------------------------------------------------


def raw_exchange(base_url, first, rest=b"", pause=0.0):
    """Sends `first`, waits `pause` s (a slow client), sends `rest`; returns (status, headers, body) to EOF."""
    host, port = base_url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=15) as conn:
        conn.sendall(first)
        if pause:
            time.sleep(pause)  # plays a slow client: the gateway's deadline is what is tested
        with contextlib.suppress(OSError):
            conn.sendall(rest)
        received = b""
        while chunk := conn.recv(65536):
            received += chunk
    head, _, body = received.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = requests.structures.CaseInsensitiveDict(line.split(": ", 1) for line in lines[1:])
    return int(lines[0].split()[1]), headers, body


def assert_refused(answer, status, code):
    got, headers, body = answer
    assert got == status, body
    assert headers["Content-Type"] == "application/json; charset=utf-8"
    assert headers["X-Content-Type-Options"] == "nosniff" and headers["X-Request-ID"]
    assert json.loads(body)["error"]["code"] == code


def test_oversized_headers_and_urls_are_refused_in_the_envelope(http_system):
    anon = http_system.client()
    big = anon.get("/products", headers={"X-Padding": "p" * 9000})
    assert_error(big, 431, "request_header_fields_too_large")
    many = anon.get("/products", headers={f"X-Pad-{n}": "p" * 1000 for n in range(40)})  # 40 KB > 32 KiB
    assert_error(many, 431, "request_header_fields_too_large")
    assert_error(anon.get("/products/" + "A" * 9000), 414, "uri_too_long")
    assert anon.get("/products").status_code == 200  # and it keeps serving


def test_slow_clients_are_cut_off(http_system):
    settings = limits(HTTP_HEADER_TIMEOUT_SECONDS=0.5, HTTP_BODY_TIMEOUT_SECONDS=0.5, HTTP_KEEPALIVE_SECONDS=2)
    with gateway(http_system, **settings) as client:
        slow_headers = raw_exchange(
            client.base_url, b"GET /products HTTP/1.1\r\nHost: x\r\n", b"Connection: close\r\n\r\n", pause=1.5
        )
        assert_refused(slow_headers, 408, "request_timeout")
        body = json.dumps({"email": "a@example.com", "password": "whatever1"}).encode()
        head = (
            b"POST /auth/token HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n" % len(body)
        )
        slow_body = raw_exchange(client.base_url, head + body[:10], body[10:], pause=1.5)
        assert_refused(slow_body, 408, "request_timeout")
        # A connection that sends nothing is closed after HTTP_KEEPALIVE_SECONDS.
        host, port = client.base_url.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port)), timeout=15) as idle:
            assert idle.recv(10) == b""
        assert client.get("/openapi.json").status_code == 200
