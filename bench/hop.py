"""The CPU cost of one RPC round trip: Cartmesh's `Rpc` proxy and `rpc` entrypoint against stock nameko's.

Four services, each its own `nameko run` process on the bench's vhost: an echo service and a caller service for
each stack. A caller's `drive(calls, concurrency, payload)` makes `calls` calls to its echo service,
`concurrency` at a time, from inside one worker (as a service calls another). The CPU time (user + system, from
/proc/<pid>/stat) that the caller's process and the echo's process spent meanwhile, divided by `calls`, is the
cost of one call on each side. The broker's CPU is read the same way when it runs on this machine.

- **stock**: nameko's `RpcProxy` and `@rpc`, nameko's `ServiceContainer`, no other dependency, no logging.
- **cartmesh**: what every Cartmesh service has around a call: `services.common.rpc`'s `Rpc` and `rpc`, the
  `GracefulContainer`, `Telemetry` (metrics, the span, one log line per worker) and `RequestId`, logging at
  INFO through the project's formatter, exactly as config/*.yml sets it.

The stacks alternate, round after round, so that a change of the machine's speed meets both; each side's figure
is the median of its rounds.

    .venv/bin/python -m bench.hop            # the numbers, on a fresh vhost of the local broker
"""

import argparse
import json
import os
import statistics
import sys
import tempfile
import time

import eventlet
from nameko.rpc import RpcProxy
from nameko.rpc import rpc as stock_rpc

from services.common.context import RequestId
from services.common.metrics import Telemetry
from services.common.rpc import Rpc, rpc

# About the size of a product, what most calls carry.
PAYLOAD = {
    "sku": "MUG-CLASSIC",
    "name": "Classic mug",
    "description": "A mug that holds a normal amount of tea.",
    "price_cents": 1200,
    "stock": 120,
}
DEFAULT_CALLS = 3000
DEFAULT_CONCURRENCY = 8
DEFAULT_ROUNDS = 3
STACKS = ("stock", "cartmesh")


def _drive(proxy, calls, concurrency, payload):
    pool = eventlet.GreenPool(concurrency)
    for answer in pool.imap(lambda _n: proxy.echo(payload), range(calls)):
        assert answer == payload
    return calls


class StockEcho:
    name = "hop_stock_echo"

    @stock_rpc
    def echo(self, payload):
        return payload


class StockCaller:
    name = "hop_stock_caller"

    target = RpcProxy("hop_stock_echo")

    @stock_rpc
    def drive(self, calls, concurrency, payload):
        return _drive(self.target, calls, concurrency, payload)


class CartmeshEcho:
    name = "hop_cartmesh_echo"

    request_id = RequestId()
    telemetry = Telemetry()

    @rpc
    def echo(self, payload):
        return payload


class CartmeshCaller:
    name = "hop_cartmesh_caller"

    target = Rpc("hop_cartmesh_echo", timeout=30)
    request_id = RequestId()
    telemetry = Telemetry()

    @rpc
    def drive(self, calls, concurrency, payload):
        return _drive(self.target, calls, concurrency, payload)


SERVICES = {
    "stock": ("StockCaller", "StockEcho"),
    "cartmesh": ("CartmeshCaller", "CartmeshEcho"),
}


def config_text(stack):
    """The config file of a stack's processes: the same worker count; Cartmesh's container and logging."""
    lines = ["AMQP_URI: ${AMQP_URI}", "max_workers: 10"]
    if stack == "cartmesh":
        lines += [
            "SERVICE_CONTAINER_CLS: services.common.container.GracefulContainer",
            "METRICS_PORT: 0",
            "LOGGING:",
            "  version: 1",
            "  disable_existing_loggers: false",
            "  formatters:",
            "    default: {(): services.common.logs.Formatter, log_format: console}",
            "  handlers:",
            "    console: {class: services.common.logs.BatchingStreamHandler, formatter: default}",
            "  root: {level: INFO, handlers: [console]}",
        ]
    return "\n".join(lines) + "\n"


def cpu_seconds(pid):
    """User + system CPU seconds of process `pid` so far."""
    from bench.stats import parse_cpu_ticks

    with open(f"/proc/{pid}/stat") as stat:
        return parse_cpu_ticks(stat.read()) / os.sysconf("SC_CLK_TCK")


def broker_cpu_seconds(broker_pids):
    total = 0.0
    for pid in broker_pids:
        try:
            total += cpu_seconds(pid)
        except OSError:
            pass
    return total


def one_round(cluster, stack, pids, broker_pids, calls, concurrency):
    """µs of CPU per call on the caller, the callee and the broker, for one round of `calls` calls."""
    caller, callee = pids
    before = (cpu_seconds(caller), cpu_seconds(callee), broker_cpu_seconds(broker_pids), time.monotonic())
    done = getattr(cluster, f"hop_{stack}_caller").drive(calls, concurrency, PAYLOAD)
    after = (cpu_seconds(caller), cpu_seconds(callee), broker_cpu_seconds(broker_pids), time.monotonic())
    assert done == calls
    per_call = [(a - b) / calls * 1e6 for a, b in zip(after[:3], before[:3], strict=True)]
    return {
        "caller_us": per_call[0],
        "callee_us": per_call[1],
        "broker_us": per_call[2],
        "calls_per_s": calls / (after[3] - before[3]),
    }


def summarize(rounds):
    """The median of each figure over a stack's rounds, and the caller + callee total."""
    keys = ("caller_us", "callee_us", "broker_us", "calls_per_s")
    summary = {key: statistics.median(one[key] for one in rounds) for key in keys}
    summary["total_us"] = summary["caller_us"] + summary["callee_us"]
    summary["rounds"] = rounds
    return summary


def compare(results):
    """Cartmesh's figures as ratios to stock nameko's (caller, callee and their total)."""
    stock, cartmesh = results["stock"], results["cartmesh"]
    return {
        key: (cartmesh[key] / stock[key] if stock[key] else None)
        for key in ("caller_us", "callee_us", "total_us", "broker_us")
    }


def measure(
    amqp_uri,
    work_dir,
    broker_pids=(),
    calls=DEFAULT_CALLS,
    concurrency=DEFAULT_CONCURRENCY,
    rounds=DEFAULT_ROUNDS,
    say=print,
):
    """Start both stacks on `amqp_uri`, measure `rounds` alternating rounds, stop them; the results dict."""
    import subprocess

    from nameko.standalone.rpc import ClusterRpcProxy

    from bench.system import ROOT, wait_until

    processes = {}
    env = dict(os.environ, AMQP_URI=amqp_uri, PYTHONPATH=ROOT)
    try:
        for stack, classes in SERVICES.items():
            config = os.path.join(work_dir, f"hop-{stack}.yml")
            with open(config, "w") as out:
                out.write(config_text(stack))
            for cls in classes:
                log = open(os.path.join(work_dir, f"hop-{cls}.log"), "ab")
                processes[cls] = (
                    subprocess.Popen(
                        [sys.executable, "-m", "nameko", "run", "--config", config, f"bench.hop:{cls}"],
                        cwd=ROOT,
                        env=env,
                        stdin=subprocess.DEVNULL,
                        stdout=log,
                        stderr=subprocess.STDOUT,
                    ),
                    log,
                )
        results = {stack: [] for stack in STACKS}
        with ClusterRpcProxy({"AMQP_URI": amqp_uri}, timeout=300) as cluster:

            def answering():
                try:
                    for stack in STACKS:
                        getattr(cluster, f"hop_{stack}_caller").drive(1, 1, PAYLOAD)
                    return True
                except Exception:
                    return False

            wait_until(answering, 120, "the RPC hop services")
            for stack in STACKS:  # warm-up: connections, pools, first-call paths
                getattr(cluster, f"hop_{stack}_caller").drive(min(calls, 500), concurrency, PAYLOAD)
            for number in range(rounds):
                for stack in STACKS if number % 2 == 0 else reversed(STACKS):
                    caller, callee = SERVICES[stack]
                    pids = (processes[caller][0].pid, processes[callee][0].pid)
                    one = one_round(cluster, stack, pids, broker_pids, calls, concurrency)
                    results[stack].append(one)
                    say(
                        f"RPC hop, {stack}: caller {one['caller_us']:.0f} µs, callee {one['callee_us']:.0f} µs, "
                        f"broker {one['broker_us']:.0f} µs per call ({one['calls_per_s']:.0f} calls/s)"
                    )
        summary = {stack: summarize(results[stack]) for stack in STACKS}
        summary["ratio"] = compare(summary)
        summary["settings"] = {"calls": calls, "concurrency": concurrency, "rounds": rounds}
        return summary
    finally:
        for process, _log in processes.values():
            process.terminate()
        for process, log in processes.values():
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            log.close()


def main(argv=None):
    from bench import stats
    from bench.system import Vhost

    parser = argparse.ArgumentParser(prog="python -m bench.hop", description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=DEFAULT_CALLS, help="calls per round (default %(default)s)")
    parser.add_argument("--concurrency", type=int, default=DEFAULT_CONCURRENCY, help="calls in flight")
    parser.add_argument("--rounds", type=int, default=DEFAULT_ROUNDS, help="rounds per stack")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    options = parser.parse_args(argv)
    vhost = Vhost().create()
    try:
        with tempfile.TemporaryDirectory(prefix="cartmesh-hop-") as work_dir:
            summary = measure(
                vhost.amqp_uri,
                work_dir,
                stats.pids_named("beam.smp"),
                options.calls,
                options.concurrency,
                options.rounds,
            )
    finally:
        vhost.delete()
    if options.json:
        print(json.dumps(summary, indent=2))
    for stack in STACKS:
        one = summary[stack]
        print(
            f"{stack:>9}: caller {one['caller_us']:6.0f} µs + callee {one['callee_us']:6.0f} µs = "
            f"{one['total_us']:6.0f} µs per call; broker {one['broker_us']:5.0f} µs; {one['calls_per_s']:.0f} calls/s"
        )
    ratio = summary["ratio"]
    print(
        f"cartmesh / stock: caller {ratio['caller_us']:.2f}, callee {ratio['callee_us']:.2f}, "
        f"total {ratio['total_us']:.2f}, broker {ratio['broker_us']:.2f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
