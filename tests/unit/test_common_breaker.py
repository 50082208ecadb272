"""The circuit breaker's state machine (services/common/breaker.py), driven by a fake clock."""

import pytest

from services.common.breaker import CLOSED, HALF_OPEN, OPEN, CircuitBreaker, CircuitOpen
from services.common.errors import NotFound, ServiceTimeout, ServiceUnavailable


class FakeClock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def no_answer(exc):
    return isinstance(exc, (ServiceTimeout, ServiceUnavailable))


@pytest.fixture
def clock():
    return FakeClock()


@pytest.fixture
def changes():
    return []


@pytest.fixture
def breaker(clock, changes):
    return CircuitBreaker(
        "catalog", failures=3, reset_seconds=10, clock=clock, on_change=lambda old, new: changes.append((old, new))
    )


def fail(breaker, exc=None):
    with pytest.raises(type(exc or ServiceTimeout("late"))):
        with breaker.calling(no_answer):
            raise exc or ServiceTimeout("late")


def succeed(breaker):
    with breaker.calling(no_answer):
        pass


def test_opens_after_the_threshold_of_failures_in_a_row(breaker, changes):
    fail(breaker)
    fail(breaker)
    assert breaker.state == CLOSED
    fail(breaker)
    assert breaker.state == OPEN and changes == [(CLOSED, OPEN)]
    with pytest.raises(CircuitOpen) as refused:
        succeed(breaker)
    # A ServiceUnavailable: the gateway answers it 503 service_unavailable, and the message names the service.
    assert isinstance(refused.value, ServiceUnavailable) and refused.value.status == 503
    assert "catalog" in refused.value.message and "circuit is open" in refused.value.message


def test_a_success_resets_the_count(breaker):
    fail(breaker)
    fail(breaker)
    succeed(breaker)
    fail(breaker)
    fail(breaker)
    assert breaker.state == CLOSED


def test_expected_errors_are_answers_not_failures(breaker):
    for _ in range(5):
        fail(breaker, NotFound("no such product"))
    assert breaker.state == CLOSED and breaker.failures == 0


def test_half_open_after_the_pause_lets_one_probe_through(breaker, clock, changes):
    for _ in range(3):
        fail(breaker)
    clock.now += 9.9
    with pytest.raises(CircuitOpen):
        breaker.before_call()
    clock.now += 0.1
    assert breaker.before_call() is True  # the probe
    assert breaker.state == HALF_OPEN
    with pytest.raises(CircuitOpen):  # everyone else waits for the probe's verdict
        breaker.before_call()
    breaker.after_call(True, failed=False)
    assert breaker.state == CLOSED
    assert changes == [(CLOSED, OPEN), (OPEN, HALF_OPEN), (HALF_OPEN, CLOSED)]
    assert breaker.before_call() is False  # closed: calls are plain calls again


def test_a_failed_probe_opens_again_for_a_whole_pause(breaker, clock):
    for _ in range(3):
        fail(breaker)
    clock.now += 10
    fail(breaker)  # the probe
    assert breaker.state == OPEN
    clock.now += 5
    with pytest.raises(CircuitOpen):
        succeed(breaker)
    clock.now += 5
    succeed(breaker)
    assert breaker.state == CLOSED


def test_a_probe_abandoned_without_a_verdict_frees_the_slot(breaker, clock):
    for _ in range(3):
        fail(breaker)
    clock.now += 10
    with pytest.raises(KeyboardInterrupt):  # a BaseException: the worker was killed, not the call failed
        with breaker.calling(no_answer):
            raise KeyboardInterrupt
    assert breaker.state == HALF_OPEN and not breaker.probing
    succeed(breaker)
    assert breaker.state == CLOSED


def test_late_results_of_calls_admitted_before_opening_change_nothing(breaker, clock):
    admitted = [breaker.before_call() for _ in range(4)]  # four calls in flight while closed
    for probe in admitted[:3]:
        breaker.after_call(probe, failed=True)
    assert breaker.state == OPEN
    breaker.after_call(admitted[3], failed=False)  # a slow success from before: no verdict on the probe
    assert breaker.state == OPEN
    clock.now += 10
    probe = breaker.before_call()
    breaker.after_call(False, failed=True)  # a late failure of an old call while the probe is out
    assert breaker.state == HALF_OPEN and breaker.probing
    breaker.after_call(probe, failed=False)
    assert breaker.state == CLOSED


def test_rejects_nonsense_settings():
    with pytest.raises(ValueError):
        CircuitBreaker("x", failures=0)
    with pytest.raises(ValueError):
        CircuitBreaker("x", reset_seconds=-1)
