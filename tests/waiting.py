"""The tests' one way to wait for something that happens on its own: `wait_until` polls a predicate until it
is true, with a deadline. (To wait for an event the test holds, wait on the event itself.)"""

import time

import eventlet
from eventlet import patcher

DEFAULT_TIMEOUT = 10.0
DEFAULT_INTERVAL = 0.05


def wait_until(predicate, timeout=DEFAULT_TIMEOUT, interval=DEFAULT_INTERVAL, what=None):
    """Call `predicate()` every `interval` seconds until it returns something truthy, and return that.

    An exception the predicate raises counts as "not yet" (a server still starting, an assertion not true yet).
    When `timeout` seconds have passed, fails with an AssertionError that names `what` (by default the
    predicate's name) and what the last call returned or raised. Under eventlet's monkey patching (the test
    suite's root conftest.py) the pauses are `eventlet.sleep`, so other green threads run meanwhile, and a call
    still running at the deadline is cut short; without it, plain `time.sleep` and the deadline is checked
    between calls.
    """
    what = what or getattr(predicate, "__qualname__", repr(predicate))
    green = patcher.is_monkey_patched("time")
    sleep = eventlet.sleep if green else time.sleep
    deadline = time.monotonic() + timeout
    while True:
        error = None
        try:
            value = _call(predicate, max(deadline - time.monotonic(), interval) if green else None)
        except _StillRunning:
            last = "was still running at the deadline"
            break
        except Exception as raised:  # noqa: BLE001 -- "not yet": reported if it is the last word
            error, last = raised, f"raised {raised!r}"
        else:
            if value:
                return value
            last = f"returned {value!r}"
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        sleep(min(interval, remaining))
    raise AssertionError(f"{what}: not within {timeout} s (the last check {last})") from error


class _StillRunning(BaseException):
    """Raised into a predicate call that outlives the deadline; a BaseException, so that a predicate that
    catches Exception cannot take it for a "not yet"."""


def _call(predicate, limit):
    """`predicate()`, cut short with _StillRunning after `limit` seconds (None: no limit)."""
    if limit is None:
        return predicate()
    with eventlet.Timeout(limit, _StillRunning):
        return predicate()
