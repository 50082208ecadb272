"""`make soak` (scripts/soak.py), short: the whole system under mixed load for about 20 s, sampled for RSS, open
fds and queue depths; the report is written, no client got an unexpected answer and no process's open fds
grew. `make soak` runs the ten-minute default (docs/RESILIENCE.md has one run)."""

import json

import pytest

from scripts import soak
from tests.ops.script_runs import run_script

SECONDS = 20  # of load, the first 5 s a warm-up
DEADLINE = 150  # the whole run, on two busy cores (it takes about 50 s here)


@pytest.mark.timeout(DEADLINE + 10)
def test_a_short_soak_reports_every_process_with_no_errors_and_no_fd_growth(tmp_path):
    log_path = tmp_path / "soak.log"
    argv = ["--seconds", str(SECONDS), "--warmup", "5", "--shoppers", "2", "--out", str(tmp_path / "results")]
    code, output, results = run_script("scripts.soak", argv, log_path, DEADLINE, soak.RESULT_MARK)
    assert results, output[-5000:]
    result = json.loads(results[-1])

    [report] = (tmp_path / "results").glob("soak-*.md")
    assert "## Processes" in report.read_text()
    assert (tmp_path / "results" / f"{report.stem}.json").exists()
    assert {row["process"] for row in result["processes"]} == {
        "accounts",
        "carts",
        "catalog",
        "payments",
        "orders",
        "gateway",
        "supervisor",
    }
    assert result["requests"] > 100 and result["client_answers"].get("checkout 202", 0) > 0
    assert result["errors"] == 0, result["unexpected_examples"]
    assert [row for row in result["processes"] if row["fd_growth"] > result["settings"]["fd_growth"]] == []
    assert result["passed"] and code == 0, result["flagged"]


def sample(fds, rss):
    return {"processes": {"carts": {"rss_mib": rss, "hwm_mib": rss, "fds": fds}}, "queues": {}}


def test_growth_flags_a_process_whose_fds_or_rss_grew_past_the_limits():
    steady = soak.growth([sample(20, 70.0), sample(22, 75.0)], rss_limit_mib=25, fd_limit=5)
    assert steady == [
        {
            "process": "carts",
            "start": {"rss_mib": 70.0, "hwm_mib": 70.0, "fds": 20},
            "end": {"rss_mib": 75.0, "hwm_mib": 75.0, "fds": 22},
            "rss_growth_mib": 5.0,
            "fd_growth": 2,
            "flagged": [],
        }
    ]
    [leaking] = soak.growth([sample(20, 70.0), sample(40, 140.0)], rss_limit_mib=25, fd_limit=5)
    assert leaking["flagged"] == ["RSS grew 70.0 MiB (limit 25)", "open fds grew by 20 (limit 5)"]
    [gone] = soak.growth([sample(20, 70.0), {"processes": {}, "queues": {}}], rss_limit_mib=25, fd_limit=5)
    assert gone["flagged"] == ["ended during the soak"]
