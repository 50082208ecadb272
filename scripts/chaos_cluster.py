"""`make chaos CHAOS_ARGS=--cluster`: kill -9 a RabbitMQ node under checkout load, then prove nothing acknowledged
is lost.

    .venv/bin/python -m scripts.chaos_cluster [--seconds 30] [--shoppers 6] [--postgres ADMIN_URL] [--keep]

What it does, in order:

1. Starts a three-node RabbitMQ cluster of its own (scripts/cluster.py; the machine's broker is left alone), a
   vhost on it, and the system (bench/system.py) with `AMQP_QUEUE_TYPE=quorum` and `AMQP_URI` naming the three
   nodes: every client connects to the first node that answers, and fails over to the next.
2. Drives the checkout load of scripts/chaos.py (its shoppers and ledger: every `2xx` is an acknowledged write).
3. A third of the way in, `kill -9` node 1, the node every client is connected to and where every queue's leader
   is; two thirds in, starts it again (it rejoins the cluster). The load goes on a few seconds more.
4. After the load, as scripts/chaos.py: every order leaves its saga, the audit passes, every acknowledged cart
   line and order is there (and no line applied twice) and settled; and no event was lost: every outbox is empty
   and no event is parked.

It prints a summary and one line `CHAOS {json}`, with the window in which clients saw errors (first to last error,
seconds after the kill) and their count; the exit code is 0 when every check passed. Logs, databases and the
nodes' data are in a work dir, kept with `--keep` or when a check fails.
"""

import argparse
import os
import sys
import time

import requests
from sqlalchemy import MetaData, create_engine, func, inspect, select

from bench.system import Cartmesh, Vhost, poll, wait_until
from bench.wrk import BenchError
from scripts import chaos, run
from scripts.chaos import TIMEOUT, Chaos, Ledger, say
from scripts.cluster import Cluster, ClusterError
from services.common.deadletters import parked_events
from services.common.outbox import outbox_table

KILLED_NODE = 1
READABLE_DEADLINE = 60  # seconds for the gateway's circuits to close again after the load
DRAIN_DEADLINE = 60  # seconds for the outboxes to empty after the load (their relays back off up to 5 s)


class TimedLedger(Ledger):
    """The chaos ledger that also notes when clients saw an error (no answer, or a 5xx)."""

    def __init__(self):
        super().__init__()
        self.error_times = []

    def saw(self, kind, status):
        super().saw(kind, status)
        if status is None or status >= 500:
            with self.lock:
                self.error_times.append(time.monotonic())


class ClusterChaos(Chaos):
    def __init__(self, options):
        super().__init__(options)
        self.cluster = Cluster(work_dir=os.path.join(self.work_dir, "cluster"))

    def start(self):
        say(f"starting a {len(self.cluster.nodes)}-node RabbitMQ cluster")
        self.cluster.start()
        first = self.cluster.nodes[0]
        self.vhost = Vhost(first.amqp_uri, first.ctl_uri)
        self.vhost.create()
        self.vhost.amqp_uri = self.cluster.amqp_uri(self.vhost.name)
        say(f"cluster up: {', '.join(node.name for node in self.cluster.nodes)}")
        if self.databases:
            self.databases.create()
        self.system = Cartmesh(
            self.vhost, self.work_dir, self.options.log_level, self.databases.urls if self.databases else None
        )
        self.system.env.update(CARTMESH_RESTART="1", AMQP_QUEUE_TYPE="quorum")
        say(f"starting the system on quorum queues in {self.work_dir}")
        self.system.start()

    def run(self):
        options = self.options
        self.start()
        pids = self.system.services()
        ledger, killed_at, nodes_running = TimedLedger(), None, 0
        with self.load(ledger) as began:
            self.sleep_until(began + options.seconds / 3)
            node = self.cluster.kill(KILLED_NODE)
            killed_at = time.monotonic()
            say(f"kill -9 RabbitMQ node {node.name}")
            self.sleep_until(began + options.seconds * 2 / 3)
            self.cluster.restart(KILLED_NODE)
            nodes_running = len(self.cluster.running_nodes(node))
            say(f"node {node.name} is back: {nodes_running} nodes running")
            self.sleep_until(max(began + options.seconds, time.monotonic() + chaos.AFTER_RESTART))
        load_seconds = time.monotonic() - began
        say("load stopped; waiting for the gateway to read carts and orders again")
        self.wait_readable(ledger)
        say("waiting for every order to settle")
        result = self.check(ledger, {}, load_seconds)
        result["killed"] = [self.cluster.nodes[KILLED_NODE - 1].name]
        result["nodes_running"] = nodes_running
        result["errors"] = errors_window(ledger.error_times, killed_at)
        result["services_restarted"] = sorted(name for name, pid in self.system.services().items() if pids[name] != pid)
        say("waiting for every outbox to empty")
        result["outbox_unpublished"] = self.drain_outboxes()
        result["parked_events"] = {
            service: len(parked_events({"AMQP_URI": self.vhost.amqp_uri, "AMQP_QUEUE_TYPE": "quorum"}, service))
            for service in run.SERVICES
        }
        result["passed"] = bool(
            result["audit"]["ok"]
            and not result["audit"]["checked"]["in_saga"]
            and not result["lost_writes"]
            and not result["over_counted"]
            and not result["unsettled_orders"]
            and result["acknowledged"]["orders"]
            and not any(result["outbox_unpublished"].values())
            and not any(result["parked_events"].values())
            and killed_at is not None
            and nodes_running == len(self.cluster.nodes)
        )
        return result

    def wait_readable(self, ledger):
        """Until an acknowledged cart and order can be read: a circuit the fail-over opened refuses every read of
        its backend until it closes, and a refused read is not a lost write."""
        cart_id, cart = next(iter(ledger.carts.items()), (None, None))
        order_id, order_cart = next(iter(ledger.orders.items()), (None, None))
        reads = []
        if cart_id:
            reads.append((f"/carts/{cart_id}", cart["token"]))
        if order_id:
            reads.append((f"/orders/{order_id}", ledger.carts[order_cart]["token"]))

        def answered(path, token):
            try:
                headers = {"Authorization": f"Bearer {token}"}
                return requests.get(self.system.base_url + path, headers=headers, timeout=TIMEOUT).status_code == 200
            except requests.RequestException:
                return False

        wait_until(
            lambda: all(answered(path, token) for path, token in reads),
            READABLE_DEADLINE,
            "the gateway reads carts and orders again",
            self.system.processes,
        )

    def drain_outboxes(self):
        """{service: unpublished outbox rows}, once all are 0 or after DRAIN_DEADLINE seconds."""
        return poll(self.unpublished, lambda counts: not any(counts.values()), DRAIN_DEADLINE)

    def unpublished(self):
        counts = {}
        for service in run.SERVICES:
            url = self.system.env.get(run.database_url_variable(service)) or (
                f"sqlite:///{os.path.join(self.work_dir, service + '.db')}"
            )
            engine = create_engine(url)
            try:
                if inspect(engine).has_table("outbox"):
                    table = outbox_table(MetaData())
                    with engine.connect() as connection:
                        counts[service] = connection.execute(
                            select(func.count()).select_from(table).where(table.c.published_at.is_(None))
                        ).scalar_one()
            finally:
                engine.dispose()
        return counts

    def stop(self):
        try:
            super().stop()
        finally:
            self.cluster.stop()


def errors_window(times, killed_at):
    """Client errors: how many, and when the first and the last came (seconds after the kill)."""
    if not times or killed_at is None:
        return {"count": len(times), "first_after_kill": None, "last_after_kill": None, "window_seconds": 0.0}
    first, last = min(times), max(times)
    return {
        "count": len(times),
        "first_after_kill": round(first - killed_at, 1),
        "last_after_kill": round(last - killed_at, 1),
        "window_seconds": round(last - first, 1),
    }


def summary(result):
    acknowledged, errors = result["acknowledged"], result["errors"]
    lines = [
        f"cluster chaos on {result['backend']}: {result['load_seconds']} s of checkout load; kill -9 of RabbitMQ "
        f"node {result['killed'][0]} (started again)",
        f"acknowledged to clients: {acknowledged['carts']} carts, {acknowledged['lines']} lines, "
        f"{acknowledged['orders']} orders",
        f"client answers: {', '.join(f'{key}: {count}' for key, count in result['client_answers'].items())}",
        f"client errors: {errors['count']}, from {errors['first_after_kill']} s to {errors['last_after_kill']} s "
        f"after the kill (a window of {errors['window_seconds']} s)",
        f"orders: {', '.join(f'{key}: {count}' for key, count in sorted(result['order_outcomes'].items()))}; "
        f"checkouts never answered: {result['unanswered_checkouts']}",
        f"lost acknowledged writes: {len(result['lost_writes'])}; orders unsettled: "
        f"{len(result['unsettled_orders'])}; over-counted: {result['over_counted']}",
        f"outbox rows unpublished: {result['outbox_unpublished']}; parked events: {result['parked_events']}; "
        f"services restarted: {result['services_restarted'] or 'none'}",
        f"audit: {'ok' if result['audit']['ok'] else 'BREACHED'} ({result['audit']['checked']})",
        "chaos: PASSED" if result["passed"] else "chaos: FAILED",
    ]
    return "\n".join(lines + chaos.problem_lines(result))


def parse_args(argv):
    parser = argparse.ArgumentParser(prog="python -m scripts.chaos_cluster", description=__doc__.split("\n\n")[0])
    parser.add_argument("--cluster", action="store_true", help="accepted (make chaos CHAOS_ARGS=--cluster)")
    chaos.add_load_options(parser, 30, "seconds of load (default 30; longer if the node takes longer to come back)")
    parser.add_argument("--keep", action="store_true", help="keep the work dir (databases, logs, node data)")
    return parser.parse_args(argv)


def main(argv=None):
    options = parse_args(sys.argv[1:] if argv is None else argv)
    return chaos.run_and_report(
        ClusterChaos(options), options, summary, (BenchError, ClusterError), "logs, databases and node data"
    )


if __name__ == "__main__":
    sys.exit(main())
