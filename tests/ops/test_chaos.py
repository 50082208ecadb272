"""`make chaos` (scripts/chaos.py), short: under checkout load, kill -9 one of two carts instances and the orders
service; afterwards the audit passes and every write acknowledged to a client is present, and applied once. Real
processes (`make run` with a restart policy) on a fresh vhost and fresh SQLite databases; `make chaos` runs the
longer default, and `--postgres` on PostgreSQL."""

import json
import signal

import pytest

from scripts import chaos
from tests.ops.script_runs import run_script
from tests.waiting import wait_until

SECONDS = 14  # of load: kills at 3.5 s and 7 s, then load until orders is back and a few seconds more
DEADLINE = 170  # the whole run, on two busy cores (it takes about 60 s here)


@pytest.mark.timeout(DEADLINE + 10)
def test_kill_9_of_a_carts_instance_and_of_orders_under_load_loses_no_acknowledged_write(tmp_path):
    log_path = tmp_path / "chaos.log"
    code, output, results = run_script(
        "scripts.chaos", ["--seconds", str(SECONDS), "--log-level", "WARNING"], log_path, DEADLINE, chaos.RESULT_MARK
    )
    assert results, output[-5000:]
    result = json.loads(results[-1])
    assert result["killed"] == ["carts-2", "orders"]
    assert result["acknowledged"]["orders"] > 0 and result["acknowledged"]["lines"] > 0
    assert result["lost_writes"] == [], output[-5000:]
    assert result["over_counted"] == 0 and result["over_counted_lines"] == [], output[-5000:]
    assert result["unsettled_orders"] == []
    assert result["audit"]["ok"], result["audit"]
    assert result["audit"]["checked"]["in_saga"] == 0
    assert result["audit"]["checked"]["orders"] >= result["acknowledged"]["orders"]
    assert result["passed"] and code == 0, output[-5000:]


def test_the_summary_says_what_was_killed_lost_and_audited():
    text = chaos.summary(
        {
            "backend": "sqlite",
            "load_seconds": 20.5,
            "killed": ["carts-2", "orders"],
            "acknowledged": {"carts": 10, "lines": 20, "orders": 9},
            "client_answers": {"checkout 503": 2},
            "unanswered_checkouts": 1,
            "order_outcomes": {"confirmed": 9},
            "lost_writes": ["cart c1: X ×1 ..."],
            "unsettled_orders": [],
            "over_counted": 1,
            "over_counted_lines": ["cart c2: Y ×1 acknowledged, 2 present"],
            "audit": {"ok": True, "breaches": [], "checked": {"orders": 9, "in_saga": 0, "holds": 9}},
            "passed": False,
        }
    )
    assert "kill -9 of carts-2 and orders" in text
    assert "lost acknowledged writes: 1" in text and "lost: cart c1" in text
    assert "over-counted: 1" in text and "over-counted: cart c2" in text
    assert text.splitlines()[-3] == "chaos: FAILED"  # then the lost and the over-counted lines


def test_the_supervisor_with_a_restart_policy_starts_a_killed_child_again():
    import os
    import threading

    from scripts import run

    supervisor = run.Supervisor(dict(os.environ), restart=True)
    first = supervisor.start("sleeper", ["python", "-c", "import time; time.sleep(60)"])
    outcome = []
    watcher = threading.Thread(target=lambda: outcome.append(supervisor.supervise()))
    watcher.start()
    try:
        os.kill(first.pid, signal.SIGKILL)
        wait_until(
            lambda: [child for child in supervisor.children if child.pid != first.pid],
            timeout=20,
            what="the killed child started again",
        )
        [again] = supervisor.children
        assert again.name == "sleeper" and run.alive(again.pid)
    finally:
        supervisor.stopping.set()
        watcher.join(run.STOP_TIMEOUT + 5)
    assert outcome == [0]  # it kept running until asked to stop, and then stopped every child
    assert not run.alive(again.pid)
