"""A circuit breaker: stop calling a service that keeps failing, and try it again after a pause.

    closed ──`failures` failures in a row──► open ──`reset_seconds` later, the next call──► half-open
      ▲                                       ▲                                               │
      └──────────── the probe succeeds ───────┼───────────── the probe fails ◄─────────────────┘

While open, every call is refused at once with `CircuitOpen` (a `ServiceUnavailable`: 503), so a caller stops
waiting a timeout per request for a service that is not there. Half-open lets exactly one call through, the
probe; the others are refused until it ends. Only failures the caller's `is_failure` names count (no answer:
timeouts, nothing consuming, the broker away); a service's deliberate errors (NotFound, ValidationFailed...)
are answers, and count as successes.

Plain Python without I/O, the clock injected, so unit tests drive it with a fake clock. Under eventlet nothing
here yields, so each method runs uninterrupted and needs no lock. (pybreaker, the maintained library, holds an
RLock for the whole guarded call; under eventlet's monkey patching that serialises every call through one
breaker: ten concurrent 0.1 s calls took 1.0 s instead of 0.1 s. So not pybreaker.)
"""

import time
from contextlib import contextmanager

from nameko.exceptions import deserialize_to_instance

from services.common.errors import ServiceUnavailable

CLOSED, HALF_OPEN, OPEN = "closed", "half_open", "open"
STATES = (CLOSED, HALF_OPEN, OPEN)


@deserialize_to_instance
class CircuitOpen(ServiceUnavailable):
    """Raised instead of calling a service whose circuit is open: answered 503 `service_unavailable`."""


class CircuitBreaker:
    """The state machine of one caller's circuit to one service (see the module docstring).

    `on_change(old_state, new_state)`, if given, is called on every transition (metrics, a log line).
    """

    def __init__(self, name, failures=5, reset_seconds=10.0, clock=time.monotonic, on_change=None):
        if failures < 1 or reset_seconds < 0:
            raise ValueError("a breaker needs failures >= 1 and reset_seconds >= 0")
        self.name = name
        self.threshold = int(failures)
        self.reset_seconds = float(reset_seconds)
        self.clock = clock
        self.on_change = on_change
        self.state = CLOSED
        self.failures = 0  # in a row, while closed
        self.opened_at = None
        self.probing = False  # half-open: the one probe is in flight

    def before_call(self):
        """Admit a call, or raise `CircuitOpen`. True when the admitted call is the half-open probe."""
        if self.state == OPEN:
            if self.clock() < self.opened_at + self.reset_seconds:
                raise self._refusal()
            self._move(HALF_OPEN)
        if self.state == HALF_OPEN:
            if self.probing:
                raise self._refusal()
            self.probing = True
            return True
        return False

    def after_call(self, probe, failed):
        """Record how an admitted call ended. Calls admitted before the circuit opened may end later: only the
        probe decides while half-open, and nothing decides while open."""
        if probe:
            self.probing = False
            if failed:
                self._open()
            else:
                self.failures = 0
                self._move(CLOSED)
        elif self.state == CLOSED:
            if not failed:
                self.failures = 0
                return
            self.failures += 1
            if self.failures >= self.threshold:
                self._open()

    def abandon(self, probe):
        """An admitted call ended without a verdict (its worker was killed): let another probe through."""
        if probe:
            self.probing = False

    @contextmanager
    def calling(self, is_failure):
        """Guard the block: refused while open; its exception, if `is_failure(exc)`, counts as a failure."""
        probe = self.before_call()
        try:
            yield
        except Exception as exc:
            self.after_call(probe, failed=bool(is_failure(exc)))
            raise
        except BaseException:  # GreenletExit, eventlet.Timeout from outside: no verdict on the service
            self.abandon(probe)
            raise
        else:
            self.after_call(probe, failed=False)

    def _open(self):
        self.opened_at = self.clock()
        self.failures = 0
        self._move(OPEN)

    def _move(self, state):
        old, self.state = self.state, state
        if old != state and self.on_change is not None:
            self.on_change(old, state)

    def _refusal(self):
        return CircuitOpen(f"the {self.name} service is not available (its circuit is open after repeated failures)")
