"""`make bench`'s pure parts: reading wrk's and py-spy's output, the arithmetic, /proc and RabbitMQ counters,
the report and the request lists. No load is generated here: a benchmark is not a timed test."""

import json
import os
import subprocess

import pytest

from bench import profile, report, runner, stats, system
from bench.checkout_driver import summarize
from bench.wrk import BenchError, ensure_wrk, lua_requests, lua_string, parse_wrk_output, wrk_command
from scripts import run

WRK_OUTPUT = """Running 15s test @ http://127.0.0.1:8000
  1 threads and 32 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency    91.00ms   32.41ms 310.32ms   72.56%
  5267 requests in 15.03s, 1.21MB read
Requests/sec:    350.44
Transfer/sec:     82.30KB
BENCH_RESULT {"requests": 5267, "duration_us": 15030000, "bytes": 1268000, "connect_errors": 1, "read_errors": 2, \
"write_errors": 0, "status_errors": 7, "timeouts": 3, "p50_us": 88123, "p95_us": 150500, "p99_us": 210000, \
"max_us": 310320, "mean_us": 91000.5}
"""


# --- wrk ---------------------------------------------------------------------------------------------------


def test_wrk_output_is_read_from_the_scripts_result_line():
    numbers = parse_wrk_output(WRK_OUTPUT)
    assert numbers["requests"] == 5267
    assert numbers["seconds"] == pytest.approx(15.03)
    assert numbers["requests_per_s"] == pytest.approx(5267 / 15.03)
    assert (numbers["p50_ms"], numbers["p95_ms"], numbers["p99_ms"]) == (88.123, 150.5, 210.0)
    assert numbers["max_ms"] == pytest.approx(310.32)
    assert numbers["non_2xx"] == 7
    assert numbers["socket_errors"] == 1 + 2 + 0 + 3
    assert numbers["errors"] == 13


def test_wrk_output_without_a_result_line_is_a_clear_error():
    with pytest.raises(BenchError, match="wrk printed no result line"):
        parse_wrk_output("unable to connect to 127.0.0.1:1 Connection refused\n")


def test_lua_strings_escape_quotes_and_backslashes_and_refuse_what_lua_cannot_read():
    assert lua_string('{"sku":"A\\B"}') == '"{\\"sku\\":\\"A\\\\B\\"}"'
    for bad in ("line\nbreak", "caf\u00e9", "\x00"):
        with pytest.raises(ValueError):
            lua_string(bad)


def test_the_request_list_becomes_a_lua_table_with_json_bodies():
    source = lua_requests(
        [
            {"method": "GET", "path": "/products/SKU-1"},
            {
                "method": "POST",
                "path": "/carts/c1/items",
                "headers": {"Authorization": "Bearer t"},
                "body": {"sku": "SKU-1", "quantity": 1},
            },
        ]
    )
    assert source.startswith("return {\n")
    assert '{method = "GET", path = "/products/SKU-1", headers = {}},' in source
    assert (
        '{method = "POST", path = "/carts/c1/items", headers = {["Authorization"] = "Bearer t", '
        '["Content-Type"] = "application/json"}, body = "{\\"sku\\":\\"SKU-1\\",\\"quantity\\":1}"},'
    ) in source


def test_the_wrk_command_uses_the_bench_script_and_settings():
    command = wrk_command("/usr/bin/wrk", "http://127.0.0.1:9", 15, 32)
    assert command[:5] == ["/usr/bin/wrk", "-t1", "-c32", "-d15s", "--timeout=5s"]
    assert command[-1] == "http://127.0.0.1:9"
    assert os.path.exists(command[command.index("-s") + 1])


def test_a_missing_wrk_is_installed_as_root_and_refused_plainly_otherwise():
    installed = []

    def which(name):
        return "/usr/bin/wrk" if installed else None

    def apt(argv, **_):
        if argv[:2] == ["apt-get", "install"]:
            installed.append(argv)
        return subprocess.CompletedProcess(argv, 0)

    assert ensure_wrk(which=which, run=apt, euid=lambda: 0) == "/usr/bin/wrk"
    assert installed == [["apt-get", "install", "-y", "wrk"]]
    with pytest.raises(BenchError, match="apt-get install -y wrk"):
        ensure_wrk(which=lambda name: None, run=apt, euid=lambda: 1000)


# --- arithmetic ------------------------------------------------------------------------------------------


def test_percentiles_by_nearest_rank():
    values = list(range(1, 101))  # 1..100
    assert stats.percentile(values, 50) == 50
    assert stats.percentile(values, 95) == 95
    assert stats.percentile(values, 99) == 99
    assert stats.percentile(values, 100) == 100
    assert stats.percentile([7], 99) == 7
    assert stats.percentile([3, 1, 2], 50) == 2  # unsorted input
    assert stats.percentile([], 50) is None
    with pytest.raises(ValueError):
        stats.percentile(values, 0)


def test_ratios_and_rates_are_none_without_a_base():
    assert stats.ratio(700, 350) == 2.0
    assert stats.ratio(700, 0) is None
    assert stats.ratio(None, 350) is None
    assert stats.rate(30, 15) == 2.0
    assert stats.rate(30, 0) is None


def test_ratios_are_to_the_mean_of_the_baseline_runs():
    results = {
        "baselines": [{"requests_per_s": 300.0}, {"requests_per_s": 500.0}],
        "scenarios": [{"requests_per_s": 800.0}, {"name": "checkout", "skipped": "404"}],
    }
    report.add_ratios(results)
    assert results["baseline_requests_per_s"] == 400.0
    assert [run["ratio"] for run in results["baselines"]] == [0.75, 1.25]
    assert results["scenarios"][0]["ratio"] == 2.0
    assert "ratio" not in results["scenarios"][1]


def test_checkout_numbers_count_only_confirmations_within_the_window():
    orders = [{"outcome": "confirmed", "latency_s": 0.1 * n, "finished": n} for n in range(1, 11)]
    orders.append({"outcome": "confirmed", "latency_s": 0.2, "finished": 10.5})  # after the window
    orders.append({"outcome": "failed:payment_declined", "latency_s": 0.3, "finished": 3})
    orders.append({"outcome": "unsettled", "latency_s": 15.0, "finished": 25})
    calls = (
        [{"kind": "checkout", "status": 202, "latency_s": 0.05}] * 12
        + [{"kind": "poll", "status": 200, "latency_s": 0.01}] * 20
        + [{"kind": "cart", "status": 503, "latency_s": 0.01}, {"kind": "poll", "status": None, "latency_s": 5}]
    )
    result = summarize(orders, calls, 10)
    assert result["confirmed_per_s"] == 1.0
    assert result["confirmed"] == 11 and result["orders"] == 13
    assert result["not_confirmed"] == {"failed:payment_declined": 1, "unsettled": 1}
    assert result["p50_ms"] == pytest.approx(500)
    assert result["p99_ms"] == pytest.approx(1000)
    assert (result["non_2xx"], result["socket_errors"], result["errors"]) == (1, 1, 4)
    assert result["http_requests"] == 34
    assert result["checkout_post_p50_ms"] == pytest.approx(50)


# --- /proc and RabbitMQ ------------------------------------------------------------------------------------


def test_peak_rss_comes_from_vm_hwm_of_a_proc_status_file(tmp_path):
    (tmp_path / "4242").mkdir()
    (tmp_path / "4242" / "status").write_text(
        "Name:\tpython\nVmPeak:\t  300000 kB\nVmHWM:\t   81920 kB\nVmRSS:\t   70000 kB\n"
    )
    assert stats.peak_rss(4242, proc=str(tmp_path)) == 81920 * 1024
    assert report.mib(stats.peak_rss(4242, proc=str(tmp_path))) == 80.0
    assert stats.peak_rss(4343, proc=str(tmp_path)) is None  # gone
    assert stats.parse_vm_hwm("Name:\tkthreadd\nState:\tS\n") is None


def test_cpu_time_is_read_after_a_command_name_with_spaces_and_parentheses():
    stat = "123 (nameko (run) x) S 1 123 123 0 -1 4194304 500 0 0 0 250 50 0 0 20 0 3 0 100 1000 200"
    assert stats.parse_cpu_ticks(stat) == 300
    assert stats.cpu_percent(10.0, 13.0, 15.0) == 20.0
    assert stats.cpu_percent(None, 13.0, 15.0) is None
    # A group: a process that ended (2) or started (4) between the readings does not count.
    assert stats.cpu_percent({1: 1.0, 2: 5.0, 3: None}, {1: 2.5, 3: 9.0, 4: 7.0}, 3.0) == 50.0


def test_machine_cpu_from_proc_stat():
    before = stats.parse_machine_ticks("cpu  100 0 100 700 100 0 0 0 0 0\ncpu0 50 0 50 350 50 0 0 0 0 0\n")
    after = stats.parse_machine_ticks("cpu  250 0 150 800 100 0 0 0 0 0\n")
    assert before == (200, 1000)
    assert stats.machine_percent(before, after, 2) == pytest.approx(200 * 200 / 300)


def test_queues_are_attributed_to_the_service_that_consumes_them():
    assert stats.queue_owner("rpc-carts") == ("carts", "rpc")
    assert stats.queue_owner("evt-orders-order_failed--carts.reopen_after_failure") == ("carts", "event")
    assert stats.queue_owner("rpc.reply-gateway-1f2e") is None
    assert stats.queue_owner("parked-orders") is None
    assert stats.queue_owner("evt-orders-order_failed--carts.reopen_after_failed_order.retry") is None


def test_messages_per_instance_from_two_readings_of_the_queue_list():
    def queues(rpc_carts, events, consumers):
        return [
            {"name": "rpc-carts", "consumers": consumers, "message_stats": {"ack": rpc_carts}},
            {"name": "evt-orders-order_failed--carts.reopen", "consumers": consumers, "message_stats": {"ack": events}},
            {"name": "rpc-catalog", "consumers": 1},  # never used: no message_stats
            {"name": "rpc.reply-gateway-x", "message_stats": {"ack": 999}},
        ]

    before, after = stats.consumed_counts(queues(100, 5, 2)), stats.consumed_counts(queues(400, 35, 2))
    assert before["carts"] == {"rpc": 100, "event": 5, "instances": 2}
    rows = stats.consumed_rates(before, after, 10)
    assert rows == [
        {"service": "carts", "instances": 2, "rpc_per_s": 30.0, "events_per_s": 3.0, "per_instance_per_s": 16.5}
    ]


def test_process_names_map_to_their_services():
    assert runner.process_service("carts-2") == "carts"
    assert runner.process_service("carts") == "carts"
    assert runner.process_service("baseline BaselineStore") == "bench_baseline_store"


# --- what the scenarios send ---------------------------------------------------------------------------


def test_cart_requests_spread_over_every_cart_and_keep_to_each_carts_own_lines():
    carts = [(f"cart-{n}", f"token-{n}", [f"S{n}", f"S{n + 1}", f"S{n + 2}"]) for n in range(4)]
    adds = runner.cart_add_requests(carts)
    assert len(adds) == runner.LIST_LENGTH
    for request in adds:
        number = int(request["path"].split("/")[2].split("-")[1])
        assert request["headers"] == {"Authorization": f"Bearer token-{number}"}
        assert request["body"]["sku"] in carts[number][2] and request["body"]["quantity"] == 1
    per_line = {}
    for request in adds:
        key = (request["path"], request["body"]["sku"])
        per_line[key] = per_line.get(key, 0) + 1
    assert len(per_line) == 12 and max(per_line.values()) - min(per_line.values()) <= 1

    mix = runner.cart_mix_requests(carts)
    for cart_id, _, _ in carts:
        kinds = [request["method"] for request in mix if request["path"].startswith(f"/carts/{cart_id}")]
        assert kinds[:4] == ["GET", "POST", "GET", "POST"]


def test_the_bench_catalog_lets_each_search_find_five_products():
    products = system.products()
    assert len({product["sku"] for product in products}) == 40
    for colour in system.COLOURS:
        found = [product for product in products if colour in (product["name"] + product["description"]).lower()]
        assert len(found) == system.PRODUCTS_PER_COLOUR
    assert all(product["stock"] == system.STOCK for product in products)


# --- py-spy ------------------------------------------------------------------------------------------------


def test_py_spy_stacks_are_summed_into_self_and_total_shares():
    collapsed = (
        "main (/x/nameko/cli/main.py);handle (/work/main/gateway_http/service.py);"
        "dumps (/usr/lib/python3.11/json/__init__.py) 6\n"
        "main (/x/nameko/cli/main.py);handle (/work/main/gateway_http/service.py) 2\n"
        "main (/x/nameko/cli/main.py);publish (/x/site-packages/kombu/messaging.py) 2\n"
        "garbage line\n"
    )
    samples, top = profile.summarize_collapsed(collapsed)
    assert samples == 10
    assert top["self"][0] == ("dumps (json/__init__.py)", 60.0)
    assert dict(top["self"])["publish (kombu/messaging.py)"] == 20.0
    assert dict(top["total"])["handle (gateway_http/service.py)"] == 80.0


# --- the report ------------------------------------------------------------------------------------------


def scenario(name, rps, errors=0, p99=100.0, **extra):
    return dict(
        {
            "name": name,
            "title": name,
            "requests_per_s": rps,
            "p50_ms": 10.0,
            "p95_ms": 50.0,
            "p99_ms": p99,
            "errors": errors,
            "non_2xx": errors,
            "socket_errors": 0,
            "cpu": {"gateway": 90.0, "machine": 190.0},
            "messages": [],
        },
        **extra,
    )


def sample_results():
    results = {
        "started_at": "2026-11-28T15:00:00Z",
        "machine": {"cpus": 2, "wrk": "4.1.0"},
        "settings": {
            "seconds": 15,
            "connections": 32,
            "wrk_threads": 1,
            "checkout_users": 16,
            "checkout_seconds": 20,
            "poll_seconds": 0.02,
            "log_level": "INFO",
            "database": "SQLite",
        },
        "baselines": [scenario("baseline_before", 400.0), scenario("baseline_after", 400.0)],
        "ceilings": [scenario("ceiling_before", 1200.0), scenario("ceiling_after", 1000.0)],
        "rpc_hop": {
            "stock": {
                "caller_us": 900.0,
                "callee_us": 1000.0,
                "total_us": 1900.0,
                "broker_us": 500.0,
                "calls_per_s": 500,
            },
            "cartmesh": {
                "caller_us": 500.0,
                "callee_us": 600.0,
                "total_us": 1100.0,
                "broker_us": 300.0,
                "calls_per_s": 900,
            },
            "ratio": {"caller_us": 0.56, "callee_us": 0.6, "total_us": 0.58, "broker_us": 0.6},
            "settings": {"calls": 3000, "concurrency": 8, "rounds": 3},
        },
        "scenarios": [
            scenario(
                "product",
                900.0,
                messages=[
                    {
                        "service": "catalog",
                        "instances": 1,
                        "rpc_per_s": 900.0,
                        "events_per_s": 0.0,
                        "per_instance_per_s": 900.0,
                        "cpu_per_instance": 60.0,
                        "per_cpu_second": 1500.0,
                    }
                ],
            ),
            scenario("cart_get", 200.0),
            scenario("cart_add", 150.0, errors=3),
            scenario(
                "checkout",
                55.0,
                p99=650.0,
                extra={
                    "confirmed": 1100,
                    "orders": 1100,
                    "not_confirmed": {},
                    "http_requests_per_s": 400.0,
                    "checkout_post_p50_ms": 20.0,
                    "checkout_post_p99_ms": 90.0,
                    "driver_cpu_percent": 30.0,
                },
            ),
        ],
        "rss_mib": {
            "main run": {"catalog": 70.0, "carts": 79.0, "supervisor": 26.0, "baseline BaselineHttp": 90.0},
            "scaling run (carts=2)": {"carts": 81.5, "carts-2": 75.0, "supervisor": 26.0},
        },
        "warnings": [],
    }
    report.add_ratios(results)
    results["targets"] = report.evaluate_targets(results)
    return results


def test_targets_are_judged_met_missed_or_not_measured():
    verdicts = {row["target"]: (row["met"], row["result"]) for row in sample_results()["targets"]}
    assert verdicts["GET /products/{sku} (cache hit) ≥ 3× the baseline's throughput"] == (
        False,
        "2.25× the baseline (900 req/s)",
    )
    assert verdicts["GET /products/{sku} (cache hit) ≥ 0.8× the bare @http ceiling"] == (
        True,
        "0.82× the ceiling (900 req/s)",
    )
    assert verdicts["GET /carts/{id} ≥ 1.0× the baseline's throughput (floor 0.7×)"][0] is False  # 0.5×
    assert verdicts["one RPC round trip through Cartmesh ≤ 0.6× the CPU of stock nameko's (caller + callee)"] == (
        True,
        "0.58× (1100 µs against 1900 µs)",
    )
    assert verdicts["checkout ≥ 50 confirmed orders/s"][0] is True
    assert verdicts["checkout p99 < 500 ms (POST checkout → confirmed)"] == (False, "p99 650 ms")
    assert verdicts["zero errors in every scenario"] == (False, "errors in cart_add (3)")
    # The largest peak over both runs counts; the baseline is not Cartmesh's, the supervisor is.
    assert verdicts["every process under 80 MiB peak RSS"] == (False, "largest: carts 81.5 MiB; over: carts")

    results = sample_results()
    results["scenarios"][3] = {"name": "checkout", "title": "checkout", "skipped": "POST checkout answered 404"}
    results["rss_mib"] = {}
    results["rpc_hop"] = None
    verdicts = {row["target"]: row for row in report.evaluate_targets(results)}
    assert verdicts["checkout ≥ 50 confirmed orders/s"]["met"] is None
    assert verdicts["every process under 80 MiB peak RSS"]["result"] == "not measured"
    hop = verdicts["one RPC round trip through Cartmesh ≤ 0.6× the CPU of stock nameko's (caller + callee)"]
    assert (hop["met"], hop["result"]) == (None, "not measured")


def test_the_markdown_report_has_every_scenario_ratio_target_and_process():
    text = report.markdown(sample_results())
    assert "| product | 900.0 | 2.25 | 0.82 | 10.0 | 50.0 | 100.0 | 0 (0 / 0) |  |" in text
    assert "| cart_add | 150.0 | 0.38 | 0.14 | 10.0 | 50.0 | 100.0 | 3 (3 / 0) |  |" in text
    assert "| ceiling_before | 1200.0 | 3.00 | – | 10.0 | 50.0 | 100.0 | 0 (0 / 0) |  |" in text
    target = "GET /carts/{id} ≥ 1.0× the baseline's throughput (floor 0.7×)"
    assert f"| {target} | 0.50× the baseline (200 req/s) | **missed** |" in text
    assert "| cartmesh | 500 | 600 | 1100 | 300 | 900 |" in text
    assert "| cartmesh ÷ stock | 0.56 | 0.60 | **0.58** | 0.60 |  |" in text
    assert "| product | catalog | 1 | 900.0 | 0.0 | **900.0** | 60 | 1500 |" in text
    assert "| carts | 79.0 | 81.5 | **no** |" in text
    assert "| baseline BaselineHttp | 90.0 | – | – |" in text
    assert "1100 of 1100 accepted orders confirmed" in text
    # 90 % of a core at 900 req/s is 1 ms a request; at 55 orders/s, 16.36 ms an order (machine time left out)
    assert "| product | 1.00 | **1.00** |" in text
    assert "| checkout | 16.36 | **16.36** |" in text
    assert "400.0 req/s on average" in text


def test_results_are_written_as_markdown_and_json_with_a_latest_copy(tmp_path):
    results = sample_results()
    path = report.write(results, directory=str(tmp_path))
    assert os.path.basename(path) == "20261128T150000Z.md"
    assert sorted(os.listdir(tmp_path)) == ["20261128T150000Z.json", "20261128T150000Z.md", "latest.json", "latest.md"]
    assert (tmp_path / "latest.md").read_text() == (tmp_path / "20261128T150000Z.md").read_text()
    assert json.loads((tmp_path / "latest.json").read_text())["scenarios"][0]["ratio"] == 2.25


# --- scripts/run.py's CARTMESH_INSTANCES -------------------------------------------------------------------


def test_instances_are_read_from_cartmesh_instances():
    assert run.instance_counts("") == dict.fromkeys(run.SERVICES, 1)
    assert run.instance_counts(None)["carts"] == 1
    counts = run.instance_counts(" carts = 2 ,catalog=3")
    assert (counts["carts"], counts["catalog"], counts["orders"]) == (2, 3, 1)
    assert run.instance_names("carts", 3) == ["carts", "carts-2", "carts-3"]
    for bad, reason in (
        ("gateway=2", "not a backend service"),
        ("carts", "write carts=N"),
        ("carts=0", "from 1 to"),
        ("carts=two", "write carts=N"),
        (f"carts={run.MAX_INSTANCES + 1}", "from 1 to"),
        ("carts=2,carts=3", "named twice"),
    ):
        with pytest.raises(ValueError, match=reason):
            run.instance_counts(bad)


def test_a_bad_cartmesh_instances_value_starts_nothing(tmp_path, capsys):
    var_dir = tmp_path / "var"
    assert run.main({"CARTMESH_INSTANCES": "carts=lots", "CARTMESH_VAR_DIR": str(var_dir)}) == 2
    assert "CARTMESH_INSTANCES: 'carts=lots'" in capsys.readouterr().out
    assert not var_dir.exists()


def test_problems_in_the_services_logs_are_counted_without_their_ids_and_times():
    log = "\n".join(
        [
            "gateway          | 2026-11-28 15:00:01,123 INFO gateway_http.router [request_id=a1] "
            "get_product 200 3.1 ms",
            "gateway          | 2026-11-28 15:00:02,123 WARNING gateway_http.router [request_id=a2] get_product: "
            "the catalog service did not answer in time",
            "gateway          | 2026-11-28 15:00:03,456 WARNING gateway_http.router [request_id=b7] get_product: "
            "the catalog service did not answer in time",
            "orders           | 2026-11-28 15:00:04,000 ERROR services.orders [request_id=-] order "
            "0b9f1c2e-3d4a-4b5c-8d6e-7f8091a2b3c4 failed",
            "catalog          | Traceback (most recent call last):",
        ]
    )
    assert stats.log_problems(log) == [
        (2, "gateway: WARNING gateway_http.router [\u2026] get_product: the catalog service did not answer in time"),
        (1, "orders: ERROR services.orders [\u2026] order \u2026 failed"),
    ]
    assert stats.log_problems(log, top=1)[0][0] == 2
