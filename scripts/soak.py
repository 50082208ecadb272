"""`make soak`: the whole system under steady mixed load for a long while, watched for what grows.

    .venv/bin/python -m scripts.soak [--seconds 600] [--shoppers 4] [--postgres ADMIN_URL] [--out DIR] [--keep]

What it does, in order:

1. Starts its own system as the bench does (bench/system.py: a fresh RabbitMQ vhost, `make run` on a free port
   with fresh SQLite databases, or PostgreSQL ones with `--postgres`), and seeds products and shoppers.
2. Drives mixed load through the gateway: each shopper, round after round, browses (a page of products, a
   search, one product), makes a cart with one line, adds a second and reads the cart back, and every
   `--checkout-every` rounds checks out (with an `Idempotency-Key`) and reads the order. A pause of `--pause`
   seconds between rounds keeps the load light: this looks for slow growth, not for the limit.
3. After a warm-up (`--warmup`, default a fifth of the run up to a minute: pools fill, caches warm), samples
   every process of the system (the supervisor and each child) at the start, every `--sample-seconds` and at
   the end: resident memory (VmRSS, peak VmHWM) and open file descriptors (/proc/<pid>/fd); and the queues'
   depths (messages ready and unacknowledged) from the RabbitMQ management API. After the load, it waits for
   the queues to drain before the last look at them.
4. Reports, printed and written as Markdown and JSON (`--out`, default bench/results/soak-<time>.md/.json):
   each process's RSS and fds at start and end, the queues, the answers clients got and the WARNING/ERROR lines
   of the logs. Flagged, each a bug to find: a process whose RSS grew by more than `--rss-growth-mib` or whose
   fds grew by more than `--fd-growth` between the first and last sample, a client answer that is not the one
   expected, a message left in a queue, an ERROR in the logs. The exit code is 0 when nothing is flagged.

One line `SOAK {json}` carries the result for scripts and tests. Logs and databases are in a work dir, kept
with `--keep` or when something is flagged.
"""

import argparse
import datetime
import json
import os
import random
import re
import shutil
import signal
import sys
import tempfile
import threading
import time
import uuid

import requests

from bench import stats
from bench.system import COLOURS, Cartmesh, PostgresDatabases, Vhost, seed
from bench.wrk import BenchError

RESULTS_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bench", "results")
RESULT_MARK = "SOAK "
SUCCEEDING_CARD = "4242424242424242"
TIMEOUT = 10  # seconds per client request
DRAIN_DEADLINE = 60  # seconds for the queues to empty after the load
MIB = 1024 * 1024

STARTED = time.monotonic()


def say(message):
    print(f"soak: {time.monotonic() - STARTED:7.1f} s  {message}", flush=True)


# --- what is measured ---------------------------------------------------------------------------------------


def process_sample(pid, proc="/proc"):
    """{"rss_mib", "hwm_mib", "fds"} of process `pid` now, or None if it is gone."""
    try:
        with open(os.path.join(proc, str(pid), "status")) as status:
            text = status.read()
        fds = len(os.listdir(os.path.join(proc, str(pid), "fd")))
    except (FileNotFoundError, ProcessLookupError):
        return None

    def kib(field):
        match = re.search(rf"^{field}:\s+(\d+)\s+kB\s*$", text, re.MULTILINE)
        return int(match.group(1)) * 1024 / MIB if match else None

    return {"rss_mib": kib("VmRSS"), "hwm_mib": kib("VmHWM"), "fds": fds}


def queue_depths(queues):
    """{queue name: {"ready", "unacked", "consumers"}} from the management API's list of a vhost's queues."""
    return {
        queue["name"]: {
            "ready": queue.get("messages_ready", 0) or 0,
            "unacked": queue.get("messages_unacknowledged", 0) or 0,
            "consumers": queue.get("consumers", 0) or 0,
        }
        for queue in queues
    }


def messages_left(depths):
    return sum(depth["ready"] + depth["unacked"] for depth in depths.values())


def growth(samples, rss_limit_mib, fd_limit):
    """Per process, its first and last sample and what grew past the limits: [{"process", "start", "end",
    "rss_growth_mib", "fd_growth", "flagged": [reasons]}]. A process missing from a sample ended meanwhile."""
    rows = []
    first, last = samples[0]["processes"], samples[-1]["processes"]
    for name in sorted(first):
        start, end = first[name], last.get(name)
        row = {"process": name, "start": start, "end": end, "flagged": []}
        if end is None:
            row["flagged"].append("ended during the soak")
        else:
            row["rss_growth_mib"] = round(end["rss_mib"] - start["rss_mib"], 1)
            row["fd_growth"] = end["fds"] - start["fds"]
            if row["rss_growth_mib"] > rss_limit_mib:
                row["flagged"].append(f"RSS grew {row['rss_growth_mib']} MiB (limit {rss_limit_mib})")
            if row["fd_growth"] > fd_limit:
                row["flagged"].append(f"open fds grew by {row['fd_growth']} (limit {fd_limit})")
        rows.append(row)
    return rows


# --- the load -----------------------------------------------------------------------------------------------


class Answers:
    """What clients were answered, shared by the shoppers: counts per "kind status", and the unexpected ones."""

    def __init__(self):
        self.lock = threading.Lock()
        self.counts = {}
        self.unexpected = {}
        self.examples = []  # the first few unexpected answers, for the report

    def saw(self, kind, status, expected, body=""):
        key = f"{kind} {status if status is not None else 'none'}"
        with self.lock:
            self.counts[key] = self.counts.get(key, 0) + 1
            if status not in expected:
                self.unexpected[key] = self.unexpected.get(key, 0) + 1
                if len(self.examples) < 10:
                    self.examples.append(f"{key}: {body[:200]}")

    def total(self):
        return sum(self.counts.values())

    def errors(self):
        return sum(self.unexpected.values())


class Shopper(threading.Thread):
    def __init__(self, base_url, token, skus, answers, stopping, pause, checkout_every):
        super().__init__(daemon=True)
        self.base_url = base_url
        self.skus = skus
        self.answers = answers
        self.stopping = stopping
        self.pause = pause
        self.checkout_every = checkout_every
        self.http = requests.Session()
        self.http.headers["Authorization"] = f"Bearer {token}"
        self.random = random.Random()

    def call(self, kind, method, path, expected=(200,), **kwargs):
        try:
            response = self.http.request(method, self.base_url + path, timeout=TIMEOUT, **kwargs)
        except requests.RequestException as exc:
            self.answers.saw(kind, None, expected, f"{type(exc).__name__}: {exc}")
            return None
        self.answers.saw(kind, response.status_code, expected, response.text)
        return response if response.status_code in expected else None

    def run(self):
        rounds = 0
        while not self.stopping.is_set():
            rounds += 1
            self.round(checkout=rounds % self.checkout_every == 0)
            self.stopping.wait(self.pause)

    def round(self, checkout):
        first, second = self.random.sample(self.skus, 2)
        self.call("browse", "GET", "/products?limit=20")
        self.call("search", "GET", f"/products?q={self.random.choice(COLOURS)}")
        self.call("product", "GET", f"/products/{first}")
        made = self.call("create_cart", "POST", "/carts", (201,), json={"items": [{"sku": first, "quantity": 1}]})
        if made is None:
            return
        cart = made.json()["id"]
        self.call("add_item", "POST", f"/carts/{cart}/items", json={"sku": second, "quantity": 1})
        self.call("read_cart", "GET", f"/carts/{cart}")
        if checkout:
            placed = self.call(
                "checkout",
                "POST",
                f"/carts/{cart}/checkout",
                (200, 202),
                json={"payment": {"card_number": SUCCEEDING_CARD}},
                headers={"Idempotency-Key": str(uuid.uuid4())},
            )
            if placed is not None:
                self.call("read_order", "GET", f"/orders/{placed.json()['id']}")


# --- the run ------------------------------------------------------------------------------------------------


class Soak:
    def __init__(self, options):
        self.options = options
        self.work_dir = tempfile.mkdtemp(prefix="cartmesh-soak-")
        self.vhost = Vhost()
        self.databases = PostgresDatabases(options.postgres) if options.postgres else None
        self.system = None
        self.samples = []
        self.started_at = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%SZ")

    def start(self):
        self.vhost.create()
        if self.databases:
            self.databases.create()
        self.system = Cartmesh(
            self.vhost, self.work_dir, self.options.log_level, self.databases.urls if self.databases else None
        )
        say(f"starting the system in {self.work_dir}")
        self.system.start()

    def processes(self):
        return dict(self.system.services(), supervisor=self.system.supervisor_pid())

    def sample(self, label):
        taken = {"label": label, "at_s": round(time.monotonic() - STARTED, 1), "processes": {}}
        for name, pid in self.processes().items():
            measured = process_sample(pid)
            if measured is not None:
                taken["processes"][name] = measured
        taken["queues"] = queue_depths(self.vhost.queues())
        self.samples.append(taken)
        rss = sum(process["rss_mib"] for process in taken["processes"].values())
        fds = sum(process["fds"] for process in taken["processes"].values())
        say(f"sample {label}: {rss:.0f} MiB RSS and {fds} fds in all, {messages_left(taken['queues'])} in queues")
        return taken

    def run(self):
        options = self.options
        self.start()
        say("seeding products and shoppers")
        data = seed(self.system, options.shoppers)
        answers, stopping = Answers(), threading.Event()
        shoppers = [
            Shopper(self.system.base_url, token, data["skus"], answers, stopping, options.pause, options.checkout_every)
            for token in data["tokens"]
        ]
        warmup = options.warmup if options.warmup is not None else min(60.0, options.seconds / 5)
        say(f"load: {len(shoppers)} shoppers for {options.seconds} s (the first {warmup:g} s a warm-up)")
        began = time.monotonic()
        for shopper in shoppers:
            shopper.start()
        try:
            self.sleep_until(began + warmup)
            self.sample("start")
            every = options.sample_seconds or max(5.0, (options.seconds - warmup) / 10)
            next_sample = time.monotonic() + every
            while next_sample < began + options.seconds:
                self.sleep_until(next_sample)
                self.sample(f"{time.monotonic() - began:.0f} s")
                next_sample += every
            self.sleep_until(began + options.seconds)
            self.sample("end")
        finally:
            stopping.set()
            for shopper in shoppers:
                shopper.join(TIMEOUT + 5)
        load_seconds = time.monotonic() - began
        say("load stopped; waiting for the queues to drain")
        drained = self.drain()
        return self.result(answers, load_seconds, drained)

    def drain(self):
        """The queues' depths once they are empty, or at the deadline. The management API's numbers lag a few
        seconds: empty twice in a row, a few seconds apart, counts as drained."""
        deadline = time.monotonic() + DRAIN_DEADLINE
        empty_since = None
        while True:
            depths = queue_depths(self.vhost.queues())
            if messages_left(depths) == 0:
                empty_since = empty_since or time.monotonic()
                if time.monotonic() - empty_since >= 5:
                    return depths
            else:
                empty_since = None
            if time.monotonic() > deadline:
                return depths
            time.sleep(1)

    @staticmethod
    def sleep_until(moment):
        time.sleep(max(0.0, moment - time.monotonic()))

    def result(self, answers, load_seconds, drained):
        options = self.options
        processes = growth(self.samples, options.rss_growth_mib, options.fd_growth)
        problems = stats.log_problems(self.system.processes.output(), top=20)
        log_errors = sum(count for count, line in problems if re.search(r" (ERROR|CRITICAL) ", line))
        queues_left = {name: depth for name, depth in drained.items() if depth["ready"] + depth["unacked"]}
        flagged = [f"{row['process']}: {reason}" for row in processes for reason in row["flagged"]]
        if answers.errors():
            flagged.append(f"{answers.errors()} unexpected client answers")
        if queues_left:
            flagged.append(f"messages left in {', '.join(sorted(queues_left))}")
        if log_errors:
            flagged.append(f"{log_errors} ERROR lines in the logs")
        return {
            "started_at": self.started_at,
            "backend": "postgresql" if options.postgres else "sqlite",
            "settings": {
                "seconds": options.seconds,
                "shoppers": options.shoppers,
                "pause": options.pause,
                "checkout_every": options.checkout_every,
                "rss_growth_mib": options.rss_growth_mib,
                "fd_growth": options.fd_growth,
            },
            "load_seconds": round(load_seconds, 1),
            "requests": answers.total(),
            "requests_per_s": round(answers.total() / load_seconds, 1),
            "client_answers": dict(sorted(answers.counts.items())),
            "errors": answers.errors(),
            "unexpected_answers": dict(sorted(answers.unexpected.items())),
            "unexpected_examples": answers.examples,
            "processes": processes,
            "samples": self.samples,
            "queues_after_drain": queues_left,
            "log_problems": [{"count": count, "line": line} for count, line in problems],
            "log_errors": log_errors,
            "flagged": flagged,
            "passed": not flagged,
        }

    def stop(self):
        if self.system is not None:
            self.system.stop()
        self.vhost.delete()
        if self.databases:
            self.databases.drop()


# --- the report ---------------------------------------------------------------------------------------------


def _value(sample, key, digits=1):
    if sample is None or sample.get(key) is None:
        return "–"
    return f"{sample[key]:.{digits}f}" if isinstance(sample[key], float) else str(sample[key])


def markdown(result):
    settings = result["settings"]
    lines = [
        f"# Cartmesh soak, {result['started_at']}",
        "",
        f"{result['backend']}; {result['load_seconds']} s of mixed load from {settings['shoppers']} shoppers "
        f"(browse, search, product, cart create/add/read, checkout every {settings['checkout_every']} rounds, "
        f"{settings['pause']} s between rounds): {result['requests']} requests, {result['requests_per_s']} req/s.",
        "",
        "**" + ("Nothing flagged." if result["passed"] else "Flagged: " + "; ".join(result["flagged"]) + ".") + "**",
        "",
        "## Processes (first sample after the warm-up → last)",
        "",
        "| process | RSS MiB | → | growth | peak (VmHWM) | fds | → | growth | |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in result["processes"]:
        start, end = row["start"], row["end"]
        lines.append(
            f"| {row['process']} | {_value(start, 'rss_mib')} | {_value(end, 'rss_mib')} | "
            f"{row.get('rss_growth_mib', '–')} | {_value(end, 'hwm_mib')} | {_value(start, 'fds')} | "
            f"{_value(end, 'fds')} | {row.get('fd_growth', '–')} | {'; '.join(row['flagged']) or 'ok'} |"
        )
    names = sorted(result["samples"][0]["processes"])
    lines += [
        "",
        "## RSS MiB / open fds at each sample",
        "",
        "| sample | " + " | ".join(names) + " | in queues |",
        "|---" * (len(names) + 2) + "|",
    ]
    for sample in result["samples"]:
        cells = [
            f"{_value(sample['processes'].get(name), 'rss_mib')} / {_value(sample['processes'].get(name), 'fds')}"
            for name in names
        ]
        lines.append(f"| {sample['label']} | " + " | ".join(cells) + f" | {messages_left(sample['queues'])} |")
    lines += ["", "## Client answers", ""]
    lines += [f"- {key}: {count}" for key, count in result["client_answers"].items()]
    if result["unexpected_examples"]:
        lines += ["", "Unexpected answers (first few):", ""] + [f"- `{x}`" for x in result["unexpected_examples"]]
    lines += ["", "## Queues after the load", ""]
    if result["queues_after_drain"]:
        lines += [f"- {name}: {depth}" for name, depth in sorted(result["queues_after_drain"].items())]
    else:
        lines.append("Every queue drained.")
    lines += ["", "## WARNING and ERROR lines in the logs (most frequent first)", ""]
    lines += [f"- {problem['count']} × `{problem['line']}`" for problem in result["log_problems"]] or ["None."]
    return "\n".join(lines) + "\n"


def write_report(result, out_dir):
    os.makedirs(out_dir, exist_ok=True)
    base = os.path.join(out_dir, f"soak-{result['started_at']}")
    with open(base + ".md", "w") as report:
        report.write(markdown(result))
    with open(base + ".json", "w") as raw:
        json.dump(result, raw, indent=1, sort_keys=True)
    return base + ".md"


# --- the command --------------------------------------------------------------------------------------------


def parse_args(argv):
    parser = argparse.ArgumentParser(prog="python -m scripts.soak", description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=600, help="seconds of load (default 600)")
    parser.add_argument("--shoppers", type=int, default=4, help="concurrent shoppers (default 4)")
    parser.add_argument("--pause", type=float, default=0.1, help="seconds between a shopper's rounds (default 0.1)")
    parser.add_argument("--checkout-every", type=int, default=2, help="check out every N rounds (default 2)")
    parser.add_argument("--warmup", type=float, help="seconds of load before the first sample (default: a fifth, ≤60)")
    parser.add_argument("--sample-seconds", type=float, help="seconds between samples (default: ten samples)")
    parser.add_argument("--rss-growth-mib", type=float, default=25, help="RSS growth flagged (default 25 MiB)")
    parser.add_argument("--fd-growth", type=int, default=5, help="open-fd growth flagged (default 5)")
    parser.add_argument(
        "--postgres",
        default=os.environ.get("SOAK_POSTGRES_URL"),
        metavar="ADMIN_URL",
        help="run on fresh PostgreSQL databases made through this admin URL (default: SQLite)",
    )
    parser.add_argument("--out", default=RESULTS_DIR, help="where the report goes (default bench/results)")
    parser.add_argument("--log-level", default="WARNING", help="LOG_LEVEL of every service (default WARNING)")
    parser.add_argument("--keep", action="store_true", help="keep the work dir (databases, logs)")
    return parser.parse_args(argv)


def _interrupt(_signum, _frame):
    # SIGTERM (a CI timeout, the test's teardown) ends the run through main's `finally`, which stops everything.
    raise KeyboardInterrupt


def main(argv=None):
    options = parse_args(sys.argv[1:] if argv is None else argv)
    signal.signal(signal.SIGTERM, _interrupt)
    soak = Soak(options)
    result = None
    try:
        result = soak.run()
    except KeyboardInterrupt:
        say("interrupted: stopping everything")
        return 130
    except BenchError as exc:
        say(f"failed: {exc}")
        return 1
    finally:
        soak.stop()
        if result is not None and result["passed"] and not options.keep:
            shutil.rmtree(soak.work_dir, ignore_errors=True)
        else:
            say(f"logs and databases kept in {soak.work_dir}")
    path = write_report(result, options.out)
    print(markdown(result), flush=True)
    say(f"report: {path}")
    print(RESULT_MARK + json.dumps({key: value for key, value in result.items() if key != "samples"}), flush=True)
    return 0 if result["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
