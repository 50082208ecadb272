"""tests/waiting.py: the one polling helper of the test suite."""

import itertools
import time

import eventlet
import pytest

from tests import waiting
from tests.waiting import wait_until


def test_it_returns_the_first_truthy_value():
    answers = iter([None, 0, "", {"status": "confirmed"}])

    assert wait_until(lambda: next(answers), interval=0.01) == {"status": "confirmed"}


def test_an_exception_is_not_yet_and_polling_goes_on():
    calls = itertools.count(1)

    def flaky():
        if next(calls) < 3:
            raise ConnectionError("not listening yet")
        return "up"

    assert wait_until(flaky, interval=0.01) == "up"


def test_at_the_deadline_it_fails_naming_what_and_the_last_value():
    started = time.monotonic()
    with pytest.raises(AssertionError) as failure:
        wait_until(lambda: [], timeout=0.3, interval=0.05, what="the order is confirmed")
    took = time.monotonic() - started

    assert str(failure.value) == "the order is confirmed: not within 0.3 s (the last check returned [])"
    assert 0.3 <= took < 2.0  # the deadline, and not much more even on a busy machine


def test_the_last_exception_is_named_and_chained():
    def refused():
        raise ConnectionRefusedError("port 9 closed")

    with pytest.raises(AssertionError) as failure:
        wait_until(refused, timeout=0.2, interval=0.05)

    assert "refused: not within 0.2 s" in str(failure.value)
    assert "raised ConnectionRefusedError('port 9 closed')" in str(failure.value)
    assert isinstance(failure.value.__cause__, ConnectionRefusedError)


def test_the_predicate_is_called_every_interval_and_once_more_at_the_deadline():
    calls = []
    with pytest.raises(AssertionError):
        wait_until(lambda: calls.append(time.monotonic()), timeout=0.5, interval=0.1)

    assert 3 <= len(calls) <= 7  # about 6; fewer when the machine is busy, never more
    assert calls[-1] - calls[0] >= 0.45


def test_pytest_outcomes_are_not_swallowed():
    calls = []

    def gives_up():
        calls.append(1)
        pytest.fail("the process ended")

    with pytest.raises(pytest.fail.Exception, match="the process ended"):
        wait_until(gives_up, timeout=5)
    assert calls == [1]


def test_other_green_threads_run_while_it_waits():
    assert eventlet.patcher.is_monkey_patched("time")  # as the root conftest.py arranges
    done = []
    eventlet.spawn_after(0.1, done.append, "set by another green thread")

    assert wait_until(lambda: done, timeout=5) == ["set by another green thread"]


def test_under_eventlet_it_pauses_with_eventlet_sleep_and_otherwise_with_time_sleep(monkeypatch):
    pauses = []
    monkeypatch.setattr(waiting.eventlet, "sleep", lambda seconds: pauses.append(("eventlet", seconds)))
    monkeypatch.setattr(waiting.time, "sleep", lambda seconds: pauses.append(("time", seconds)))
    answers = iter([False, True])
    wait_until(lambda: next(answers), interval=0.02)

    monkeypatch.setattr(waiting.patcher, "is_monkey_patched", lambda module: False)
    answers = iter([False, True])
    wait_until(lambda: next(answers), interval=0.03)

    assert pauses == [("eventlet", 0.02), ("time", 0.03)]


def test_a_call_still_running_at_the_deadline_is_cut_short_even_if_it_catches_exceptions():
    def hangs():
        try:
            eventlet.sleep(60)
        except Exception:  # a careless predicate: it must not take the deadline for "not yet"
            return True

    started = time.monotonic()
    with pytest.raises(AssertionError) as failure:
        wait_until(hangs, timeout=0.3, what="a hanging call")

    assert time.monotonic() - started < 2
    assert str(failure.value) == "a hanging call: not within 0.3 s (the last check was still running at the deadline)"
