"""`make chaos`: kill -9 services under steady checkout load, then prove that nothing a client was told is lost.

    .venv/bin/python -m scripts.chaos [--seconds 24] [--shoppers 6] [--postgres ADMIN_URL] [--keep]

What it does, in order:

1. Starts its own system as the bench does (bench/system.py: a fresh RabbitMQ vhost, `make run` on a free port
   with fresh SQLite databases, or PostgreSQL ones with `--postgres`), with two carts instances and
   `CARTMESH_RESTART=1`: the supervisor starts a process that died again, as an orchestrator would.
2. Drives steady load through the gateway: each shopper creates a cart with one line (`201`), adds a second
   line (`200`) and checks out (`202`). The add and the checkout carry an `Idempotency-Key`: one that gets no
   answer, a 5xx or a 429 is sent again with the same key (that is what the key is for) until it is answered or
   the load ends. Every `2xx` is written down: those are the writes acknowledged to a client.
3. A quarter of the way in, `kill -9` the second carts instance; half way in, `kill -9` the orders service. Both
   are started again by the supervisor; the load goes on at least until orders answers again, and a few
   seconds more.
4. After the load: waits until no order is left in its saga, then checks that the audit passes (`orders.audit`,
   as `make audit`), that every acknowledged cart holds exactly the lines it was told about (fewer is a lost
   write, more is an over-counted line), and that every acknowledged order exists and has settled.

It prints a summary and one line `CHAOS {json}`; the exit code is 0 when every check passed, 1 when one failed
(or the run itself failed). Errors seen by clients during the kills are counted, not judged: a request in
flight on a killed process may fail. A write a killed instance had committed but not answered goes back to the
queue and reaches the other instance, which finds its call id recorded (services.common.calls) and answers the
recorded answer without applying it again: a line holding more than the client was told ("over-counted") fails
the run.
Logs and databases are in a work dir, kept with `--keep` or when a check fails.
"""

import argparse
import contextlib
import json
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
import uuid

import requests

from bench.system import Cartmesh, PostgresDatabases, Vhost, poll, seed, wait_until
from bench.wrk import BenchError

SUCCEEDING_CARD = "4242424242424242"
SETTLE_DEADLINE = 90  # seconds for every order to leave its saga (ORDER_TIMEOUT_SECONDS is 30)
RESTART_DEADLINE = 60  # seconds for a killed process to be started again and consume
AFTER_RESTART = 4  # seconds of load after orders is back, so the restarted instance does work
TIMEOUT = 10  # seconds per client request
RESULT_MARK = "CHAOS "


STARTED = time.monotonic()


def say(message):
    print(f"chaos: {time.monotonic() - STARTED:6.1f} s  {message}", flush=True)


class Ledger:
    """What clients were told (the acknowledged writes) and what they saw, shared by the shoppers."""

    def __init__(self):
        self.lock = threading.Lock()
        self.carts = {}  # cart id → {"token", "lines": {sku: quantity acknowledged}}
        self.orders = {}  # order id → cart id
        self.statuses = {}  # "kind status" → count; status "none" for no answer
        self.unanswered_checkouts = 0  # checkouts given up when the load ended

    def saw(self, kind, status):
        with self.lock:
            key = f"{kind} {status if status is not None else 'none'}"
            self.statuses[key] = self.statuses.get(key, 0) + 1


class Shopper(threading.Thread):
    def __init__(self, base_url, token, skus, number, ledger, stopping):
        super().__init__(name=f"shopper-{number}", daemon=True)
        self.base_url = base_url
        self.token = token
        self.skus = skus
        self.number = number
        self.ledger = ledger
        self.stopping = stopping
        self.http = requests.Session()
        self.http.headers["Authorization"] = f"Bearer {token}"

    def call(self, kind, method, path, **kwargs):
        try:
            response = self.http.request(method, self.base_url + path, timeout=TIMEOUT, **kwargs)
        except requests.RequestException:
            self.ledger.saw(kind, None)
            return None
        self.ledger.saw(kind, response.status_code)
        return response

    def run(self):
        turn = 0
        while not self.stopping.is_set():
            first, second = (self.skus[(self.number + turn + offset) % len(self.skus)] for offset in (0, 1))
            turn += 1
            made = self.call("create_cart", "POST", "/carts", json={"items": [{"sku": first, "quantity": 1}]})
            if made is None or made.status_code != 201:
                self.stopping.wait(0.2)  # an error answers fast: do not spin on it
                continue
            cart_id = made.json()["id"]
            with self.ledger.lock:
                self.ledger.carts[cart_id] = {"token": self.token, "lines": {first: 1}}
            added = self.until_answered(
                "add_item", "POST", f"/carts/{cart_id}/items", json={"sku": second, "quantity": 1}
            )
            if added is None or added.status_code != 200:
                continue  # not acknowledged
            with self.ledger.lock:
                self.ledger.carts[cart_id]["lines"][second] = 1
            self.checkout(cart_id)

    def until_answered(self, kind, method, path, **kwargs):
        """Send the request with a new `Idempotency-Key`, and again with the same key after no answer, a 5xx or a
        429, until it is answered otherwise (the answer) or the load ends (None)."""
        headers = {"Idempotency-Key": str(uuid.uuid4())}
        while True:
            response = self.call(kind, method, path, headers=headers, **kwargs)
            if response is not None and response.status_code < 500 and response.status_code != 429:
                return response
            if self.stopping.wait(0.5):
                return None

    def checkout(self, cart_id):
        placed = self.until_answered(
            "checkout", "POST", f"/carts/{cart_id}/checkout", json={"payment": {"card_number": SUCCEEDING_CARD}}
        )
        if placed is None:
            with self.ledger.lock:
                self.ledger.unanswered_checkouts += 1
        elif placed.status_code in (200, 202):
            with self.ledger.lock:
                self.ledger.orders[placed.json()["id"]] = cart_id
        # Any other answer is a refusal for good (e.g. the cart was checked out by a checkout we never heard of).


class Chaos:
    def __init__(self, options):
        self.options = options
        self.work_dir = tempfile.mkdtemp(prefix="cartmesh-chaos-")
        self.vhost = Vhost()
        self.databases = PostgresDatabases(options.postgres) if options.postgres else None
        self.system = None

    def start(self):
        self.vhost.create()
        if self.databases:
            self.databases.create()
        self.system = Cartmesh(
            self.vhost, self.work_dir, self.options.log_level, self.databases.urls if self.databases else None
        )
        self.system.env["CARTMESH_RESTART"] = "1"
        say(f"starting the system (two carts instances) in {self.work_dir}")
        self.system.start("carts=2")

    def consumers(self, queue_name):
        """Consumers on `queue_name` now (asked over AMQP: the management API's numbers lag by seconds)."""
        from kombu import Connection

        with Connection(self.vhost.amqp_uri, connect_timeout=5) as connection:
            _, _, consumers = connection.default_channel.queue_declare(queue_name, passive=True)
            return consumers

    def kill(self, name):
        pid = self.system.services()[name]
        os.kill(pid, signal.SIGKILL)
        say(f"kill -9 {name} (pid {pid})")
        return pid

    def wait_restarted(self, name, old_pid, queue_name, consumers):
        """Until the supervisor has started `name` again and `queue_name` has `consumers` consumers."""
        wait_until(
            lambda: self.system.services().get(name) not in (None, old_pid),
            RESTART_DEADLINE,
            f"{name} is started again",
            self.system.processes,
        )
        wait_until(
            lambda: self.consumers(queue_name) >= consumers,
            RESTART_DEADLINE,
            f"{name} consumes again",
            self.system.processes,
        )
        say(f"{name} is back (pid {self.system.services()[name]})")

    @contextlib.contextmanager
    def load(self, ledger):
        """Seed products and shoppers, and keep the shoppers' load running while the body runs (it gets the moment
        the load began); the shoppers are stopped and joined however the body ends."""
        say("seeding products and shoppers")
        data = seed(self.system, self.options.shoppers)
        stopping = threading.Event()
        shoppers = [
            Shopper(self.system.base_url, token, data["skus"], number, ledger, stopping)
            for number, token in enumerate(data["tokens"])
        ]
        say(f"load: {len(shoppers)} shoppers for {self.options.seconds} s")
        began = time.monotonic()
        for shopper in shoppers:
            shopper.start()
        try:
            yield began
        finally:
            stopping.set()
            for shopper in shoppers:
                shopper.join(TIMEOUT + 5)

    def run(self):
        options = self.options
        self.start()
        ledger, kills = Ledger(), {}
        with self.load(ledger) as began:
            self.sleep_until(began + options.seconds * 0.25)
            kills["carts-2"] = self.kill("carts-2")
            self.sleep_until(began + options.seconds * 0.5)
            kills["orders"] = self.kill("orders")
            self.wait_restarted("orders", kills["orders"], "rpc-orders", 1)
            self.wait_restarted("carts-2", kills["carts-2"], "rpc-carts", 2)
            self.sleep_until(max(began + options.seconds, time.monotonic() + AFTER_RESTART))
        load_seconds = time.monotonic() - began
        say("load stopped; waiting for every order to settle")
        return self.check(ledger, kills, load_seconds)

    @staticmethod
    def sleep_until(moment):
        time.sleep(max(0.0, moment - time.monotonic()))

    def audit(self):
        from nameko.standalone.rpc import ClusterRpcProxy

        with ClusterRpcProxy({"AMQP_URI": self.vhost.amqp_uri}, timeout=60) as cluster:
            return cluster.orders.audit()

    def check(self, ledger, kills, load_seconds):
        report = poll(self.audit, lambda audit: not audit["checked"]["in_saga"], SETTLE_DEADLINE)
        lost, over_counted, missing_orders, unsettled, outcomes = [], [], [], [], {}
        for cart_id, cart in ledger.carts.items():
            answer = requests.get(
                f"{self.system.base_url}/carts/{cart_id}",
                timeout=TIMEOUT,
                headers={"Authorization": f"Bearer {cart['token']}"},
            )
            if answer.status_code != 200:
                lost.append(f"cart {cart_id}: GET answered {answer.status_code}")
                continue
            present = {line["sku"]: line["quantity"] for line in answer.json()["items"]}
            for sku, quantity in cart["lines"].items():
                if present.get(sku, 0) < quantity:
                    lost.append(f"cart {cart_id}: {sku} ×{quantity} acknowledged, {present.get(sku, 0)} present")
                elif present[sku] > quantity:
                    over_counted.append(f"cart {cart_id}: {sku} ×{quantity} acknowledged, {present[sku]} present")
        for order_id, cart_id in ledger.orders.items():
            token = ledger.carts[cart_id]["token"]
            answer = requests.get(
                f"{self.system.base_url}/orders/{order_id}",
                timeout=TIMEOUT,
                headers={"Authorization": f"Bearer {token}"},
            )
            if answer.status_code != 200:
                missing_orders.append(f"order {order_id}: GET answered {answer.status_code}")
                continue
            order = answer.json()
            outcome = order["status"] if order["status"] != "failed" else f"failed:{order.get('failure_reason')}"
            outcomes[outcome] = outcomes.get(outcome, 0) + 1
            if order["status"] == "pending":
                unsettled.append(order_id)
        result = {
            "backend": "postgresql" if self.options.postgres else "sqlite",
            "load_seconds": round(load_seconds, 1),
            "killed": sorted(kills),
            "acknowledged": {
                "carts": len(ledger.carts),
                "lines": sum(len(cart["lines"]) for cart in ledger.carts.values()),
                "orders": len(ledger.orders),
            },
            "client_answers": dict(sorted(ledger.statuses.items())),
            "unanswered_checkouts": ledger.unanswered_checkouts,
            "order_outcomes": outcomes,
            "lost_writes": lost + missing_orders,
            "unsettled_orders": unsettled,
            "over_counted": len(over_counted),
            "over_counted_lines": over_counted,
            "audit": {"ok": report["ok"], "breaches": report["breaches"], "checked": report["checked"]},
        }
        result["passed"] = bool(
            report["ok"]
            and not report["checked"]["in_saga"]
            and not lost
            and not over_counted
            and not missing_orders
            and not unsettled
            and ledger.orders
            and kills.keys() == {"carts-2", "orders"}
        )
        return result

    def stop(self):
        if self.system is not None:
            self.system.stop()
        self.vhost.delete()
        if self.databases:
            self.databases.drop()


def summary(result):
    acknowledged = result["acknowledged"]
    lines = [
        f"chaos on {result['backend']}: {result['load_seconds']} s of checkout load; kill -9 of "
        f"{' and '.join(result['killed'])} (both started again)",
        f"acknowledged to clients: {acknowledged['carts']} carts, {acknowledged['lines']} lines, "
        f"{acknowledged['orders']} orders",
        f"client answers: {', '.join(f'{key}: {count}' for key, count in result['client_answers'].items())}",
        f"orders: {', '.join(f'{key}: {count}' for key, count in sorted(result['order_outcomes'].items()))}; "
        f"checkouts never answered: {result['unanswered_checkouts']}",
        f"lost acknowledged writes: {len(result['lost_writes'])}; orders unsettled: "
        f"{len(result['unsettled_orders'])}; over-counted: {result['over_counted']}",
        f"audit: {'ok' if result['audit']['ok'] else 'BREACHED'} ({result['audit']['checked']})",
        "chaos: PASSED" if result["passed"] else "chaos: FAILED",
    ]
    return "\n".join(lines + problem_lines(result))


def problem_lines(result):
    """The first writes lost, lines over-counted and audit breaches of a run's result, a line each."""
    lines = [f"  lost: {problem}" for problem in result["lost_writes"][:20]]
    lines += [f"  over-counted: {problem}" for problem in result["over_counted_lines"][:20]]
    lines += [f"  breach: {breach}" for breach in result["audit"]["breaches"][:20]]
    return lines


def add_load_options(parser, seconds, seconds_help):
    """The options every chaos run takes: its load, its databases, its logs."""
    parser.add_argument("--seconds", type=int, default=int(os.environ.get("CHAOS_SECONDS", seconds)), help=seconds_help)
    parser.add_argument("--shoppers", type=int, default=6, help="concurrent shoppers (default 6)")
    parser.add_argument(
        "--postgres",
        default=os.environ.get("CHAOS_POSTGRES_URL"),
        metavar="ADMIN_URL",
        help="run on fresh PostgreSQL databases made through this admin URL (default: SQLite)",
    )
    parser.add_argument("--log-level", default="INFO", help="LOG_LEVEL of every service (default INFO)")


def parse_args(argv):
    parser = argparse.ArgumentParser(prog="python -m scripts.chaos", description=__doc__.split("\n\n")[0])
    add_load_options(parser, 24, "seconds of load (default 24; longer if orders takes longer to come back)")
    parser.add_argument("--keep", action="store_true", help="keep the work dir (databases, logs)")
    return parser.parse_args(argv)


def _interrupt(_signum, _frame):
    # SIGTERM (a CI timeout, the test's teardown) ends the run through main's `finally`, which stops everything.
    raise KeyboardInterrupt


def run_and_report(chaos, options, summary, failures=(BenchError,), kept="logs and databases"):
    """Run `chaos` (a Chaos), stop it whatever happens, print its summary and result line; the exit status."""
    signal.signal(signal.SIGTERM, _interrupt)
    result = None
    try:
        result = chaos.run()
    except KeyboardInterrupt:
        say("interrupted: stopping everything")
        return 130
    except failures as exc:
        say(f"failed: {exc}")
        return 1
    finally:
        chaos.stop()
        if result is not None and result["passed"] and not options.keep:
            shutil.rmtree(chaos.work_dir, ignore_errors=True)
        else:
            say(f"{kept} kept in {chaos.work_dir}")
    print(summary(result), flush=True)
    print(RESULT_MARK + json.dumps(result, sort_keys=True), flush=True)
    return 0 if result["passed"] else 1


def main(argv=None):
    options = parse_args(sys.argv[1:] if argv is None else argv)
    return run_and_report(Chaos(options), options, summary)


if __name__ == "__main__":
    sys.exit(main())
