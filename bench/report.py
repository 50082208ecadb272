"""The bench's report: the performance targets checked against the results, and the results as Markdown and
JSON under bench/results/ (<timestamp>.md/.json and latest.md/.json). Pure functions of the results dict that
bench/runner.py builds; docs/PERFORMANCE.md explains each number."""

import json
import os

from bench.stats import MIB, ratio

RESULTS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
RSS_LIMIT_MIB = 80


def add_ratios(results):
    """Sets `baseline_requests_per_s` (the mean of the baseline runs) and every run's `ratio` to it, and
    `ceiling_requests_per_s` (the mean of the ceiling runs) with each scenario's `ceiling_ratio` to it."""
    base = _mean(results["baselines"])
    ceiling = _mean(results.get("ceilings", []))
    results["baseline_requests_per_s"] = base
    results["ceiling_requests_per_s"] = ceiling
    for run in results["baselines"] + results.get("ceilings", []) + results["scenarios"]:
        if not run.get("skipped"):
            run["ratio"] = ratio(run["requests_per_s"], base)
    for run in results["scenarios"]:
        if not run.get("skipped"):
            run["ceiling_ratio"] = ratio(run["requests_per_s"], ceiling)
    return results


def _mean(runs):
    measured = [run["requests_per_s"] for run in runs if not run.get("skipped")]
    return sum(measured) / len(measured) if measured else None


def _scenario(results, name):
    for scenario in results["scenarios"]:
        if scenario["name"] == name and not scenario.get("skipped"):
            return scenario
    return None


def _at_least(value, threshold):
    return None if value is None else value >= threshold


def evaluate_targets(results):
    """The performance targets: [{"target", "result", "met": True | False | None (not measured)}]."""
    rows = []
    product, cart_get, checkout = (_scenario(results, name) for name in ("product", "cart_get", "checkout"))

    def ratio_row(target, scenario, threshold, key="ratio", to="the baseline"):
        value = scenario and scenario.get(key)
        rows.append(
            {
                "target": target,
                "met": _at_least(value, threshold),
                "result": "not measured"
                if value is None
                else f"{value:.2f}× {to} ({scenario['requests_per_s']:.0f} req/s)",
            }
        )

    ratio_row("GET /carts/{id} ≥ 1.0× the baseline's throughput (floor 0.7×)", cart_get, 1.0)
    ratio_row("GET /products/{sku} (cache hit) ≥ 3× the baseline's throughput", product, 3.0)
    ratio_row(
        "GET /products/{sku} (cache hit) ≥ 0.8× the bare @http ceiling",
        product,
        0.8,
        key="ceiling_ratio",
        to="the ceiling",
    )
    hop = results.get("rpc_hop")
    hop_ratio = hop and hop["ratio"]["total_us"]
    rows.append(
        {
            "target": "one RPC round trip through Cartmesh ≤ 0.6× the CPU of stock nameko's (caller + callee)",
            "met": None if hop_ratio is None else hop_ratio <= 0.6,
            "result": "not measured"
            if hop_ratio is None
            else f"{hop_ratio:.2f}× ({hop['cartmesh']['total_us']:.0f} µs against {hop['stock']['total_us']:.0f} µs)",
        }
    )
    rate = checkout and checkout["requests_per_s"]
    rows.append(
        {
            "target": "checkout ≥ 50 confirmed orders/s",
            "met": _at_least(rate, 50),
            "result": "not measured" if rate is None else f"{rate:.1f} confirmed orders/s",
        }
    )
    p99 = checkout and checkout.get("p99_ms")
    rows.append(
        {
            "target": "checkout p99 < 500 ms (POST checkout → confirmed)",
            "met": None if p99 is None else p99 < 500,
            "result": "not measured" if p99 is None else f"p99 {p99:.0f} ms",
        }
    )
    measured = [scenario for scenario in results["scenarios"] if not scenario.get("skipped")]
    failing = [f"{scenario['name']} ({scenario['errors']})" for scenario in measured if scenario["errors"]]
    rows.append(
        {
            "target": "zero errors in every scenario",
            "met": (not failing) if measured else None,
            "result": ("errors in " + ", ".join(failing))
            if failing
            else (f"0 errors in {len(measured)} scenarios" if measured else "not measured"),
        }
    )
    services = {}
    for run in results.get("rss_mib", {}).values():
        for name, mib in run.items():
            if not name.startswith("baseline") and mib is not None:
                services[name] = max(mib, services.get(name, 0))
    if services:
        worst = max(services, key=services.get)
        over = sorted(name for name, mib in services.items() if mib >= RSS_LIMIT_MIB)
        rows.append(
            {
                "target": f"every process under {RSS_LIMIT_MIB} MiB peak RSS",
                "met": not over,
                "result": f"largest: {worst} {services[worst]:.1f} MiB"
                + (f"; over: {', '.join(over)}" if over else ""),
            }
        )
    else:
        rows.append(
            {
                "target": f"every process under {RSS_LIMIT_MIB} MiB peak RSS",
                "met": None,
                "result": "not measured",
            }
        )
    return rows


def _number(value, digits=1):
    return "–" if value is None else f"{value:.{digits}f}"


def _verdict(met):
    return {True: "met", False: "**missed**", None: "not measured"}[met]


def table(header, rows):
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def markdown(results):
    """The report as Markdown: settings, one row per scenario, the targets, CPU, messages per instance, RSS."""
    settings = results["settings"]
    out = [
        f"# Cartmesh bench, {results['started_at']}",
        "",
        f"{results['machine']['cpus']} cores; wrk {results['machine']['wrk']} ({settings['wrk_threads']} thread, "
        f"{settings['connections']} connections, {settings['seconds']} s per scenario); checkout driver: "
        f"{settings['checkout_users']} shoppers for {settings['checkout_seconds']} s (each order followed to its "
        f"settling event, then read with GET /orders/{{id}}); databases: {settings['database']}; "
        f"LOG_LEVEL={settings['log_level']}. Ratios (× baseline) are to the minimal Nameko baseline, measured at "
        f"the start and at the end of this run: {_number(results.get('baseline_requests_per_s'))} req/s on "
        "average. Latencies in ms.",
        "",
    ]

    rows = []
    for scenario in results["baselines"] + results.get("ceilings", []) + results["scenarios"]:
        if scenario.get("skipped"):
            rows.append([scenario["title"], "–", "–", "–", "–", "–", "–", "–", f"not run: {scenario['skipped']}"])
            continue
        rows.append(
            [
                scenario["title"],
                _number(scenario["requests_per_s"]),
                _number(scenario.get("ratio"), 2),
                _number(scenario.get("ceiling_ratio"), 2) if "ceiling_ratio" in scenario else "–",
                _number(scenario["p50_ms"]),
                _number(scenario["p95_ms"]),
                _number(scenario["p99_ms"]),
                f"{scenario['errors']} ({scenario['non_2xx']} / {scenario['socket_errors']})",
                scenario.get("note", ""),
            ]
        )
    out += [
        "## Throughput and latency",
        "",
        table(
            ["scenario", "req/s", "× baseline", "× ceiling", "p50", "p95", "p99", "errors (non-2xx / socket)", "note"],
            rows,
        ),
        "",
    ]
    out += hop_section(results.get("rpc_hop"))

    out += [
        "## Targets",
        "",
        table(
            ["target", "result", ""],
            [[row["target"], row["result"], _verdict(row["met"])] for row in results["targets"]],
        ),
        "",
    ]

    processes = []
    for scenario in results["baselines"] + results["scenarios"]:
        for name in scenario.get("cpu", {}):
            if name not in processes:
                processes.append(name)
    cpu_rows = [
        [scenario["title"]] + [_number(scenario.get("cpu", {}).get(name), 0) for name in processes]
        for scenario in results["baselines"] + results["scenarios"]
        if not scenario.get("skipped")
    ]
    out += [
        "## CPU during each scenario",
        "",
        f"% of one core over the measured window (the machine has {results['machine']['cpus'] * 100}). "
        "`other` is whatever else ran on the machine: more than a few % means the numbers are noisier.",
        "",
        table(["scenario"] + processes, cpu_rows),
        "",
    ]
    out += cpu_per_request_section(results["baselines"] + results["scenarios"], processes)

    message_rows = []
    for scenario in results["baselines"] + results["scenarios"]:
        for row in scenario.get("messages", []):
            message_rows.append(
                [
                    scenario["title"],
                    row["service"],
                    row["instances"],
                    _number(row["rpc_per_s"]),
                    _number(row["events_per_s"]),
                    f"**{_number(row['per_instance_per_s'])}**",
                    _number(row.get("cpu_per_instance"), 0),
                    _number(row.get("per_cpu_second"), 0),
                ]
            )
    out += [
        "## Messages per second per service instance",
        "",
        "Messages a service took from its own queues (RPC requests and events; not the replies to its own "
        "calls), counted by RabbitMQ over the measured window, divided by its instances. CPU is that "
        "service's, per instance; messages per CPU-second is the capacity of one fully busy core.",
        "",
        table(
            [
                "scenario",
                "service",
                "instances",
                "RPC/s",
                "events/s",
                "messages/s per instance",
                "CPU % per instance",
                "messages per CPU-second",
            ],
            message_rows,
        ),
        "",
    ]

    runs = list(results.get("rss_mib", {}))
    names = []
    for run in runs:
        for name in results["rss_mib"][run]:
            if name not in names:
                names.append(name)
    rss_rows = []
    for name in names:
        values = [results["rss_mib"][run].get(name) for run in runs]
        under = (
            "–"
            if name.startswith("baseline") or name == "supervisor"
            else ("yes" if all(value is None or value < RSS_LIMIT_MIB for value in values) else "**no**")
        )
        rss_rows.append([name] + [_number(value) for value in values] + [under])
    out += [
        "## Peak RSS (VmHWM) per process, MiB",
        "",
        table(["process"] + runs + [f"< {RSS_LIMIT_MIB} MiB"], rss_rows),
        "",
    ]

    checkout = _scenario(results, "checkout")
    if checkout:
        extra = checkout["extra"]
        out += [
            "## Checkout details",
            "",
            f"{extra['confirmed']} of {extra['orders']} accepted orders confirmed "
            f"(not confirmed: {extra['not_confirmed'] or 'none'}); "
            f"{extra['http_requests_per_s']:.0f} HTTP requests/s in all (carts, checkouts, polls); "
            f"POST checkout answered in p50 {_number(extra['checkout_post_p50_ms'])} ms, "
            f"p99 {_number(extra['checkout_post_p99_ms'])} ms; driver CPU "
            f"{_number(extra.get('driver_cpu_percent'), 0)} % of a core.",
            "",
        ]

    if results.get("profile"):
        profile = results["profile"]
        out += [f"## Profile ({profile['scenario']})", ""]
        for process, frames in profile["top"].items():
            out += [
                f"{process}: {profile['samples'][process]} samples; the functions where they were spent "
                "(self), and the calls they were under (total):",
                "",
                table(["self %", "function"], [[_number(share), frame] for frame, share in frames["self"]]),
                "",
                table(["total %", "function"], [[_number(share), frame] for frame, share in frames["total"]]),
                "",
            ]
    problems = [
        (scenario["title"], count, line)
        for scenario in results["baselines"] + results["scenarios"]
        for count, line in scenario.get("log_problems", [])
    ]
    if problems:
        out += [
            "## Warnings and errors the services logged during each scenario",
            "",
            "The most frequent, with ids and times taken out.",
            "",
            table(
                ["scenario", "lines", "logged"],
                [[title, count, "`" + line.replace("|", "/") + "`"] for title, count, line in problems],
            ),
            "",
        ]
    if results.get("warnings"):
        out += ["## Warnings", ""] + [f"- {warning}" for warning in results["warnings"]] + [""]
    return "\n".join(out)


NOT_THE_SYSTEM = ("machine", "other", "generator")


def cpu_per_request(scenario, processes):
    """{process: ms of CPU per request (per confirmed order for checkout)} and their sum, from a scenario's CPU %
    and throughput; None where the scenario did not run or had no throughput."""
    if scenario.get("skipped") or not scenario.get("requests_per_s"):
        return None
    cpu = scenario.get("cpu", {})
    each = {
        name: cpu[name] * 10 / scenario["requests_per_s"]  # % of a core = 10 ms per s
        for name in processes
        if name not in NOT_THE_SYSTEM and cpu.get(name) is not None
    }
    return each, sum(each.values())


def cpu_per_request_section(scenarios, processes):
    """Where each request's CPU went: what a profile starts from, and steadier than throughput on a noisy machine."""
    columns = [name for name in processes if name not in NOT_THE_SYSTEM]
    rows = []
    for scenario in scenarios:
        measured = cpu_per_request(scenario, columns)
        if measured is None:
            continue
        each, total = measured
        rows.append(
            [scenario["title"]]
            + [_number(each[name], 2) if each.get(name) else "–" for name in columns]
            + [f"**{_number(total, 2)}**"]
        )
    return [
        "## CPU per request",
        "",
        "ms of CPU per request (per confirmed order for checkout) in each process, and their sum (the load "
        "generator and other processes left out): the CPU table divided by the throughput.",
        "",
        table(["scenario"] + columns + ["total"], rows),
        "",
    ]


def hop_section(hop):
    """The RPC micro-benchmark (bench/hop.py) as Markdown lines; none when it was not measured."""
    if not hop:
        return []
    rows = [
        [
            stack,
            _number(hop[stack]["caller_us"], 0),
            _number(hop[stack]["callee_us"], 0),
            _number(hop[stack]["total_us"], 0),
            _number(hop[stack]["broker_us"], 0),
            _number(hop[stack]["calls_per_s"], 0),
        ]
        for stack in ("stock", "cartmesh")
    ]
    ratios = hop["ratio"]
    rows.append(
        [
            "cartmesh ÷ stock",
            _number(ratios["caller_us"], 2),
            _number(ratios["callee_us"], 2),
            f"**{_number(ratios['total_us'], 2)}**",
            _number(ratios["broker_us"], 2),
            "",
        ]
    )
    settings = hop["settings"]
    return [
        "## One RPC round trip (bench/hop.py)",
        "",
        f"CPU per call (µs), median of {settings['rounds']} alternating rounds of {settings['calls']} calls, "
        f"{settings['concurrency']} in flight: an echo service called from inside another service's worker.",
        "",
        table(["stack", "caller µs", "callee µs", "caller + callee µs", "broker µs", "calls/s"], rows),
        "",
    ]


def write(results, directory=RESULTS_DIR):
    """Writes <stamp>.md/.json and latest.md/.json into `directory`; returns the path of the .md."""
    os.makedirs(directory, exist_ok=True)
    text = markdown(results)
    data = json.dumps(results, indent=2, sort_keys=True) + "\n"
    stamp = results["started_at"].replace(":", "").replace("-", "")
    for name in (stamp, "latest"):
        with open(os.path.join(directory, f"{name}.md"), "w") as md:
            md.write(text)
        with open(os.path.join(directory, f"{name}.json"), "w") as js:
            js.write(data)
    return os.path.join(directory, f"{stamp}.md")


def mib(value):
    return None if value is None else value / MIB
