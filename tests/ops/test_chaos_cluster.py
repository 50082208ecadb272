"""`make chaos CHAOS_ARGS=--cluster` (scripts/chaos_cluster.py), short: a local three-node RabbitMQ cluster, the
system on quorum queues with every node in AMQP_URI, kill -9 of the node every client is connected to under
checkout load, and its restart; afterwards nothing acknowledged is lost, every order is settled, the audit
passes, no event is unpublished or parked. Real `rabbitmq-server` nodes beside the machine's broker."""

import json
import subprocess

import pytest

from scripts import chaos, chaos_cluster, cluster
from scripts.run import ROOT
from tests.ops.script_runs import run_script

SECONDS = 9  # of load: the kill at 3 s, the restart at 6 s (it takes about 5 s), then a few seconds more
DEADLINE = 240  # the whole run, on two busy cores (it takes about 60 s here: the cluster alone about 25 s)


@pytest.mark.timeout(DEADLINE + 10)
def test_kill_9_of_a_broker_node_under_load_loses_no_acknowledged_write_and_no_event(tmp_path):
    # A machine that runs the suite has RabbitMQ (.ci/run starts it): fail, not skip, where its scripts are missing.
    assert cluster.installed(), f"rabbitmq-server's scripts are not installed ({cluster.SBIN}/rabbitmq-server)"
    log_path = tmp_path / "chaos-cluster.log"
    argv = ["--seconds", str(SECONDS), "--shoppers", "3", "--log-level", "WARNING"]
    code, output, results = run_script("scripts.chaos_cluster", argv, log_path, DEADLINE, chaos.RESULT_MARK)
    assert results, output[-5000:]
    result = json.loads(results[-1])
    assert len(result["killed"]) == 1 and result["killed"][0].startswith("cm1-")
    assert result["nodes_running"] == 3  # the killed node rejoined
    assert result["acknowledged"]["orders"] > 0 and result["acknowledged"]["lines"] > 0
    assert result["lost_writes"] == [], output[-5000:]
    assert result["over_counted"] == 0, output[-5000:]
    assert result["unsettled_orders"] == []
    assert result["audit"]["ok"], result["audit"]
    assert result["audit"]["checked"]["orders"] >= result["acknowledged"]["orders"]
    assert not any(result["outbox_unpublished"].values()) and not any(result["parked_events"].values())
    assert result["passed"] and code == 0, output[-5000:]


def test_cluster_nodes_listen_below_the_ephemeral_port_range():
    ports = {cluster.free_port() for _ in range(20)}
    assert all(20000 <= port < 32768 for port in ports)


def test_no_port_is_handed_out_twice(monkeypatch):
    # The nodes bind their ports only when they start, so each pick must differ from the ones before it: make the
    # random choice repeat itself and check that free_port still moves on.
    picks = iter([25001, 25001, 25001, 25002])
    monkeypatch.setattr(cluster.random, "randrange", lambda _low, _high: next(picks))
    monkeypatch.setattr(cluster, "_handed_out", set())
    assert [cluster.free_port(), cluster.free_port()] == [25001, 25002]


def test_the_errors_window_runs_from_the_first_client_error_to_the_last():
    window = chaos_cluster.errors_window([11.0, 10.5, 13.25], killed_at=10.0)
    assert window == {"count": 3, "first_after_kill": 0.5, "last_after_kill": 3.2, "window_seconds": 2.8}
    assert chaos_cluster.errors_window([], killed_at=10.0)["window_seconds"] == 0.0


def test_make_chaos_hands_cluster_to_the_cluster_run():
    dry = subprocess.run(
        ["make", "-n", "chaos", "CHAOS_ARGS=--cluster --seconds 30", "STAMP=nothing"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    assert "-m scripts.chaos_cluster --cluster --seconds 30" in dry.stdout
    plain = subprocess.run(["make", "-n", "chaos", "STAMP=nothing"], cwd=ROOT, capture_output=True, text=True)
    assert "-m scripts.chaos " in plain.stdout + " " and "chaos_cluster" not in plain.stdout
