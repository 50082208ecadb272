"""`make bench` (`python -m bench`): starts Cartmesh and the minimal Nameko baseline on a fresh vhost, drives
them with wrk and the checkout driver, and writes the report under bench/results/ (docs/PERFORMANCE.md).

Order: start the system and seed it through the API → warm every scenario up once → baseline → browse
(product, search) → cart (add, get, mix) → storefront pages (catalog, cart) → checkout → baseline again → peak
RSS → restart with two carts instances → cart mix again → peak RSS → stop everything (also on Ctrl-C, SIGTERM or
an error). Each measured
window is followed by a pause (`SETTLE_SECONDS`): RabbitMQ publishes its queue counters every 5 s, and the
messages-per-instance numbers need the final ones.
"""

import argparse
import datetime
import json
import os
import platform
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid

from bench import hop, profile, report, stats, system
from bench.checkout_driver import RESULT_MARK as DRIVER_MARK
from bench.wrk import BenchError, ensure_wrk, run_wrk, wrk_version

SETTLE_SECONDS = 5.5  # RabbitMQ's collect_statistics_interval (5 s) and a margin
WARMUP_SECONDS = 2
SUCCEEDING_CARD = "4242424242424242"
# Requests per wrk request list: long enough to spread over every cart, line and sku.
LIST_LENGTH = 960


def say(message):
    print(f"bench | {message}", flush=True)


# --- what each scenario sends ---------------------------------------------------------------------------------


def bearer(token):
    return {"Authorization": f"Bearer {token}"}


def baseline_requests():
    return [{"method": "GET", "path": f"/items/ITEM-{number:03d}"} for number in range(100)]


def ceiling_requests():
    return [{"method": "GET", "path": f"/cached/ITEM-{number:03d}"} for number in range(100)]


def product_requests(skus):
    return [{"method": "GET", "path": f"/products/{sku}"} for sku in skus]


def search_requests():
    return [{"method": "GET", "path": f"/products?q={colour}"} for colour in system.COLOURS]


def add_item(cart, turn):
    """POST one unit of one of the cart's own skus (so a cart keeps its few lines and no line nears 999)."""
    cart_id, token, skus = cart
    return {
        "method": "POST",
        "path": f"/carts/{cart_id}/items",
        "headers": bearer(token),
        "body": {"sku": skus[turn % len(skus)], "quantity": 1},
    }


def get_cart(cart):
    cart_id, token, _ = cart
    return {"method": "GET", "path": f"/carts/{cart_id}", "headers": bearer(token)}


def cart_add_requests(carts):
    return [add_item(carts[number % len(carts)], number // len(carts)) for number in range(LIST_LENGTH)]


def cart_get_requests(carts):
    return [get_cart(cart) for cart in carts]


def cart_mix_requests(carts):
    """Half adds, half reads; each cart alternates between the two from one round to the next."""
    requests = []
    for number in range(LIST_LENGTH):
        cart, turn = carts[number % len(carts)], number // len(carts)
        requests.append(add_item(cart, turn // 2) if turn % 2 else get_cart(cart))
    return requests


def catalog_page_requests():
    """The storefront's catalog page (HTML), anonymous: the first page and each colour's search."""
    return [{"method": "GET", "path": "/"}] + [{"method": "GET", "path": f"/?q={colour}"} for colour in system.COLOURS]


def cart_page_requests(carts):
    """The storefront's cart page (HTML) of each cart's owner: the session cookie holds the API's token."""
    return [
        {"method": "GET", "path": "/shop/cart", "headers": {"Cookie": f"cartmesh_session={token}"}}
        for _, token, _ in carts
    ]


# --- the bench ---------------------------------------------------------------------------------------------


class Interrupted(Exception):
    """SIGTERM, turned into an exception so that everything started gets stopped on the way out."""


def _interrupt(signum, _frame):
    raise Interrupted(signal.Signals(signum).name)


class Bench:
    """One run of the bench; `run()` returns the results dict that bench/report.py renders."""

    def __init__(self, options):
        self.options = options
        self.work_dir = tempfile.mkdtemp(prefix="cartmesh-bench-")
        self.vhost = system.Vhost()
        self.postgres = None
        self.system = None
        self.baseline = None
        self.wrk = None
        self.cores = os.cpu_count()
        self.broker_pids = stats.pids_named("beam.smp")
        self.results = {
            "started_at": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "machine": {"cpus": self.cores, "python": platform.python_version(), "kernel": platform.release()},
            "settings": {
                "seconds": options.seconds,
                "connections": options.connections,
                "wrk_threads": 1,
                "checkout_users": options.checkout_users,
                "checkout_seconds": options.checkout_seconds,
                "poll_seconds": options.poll_ms / 1000,
                "log_level": options.log_level,
                "database": "PostgreSQL" if options.postgres else "SQLite",
            },
            "baselines": [],
            "ceilings": [],
            "rpc_hop": None,
            "scenarios": [],
            "rss_mib": {},
            "warnings": [],
        }

    # -- lifecycle --

    def run(self):
        self.wrk = ensure_wrk()
        self.results["machine"]["wrk"] = wrk_version(self.wrk)
        self.vhost.create()
        if self.options.postgres:
            self.postgres = system.PostgresDatabases(self.options.postgres)
            self.postgres.create()
        self.system = system.Cartmesh(
            self.vhost,
            self.work_dir,
            self.options.log_level,
            database_urls=self.postgres.urls if self.postgres else None,
        )
        say(
            f"starting Cartmesh (scripts.run) on {self.system.base_url}, vhost {self.vhost.name}, "
            f"work dir {self.work_dir}"
        )
        self.system.start()
        say("seeding products, users and carts through the API")
        data = system.seed(self.system, self.options.checkout_users)
        skus, tokens = data["skus"], data["tokens"]
        carts = {
            kind: system.make_carts(self.system.base_url, tokens, self.options.carts, skus, 3)
            for kind in ("add", "get", "mix")
        }
        checkout_ready = self.checkout_answers(tokens[0], skus[0])
        if self.options.hop_calls:
            say("measuring the CPU of one RPC round trip: Cartmesh's Rpc and rpc against stock nameko's")
            self.results["rpc_hop"] = hop.measure(
                self.vhost.amqp_uri,
                self.work_dir,
                self.broker_pids,
                calls=self.options.hop_calls,
                say=lambda line: say(line),
            )

        self.baseline = system.Baseline(self.vhost, self.work_dir).start()
        plan = {
            "product": ("browse: GET /products/{sku}", product_requests(skus)),
            "search": ("browse: GET /products?q=", search_requests()),
            "cart_add": ("cart: POST /carts/{id}/items", cart_add_requests(carts["add"])),
            "cart_get": ("cart: GET /carts/{id}", cart_get_requests(carts["get"])),
            "cart_mix": ("cart mix, 1 carts instance", cart_mix_requests(carts["mix"])),
            "catalog_page": ("page: GET / (catalog, HTML)", catalog_page_requests()),
            "cart_page": ("page: GET /shop/cart (HTML)", cart_page_requests(carts["get"])),
        }
        plan = {name: scenario for name, scenario in plan.items() if name in self.options.only}
        checkout_wanted = "checkout" in self.options.only
        say("warming every scenario up")
        self.load(self.baseline.base_url, baseline_requests(), WARMUP_SECONDS)
        for _, requests in plan.values():
            self.load(self.system.base_url, requests, WARMUP_SECONDS)
        if checkout_ready and checkout_wanted:
            self.checkout(tokens, skus, WARMUP_SECONDS + 1)
        time.sleep(SETTLE_SECONDS)

        self.measure_baseline("before")
        for name, (title, requests) in plan.items():
            self.add(
                self.measure(
                    name,
                    title,
                    self.system.services(),
                    lambda requests=requests: self.load(self.system.base_url, requests, self.options.seconds),
                )
            )
        if checkout_wanted and checkout_ready:
            self.add(
                self.measure(
                    "checkout",
                    "checkout end to end (confirmed orders/s)",
                    self.system.services(),
                    lambda: self.checkout(tokens, skus, self.options.checkout_seconds),
                )
            )
        elif checkout_wanted:
            self.add(
                {
                    "name": "checkout",
                    "title": "checkout end to end (confirmed orders/s)",
                    "skipped": checkout_ready.reason,
                }
            )
        # Again at the end: the machine may have got busier or quieter meanwhile; ratios use the mean.
        self.measure_baseline("after")
        self.results["rss_mib"]["main run"] = self.peak_rss()
        self.baseline.stop()
        self.baseline = None
        self.system.stop()
        if "scaling" in self.options.only:
            self.scaling_run(carts["mix"])
        report.add_ratios(self.results)
        self.results["targets"] = report.evaluate_targets(self.results)
        return self.results

    def scaling_run(self, carts):
        """The cart mix again, on the same data, with two carts instances sharing the queue."""
        say("restarting Cartmesh with two carts instances (CARTMESH_INSTANCES=carts=2)")
        self.system.start("carts=2")
        title, requests = "cart mix, 2 carts instances", cart_mix_requests(carts)
        self.load(self.system.base_url, requests, WARMUP_SECONDS)
        time.sleep(SETTLE_SECONDS)
        scaled = self.measure(
            "cart_mix_2",
            title,
            self.system.services(),
            lambda: self.load(self.system.base_url, requests, self.options.seconds),
        )
        single = next((s for s in self.results["scenarios"] if s["name"] == "cart_mix"), None)
        if single and single["requests_per_s"]:
            scaled["note"] = f"{scaled['requests_per_s'] / single['requests_per_s']:.2f}× the 1-instance run"
        self.add(scaled)
        self.results["rss_mib"]["scaling run (carts=2)"] = self.peak_rss()

    def measure_baseline(self, when):
        self.results["baselines"].append(
            self.measure(
                f"baseline_{when}",
                f"baseline ({when}): GET /items/{{key}}, 1 RPC, no DB, no auth",
                self.baseline.pids(),
                lambda: self.load(self.baseline.base_url, baseline_requests(), self.options.seconds),
            )
        )
        self.results["ceilings"].append(
            self.measure(
                f"ceiling_{when}",
                f"ceiling ({when}): GET /cached/{{key}}, the same @http answering from its dict, no RPC",
                self.baseline.pids(),
                lambda: self.load(self.baseline.base_url, ceiling_requests(), self.options.seconds),
            )
        )

    def stop(self):
        """Stops whatever is still running and removes the vhost (and PostgreSQL databases)."""
        for part in (self.baseline, self.system):
            if part is not None:
                try:
                    part.stop()
                except Exception as exc:  # keep stopping the rest
                    say(f"could not stop cleanly: {exc!r}")
        try:
            self.vhost.delete()
        except BenchError as exc:
            say(f"could not delete vhost {self.vhost.name}: {exc}")
        if self.postgres:
            self.postgres.drop()

    # -- pieces --

    def add(self, scenario):
        self.results["scenarios"].append(scenario)
        if not scenario.get("skipped"):
            say(
                f"{scenario['title']}: {scenario['requests_per_s']:.1f}/s, p99 {scenario['p99_ms'] or 0:.0f} ms, "
                f"{scenario['errors']} errors"
            )

    def load(self, base_url, requests, seconds):
        return run_wrk(self.wrk, base_url, requests, seconds, self.options.connections, self.work_dir)

    def checkout_answers(self, token, sku):
        """Whether POST /carts/{id}/checkout and GET /orders/{id} exist yet (truthy), else why not."""
        api = system.Api(self.system.base_url, token)
        cart = api.call("POST", "/carts", 201, json={"items": [{"sku": sku, "quantity": 1}]})
        response = api.http.post(
            f"{self.system.base_url}/carts/{cart['id']}/checkout",
            timeout=system.TIMEOUT,
            json={"payment": {"card_number": SUCCEEDING_CARD}},
            headers={"Idempotency-Key": str(uuid.uuid4())},
        )
        if response.status_code not in (200, 202):
            return Unavailable(f"POST /carts/{{id}}/checkout answered {response.status_code}")
        order = api.http.get(f"{self.system.base_url}/orders/{response.json()['id']}", timeout=system.TIMEOUT)
        if order.status_code != 200:
            return Unavailable(f"GET /orders/{{id}} answered {order.status_code}")
        return True

    def checkout(self, tokens, skus, seconds):
        """One run of bench/checkout_driver.py; its numbers in the shape of parse_wrk_output's."""
        plan_path = os.path.join(self.work_dir, "checkout-plan.json")
        with open(plan_path, "w") as plan_file:
            json.dump(
                {
                    "base_url": self.system.base_url,
                    "amqp_uri": self.vhost.amqp_uri,
                    "tokens": tokens,
                    "skus": skus,
                    "card_number": SUCCEEDING_CARD,
                    "seconds": seconds,
                    "poll_seconds": self.options.poll_ms / 1000,
                    "settle_seconds": 15,
                },
                plan_file,
            )
        done = subprocess.run(
            [sys.executable, "-m", "bench.checkout_driver", plan_path],
            cwd=system.ROOT,
            capture_output=True,
            text=True,
            timeout=seconds + 60,
        )
        lines = [line for line in done.stdout.splitlines() if line.startswith(DRIVER_MARK)]
        if done.returncode != 0 or not lines:
            raise BenchError(f"the checkout driver failed (exit code {done.returncode}): {done.stderr[-2000:]}")
        result = json.loads(lines[-1][len(DRIVER_MARK) :])
        numbers = {key: result[key] for key in ("p50_ms", "p95_ms", "p99_ms", "non_2xx", "socket_errors", "errors")}
        numbers["requests_per_s"] = result["confirmed_per_s"]
        numbers["extra"] = result
        return numbers

    def measure(self, name, title, pids, action):
        """Runs `action` (a load run) and returns the scenario's numbers with the CPU each process used and the
        messages each service took meanwhile. The broker's counters must be settled when it is called."""
        counts_before = stats.consumed_counts(self.vhost.queues())
        cpu_before = self.cpu_readings(pids)
        machine_before = stats.machine_ticks()
        children_before = _children_cpu()
        profiling = self.start_profile(name, pids)
        logs = self.system.processes if "gateway" in pids else None
        log_offset = logs.log_size() if logs else 0
        started = time.monotonic()
        numbers = action()
        seconds = time.monotonic() - started
        machine_after = stats.machine_ticks()
        cpu_after = self.cpu_readings(pids)
        generator = _children_cpu() - children_before
        self.finish_profile(profiling)
        time.sleep(SETTLE_SECONDS)
        counts_after = stats.consumed_counts(self.vhost.queues())

        cpu = {
            process: stats.cpu_percent(cpu_before[process], cpu_after.get(process), seconds) for process in cpu_before
        }  # a group of processes: those alive at both readings
        cpu["generator"] = 100.0 * generator / seconds
        machine = stats.machine_percent(machine_before, machine_after, self.cores)
        cpu["machine"] = machine
        cpu["other"] = max(
            0.0, machine - sum(value for key, value in cpu.items() if key != "machine" and value is not None)
        )
        messages = stats.consumed_rates(counts_before, counts_after, seconds)
        for row in messages:
            instances = [
                value
                for process, value in cpu.items()
                if value is not None and process_service(process) == row["service"]
            ]
            if instances:
                busy = sum(instances) / 100 * seconds
                row["cpu_per_instance"] = sum(instances) / len(instances)
                total = (row["rpc_per_s"] + row["events_per_s"]) * seconds
                row["per_cpu_second"] = total / busy if busy > 0 else None
        if name == "checkout":
            numbers["extra"]["driver_cpu_percent"] = cpu["generator"]
        scenario = {
            "name": name,
            "title": title,
            "seconds": seconds,
            "cpu": cpu,
            "messages": messages,
            "log_problems": stats.log_problems(logs.output(log_offset)) if logs else [],
            "instances": {
                service: sum(1 for process in pids if process_service(process) == service)
                for service in {process_service(process) for process in pids}
            },
        }
        scenario.update(numbers)
        if cpu["other"] > 20:
            self.results["warnings"].append(
                f"{title}: {cpu['other']:.0f} % of a core went to other processes on the machine: noisy numbers"
            )
        return scenario

    def cpu_readings(self, pids):
        readings = {process: stats.cpu_seconds(pid) for process, pid in pids.items()}
        if "gateway" in pids:  # a Cartmesh scenario: its supervisor (scripts.run) pumps the services' logs
            readings["supervisor"] = stats.cpu_seconds(self.system.supervisor_pid())
        if self.baseline is not None:  # idle or not, its CPU is not "other"
            for process, pid in self.baseline.pids().items():
                readings.setdefault(process, stats.cpu_seconds(pid))
        if self.broker_pids:
            readings["broker"] = {pid: stats.cpu_seconds(pid) for pid in self.broker_pids}
        if self.postgres:  # the server's processes (shared with anything else using it on this machine)
            readings["database"] = {pid: stats.cpu_seconds(pid) for pid in stats.pids_named("postgres")}
        return readings

    def peak_rss(self):
        pids = dict(self.system.services(), supervisor=self.system.supervisor_pid())
        if self.baseline is not None:
            pids.update(self.baseline.pids())
        return {process: report.mib(stats.peak_rss(pid)) for process, pid in pids.items()}

    def start_profile(self, name, pids):
        if self.options.profile != name:
            return None
        spy = profile.py_spy()
        if spy is None:
            raise BenchError("--profile needs py-spy: .venv/bin/pip install py-spy")
        targets = {
            process: pid
            for process, pid in pids.items()
            if process in ("gateway", PROFILED_SERVICE.get(name), "baseline BaselineHttp")
        }
        seconds = self.options.checkout_seconds if name == "checkout" else self.options.seconds
        profiling = {}
        for process, pid in targets.items():
            path = os.path.join(self.work_dir, f"profile-{process.replace(' ', '-')}.txt")
            profiling[process] = (path, profile.start(spy, pid, seconds, path))
        return profiling

    def finish_profile(self, profiling):
        if not profiling:
            return
        top, samples = {}, {}
        for process, (path, spy) in profiling.items():
            spy.wait(60)
            with open(path) as collapsed:
                samples[process], top[process] = profile.summarize_collapsed(collapsed.read())
        self.results["profile"] = {"scenario": self.options.profile, "samples": samples, "top": top}


class Unavailable:
    """A falsy answer that says why."""

    def __init__(self, reason):
        self.reason = reason

    def __bool__(self):
        return False


# The backend service profiled with the gateway in each scenario.
PROFILED_SERVICE = {
    "product": "catalog",
    "search": "catalog",
    "cart_add": "carts",
    "cart_get": "carts",
    "cart_mix": "carts",
    "checkout": "orders",
}
BASELINE_SERVICES = {"baseline BaselineStore": "bench_baseline_store", "baseline BaselineHttp": "bench_baseline_http"}


def process_service(process):
    """The service a process name belongs to: "carts-2" → "carts"; the baseline's processes → their services."""
    if process in BASELINE_SERVICES:
        return BASELINE_SERVICES[process]
    base, _, number = process.rpartition("-")
    return base if base and number.isdigit() else process


SCENARIOS = (
    "product",
    "search",
    "cart_add",
    "cart_get",
    "cart_mix",
    "catalog_page",
    "cart_page",
    "checkout",
    "scaling",
)


def scenario_names(value):
    names = tuple(name.strip() for name in value.split(",") if name.strip())
    unknown = [name for name in names if name not in SCENARIOS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"not a scenario: {', '.join(unknown) or value!r} (choose from {', '.join(SCENARIOS)})"
        )
    return names


def _children_cpu():
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def parse_args(argv):
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--seconds",
        type=int,
        default=int(os.environ.get("BENCH_SECONDS", 15)),
        help="measured seconds per wrk scenario (default 15)",
    )
    parser.add_argument("--connections", type=int, default=32, help="wrk connections (default 32)")
    parser.add_argument("--checkout-users", type=int, default=16, help="checkout shoppers (default 16)")
    parser.add_argument("--checkout-seconds", type=int, default=20, help="checkout window (default 20)")
    parser.add_argument(
        "--poll-ms",
        type=int,
        default=20,
        help="checkout: re-read interval while an order still reads pending (default 20 ms)",
    )
    parser.add_argument("--carts", type=int, default=32, help="carts per cart scenario (default 32)")
    parser.add_argument(
        "--hop-calls",
        type=int,
        default=hop.DEFAULT_CALLS,
        help="RPC round trips per round of the hop micro-benchmark (default %(default)s; 0: not measured)",
    )
    parser.add_argument(
        "--log-level",
        default=os.environ.get("BENCH_LOG_LEVEL", "INFO"),
        help="LOG_LEVEL of every service (default INFO, as shipped)",
    )
    parser.add_argument(
        "--postgres",
        default=os.environ.get("BENCH_POSTGRES_URL"),
        metavar="ADMIN_URL",
        help="run on fresh PostgreSQL databases made through this admin URL (default: SQLite)",
    )
    parser.add_argument(
        "--profile",
        default=os.environ.get("BENCH_PROFILE") or None,
        choices=sorted(PROFILED_SERVICE),
        help="sample the gateway and that scenario's service with py-spy",
    )
    parser.add_argument(
        "--only",
        type=scenario_names,
        default=SCENARIOS,
        metavar="NAME,...",
        help=f"run only these scenarios ({','.join(SCENARIOS)}; the baseline always runs)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the work dir (databases, logs)")
    return parser.parse_args(argv)


def main(argv=None):
    options = parse_args(sys.argv[1:] if argv is None else argv)
    signal.signal(signal.SIGTERM, _interrupt)
    bench = None
    clean = False  # no errors: nothing in the work dir worth keeping
    try:
        bench = Bench(options)
        results = bench.run()
        clean = not any(scenario.get("errors") for scenario in results["baselines"] + results["scenarios"])
    except (KeyboardInterrupt, Interrupted):
        say("interrupted: stopping everything")
        return 130
    except BenchError as exc:
        say(f"failed: {exc}")
        return 1
    finally:
        if bench is not None:
            bench.stop()
            if clean and not options.keep:
                shutil.rmtree(bench.work_dir, ignore_errors=True)
            else:
                say(f"logs and databases kept in {bench.work_dir}")
    path = report.write(results)
    print(report.markdown(results), flush=True)
    say(f"written: {path} (and {os.path.join(report.RESULTS_DIR, 'latest.md')}, .json beside them)")
    return 0
