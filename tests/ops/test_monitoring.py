"""Monitoring in docker-compose.yml, checked without a Docker engine: monitoring/prometheus.yml scrapes every app
service (every replica, by DNS) on the port its metrics are served on, the Grafana dashboard kept in the repo
asks only for metrics docs/OBSERVABILITY.md documents (or RabbitMQ's own) and has the panels the operator
needs, Grafana's provisioning files point at each other and at what compose mounts, and the new containers
publish nothing but loopback ports and hold no password of their own. `promtool check config` runs when
promtool is installed."""

import json
import os
import re
import shutil
import subprocess

import pytest
import yaml

from scripts import run
from tests.ops.test_compose import (
    INFRASTRUCTURE,
    MONITORING,
    ROOT,
    ComposeLoader,
    load_compose,
    make_secrets,
    read,
    secrets_mounts,
)
from tests.ops.test_make_secrets import contents, generate

PROMETHEUS_CONFIG = "monitoring/prometheus.yml"
DASHBOARD = "monitoring/grafana/dashboards/cartmesh.json"
PROVISIONING = "monitoring/grafana/provisioning"
METRICS_PORT = 9100  # every service's probe server in compose (docs/OBSERVABILITY.md)
GATEWAY_PORT = 8000  # the gateway serves /metrics on its public port
RABBITMQ_PROMETHEUS_PORT = 15692


def load_yaml(name):
    return yaml.load(read(name), Loader=ComposeLoader)


@pytest.fixture(scope="module")
def compose():
    return load_compose()["services"]


@pytest.fixture(scope="module")
def app_names(compose):
    return set(compose) - INFRASTRUCTURE - MONITORING


@pytest.fixture(scope="module")
def scrape_configs():
    return {job["job_name"]: job for job in load_yaml(PROMETHEUS_CONFIG)["scrape_configs"]}


@pytest.fixture(scope="module")
def dashboard():
    with open(os.path.join(ROOT, DASHBOARD)) as source:
        return json.load(source)


def mounts(spec):
    """{container path: (source, read_only)} of a compose service's volumes."""
    found = {}
    for mount in spec.get("volumes", []):
        source, target, *mode = mount.split(":")
        found[target] = (source, mode == ["ro"])
    return found


# --- Prometheus ---------------------------------------------------------------------------------------------


def dns_targets(job):
    """{(name, port)} a job finds by DNS A records; every one of its discovery blocks must be of that kind."""
    assert set(job) - {"job_name", "metrics_path", "scrape_interval", "scrape_timeout"} == {"dns_sd_configs"}, job
    found = set()
    for block in job["dns_sd_configs"]:
        assert block["type"] == "A", job["job_name"]  # SRV records are not what Docker's DNS serves
        found |= {(name, block["port"]) for name in block["names"]}
    return found


def test_every_app_service_is_scraped_by_dns_on_the_port_of_its_metrics(compose, app_names, scrape_configs):
    assert app_names == set(run.SERVICES) | {run.GATEWAY}
    for name in app_names:
        job = scrape_configs[name]
        expected = GATEWAY_PORT if name == run.GATEWAY else METRICS_PORT
        # A name, not an address: Docker's DNS answers a compose service name with every replica's address,
        # so `--scale carts=3` gives three targets.
        assert dns_targets(job) == {(name, expected)}, name
        assert job.get("metrics_path", "/metrics") == "/metrics", name
        assert compose[name]["environment"]["METRICS_PORT"] == str(METRICS_PORT), name
    assert GATEWAY_PORT in {int(str(port).rsplit(":", 1)[1]) for port in compose[run.GATEWAY]["ports"]}
    # Each app process is scraped once: the gateway's probe server (9100) shows the same registry as 8000.
    discovered = [target for job in scrape_configs.values() if "dns_sd_configs" in job for target in dns_targets(job)]
    assert len(discovered) == len(set(discovered)) == len(app_names)


def test_rabbitmq_queue_depth_comes_from_its_prometheus_plugin_per_queue(compose, scrape_configs):
    job = scrape_configs["rabbitmq"]
    assert job["metrics_path"] == "/metrics/per-object"  # plain /metrics sums every queue into one series
    (block,) = job["static_configs"]
    assert block["targets"] == [f"rabbitmq:{RABBITMQ_PROMETHEUS_PORT}"]
    source, read_only = mounts(compose["rabbitmq"])["/etc/rabbitmq/enabled_plugins"]
    assert read_only and source.startswith("./")
    plugins = read(source[2:]).strip()
    assert re.fullmatch(r"\[[a-z_, ]+\]\.", plugins), plugins  # an Erlang list term, ended by a full stop
    assert set(re.findall(r"[a-z_]+", plugins)) == {"rabbitmq_management", "rabbitmq_prometheus"}


def test_prometheus_reads_the_repo_s_config_read_only_and_publishes_no_port(compose):
    spec = compose["prometheus"]
    assert spec["image"].startswith("prom/prometheus:")
    assert mounts(spec)["/etc/prometheus/prometheus.yml"] == (f"./{PROMETHEUS_CONFIG}", True)
    assert "command" not in spec  # the image's own flags read exactly that file
    assert "ports" not in spec and "container_name" not in spec


def test_promtool_accepts_the_config():
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip(
            "promtool not installed (Debian: apt-get install prometheus): config checked by the parser tests only"
        )
    result = subprocess.run(
        [promtool, "check", "config", os.path.join(ROOT, PROMETHEUS_CONFIG)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr


# --- Tracing ------------------------------------------------------------------------------------------------


def test_every_app_container_sends_spans_to_jaeger_which_shows_them_on_loopback_only(compose, app_names):
    for name in app_names:
        assert compose[name]["environment"]["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://jaeger:4318", name
    jaeger = compose["jaeger"]
    assert jaeger["image"].startswith("jaegertracing/all-in-one:")
    assert jaeger["ports"] == ["127.0.0.1:${JAEGER_UI_PORT:-16686}:16686"]  # OTLP 4318: compose network only
    assert "container_name" not in jaeger


# --- Grafana: container and secret --------------------------------------------------------------------------


def test_grafana_is_on_loopback_without_anonymous_access_and_its_password_is_a_generated_file(compose):
    spec = compose["grafana"]
    env = spec["environment"]
    assert spec["image"].startswith("grafana/grafana:")
    assert "container_name" not in spec
    assert spec["ports"] == ["127.0.0.1:${GRAFANA_PORT:-3000}:3000"]
    assert env["GF_AUTH_ANONYMOUS_ENABLED"] == "false" and env["GF_USERS_ALLOW_SIGN_UP"] == "false"
    # No password in the file: only the path of the one the secrets service made.
    assert not [key for key in env if "PASSWORD" in key and not key.endswith("__FILE")]
    (file_name,) = make_secrets.layout({name: "x" for name in make_secrets.raw_names()})["grafana"]
    assert env["GF_SECURITY_ADMIN_PASSWORD__FILE"] == f"/run/cartmesh/grafana/{file_name}"
    assert file_name == "GF_SECURITY_ADMIN_PASSWORD"  # `<variable>__FILE` names the file of <variable>
    assert secrets_mounts(spec) == {"secrets-grafana": ("/run/cartmesh/grafana", True)}
    assert spec["depends_on"] == {"secrets": {"condition": "service_completed_successfully"}}
    assert compose["secrets"]["environment"]["GRAFANA_ADMIN_PASSWORD"] == "${GRAFANA_ADMIN_PASSWORD:-}"


def test_the_grafana_password_is_made_for_grafana_s_uid_and_rotates_alone(tmp_path):
    result = generate(tmp_path)
    assert result.returncode == 0, result.stderr
    first = contents(tmp_path)
    assert set(os.listdir(tmp_path / "grafana")) == {"GF_SECURITY_ADMIN_PASSWORD"}
    assert first["grafana/GF_SECURITY_ADMIN_PASSWORD"] == first["raw/GRAFANA_ADMIN_PASSWORD"]
    assert len(first["raw/GRAFANA_ADMIN_PASSWORD"]) >= 32
    assert not any(
        "GRAFANA" in key or "GF_" in key
        for name, files in make_secrets.layout({n: "x" for n in make_secrets.raw_names()}).items()
        if name != "grafana"
        for key in files
    ), "only grafana/ holds the Grafana password"
    if os.geteuid() == 0:
        assert os.stat(tmp_path / "grafana").st_uid == 472  # the grafana image's user
    rotated = generate(tmp_path, "--rotate", "GRAFANA_ADMIN_PASSWORD")
    assert rotated.returncode == 0, rotated.stderr
    assert "grafana cli" in rotated.stdout  # Grafana keeps its stored password: the operator is told
    after = contents(tmp_path)
    assert {name for name in first if first[name] != after[name]} == {
        "raw/GRAFANA_ADMIN_PASSWORD",
        "grafana/GF_SECURITY_ADMIN_PASSWORD",
    }


# --- Grafana: provisioning and the dashboard ----------------------------------------------------------------


def test_provisioning_files_parse_and_point_at_prometheus_and_the_mounted_dashboards(compose, dashboard):
    grafana_mounts = mounts(compose["grafana"])
    assert grafana_mounts["/etc/grafana/provisioning"] == (f"./{PROVISIONING}", True)
    (datasource,) = load_yaml(f"{PROVISIONING}/datasources/prometheus.yml")["datasources"]
    assert (datasource["type"], datasource["url"]) == ("prometheus", "http://prometheus:9090")
    assert "prometheus" in compose
    (provider,) = load_yaml(f"{PROVISIONING}/dashboards/cartmesh.yml")["providers"]
    assert provider["type"] == "file"
    path = provider["options"]["path"]
    assert grafana_mounts[path] == (f"./{os.path.dirname(DASHBOARD)}", True)
    assert os.listdir(os.path.join(ROOT, os.path.dirname(DASHBOARD))) == [os.path.basename(DASHBOARD)]
    # Every panel and query of the dashboard asks the provisioned data source, by its uid.
    for panel in panels(dashboard):
        assert panel["datasource"] == {"type": "prometheus", "uid": datasource["uid"]}, panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == datasource["uid"], panel["title"]


def panels(dashboard):
    """The dashboard's panels that query something (rows excluded), nested ones included."""
    found = []
    for panel in dashboard["panels"]:
        found += [panel] if panel["type"] != "row" else []
        found += panel.get("panels", [])
    return found


def expressions(dashboard):
    """Every PromQL expression of the dashboard's panels, and the metric each template variable lists."""
    found = [target["expr"] for panel in panels(dashboard) for target in panel["targets"]]
    for variable in dashboard.get("templating", {}).get("list", []):
        query = variable["query"]["query"] if isinstance(variable["query"], dict) else variable["query"]
        found += re.findall(r"label_values\(\s*([a-zA-Z_:][\w:]*)\s*,", query)
    return found


PROMQL_KEYWORDS = {
    "and",
    "or",
    "unless",
    "bool",
    "offset",
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "inf",
    "nan",
}


def metric_names(expr):
    """The metric names a PromQL expression selects: what is left once label matchers, ranges, grouping
    clauses, numbers, function calls and keywords are taken out."""
    text = re.sub(r"\{[^}]*\}", " ", expr)
    text = re.sub(r"\[[^\]]*\]", " ", text)
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    text = re.sub(r"(?<![\w:])\d+(\.\d+)?(e[+-]?\d+)?", " ", text)
    names = set()
    for match in re.finditer(r"[a-zA-Z_:][\w:]*", text):
        if re.match(r"\s*\(", text[match.end() :]) or match.group().lower() in PROMQL_KEYWORDS:
            continue
        names.add(match.group())
    return names


def test_metric_names_are_found_in_an_expression():
    expr = (
        'histogram_quantile(0.95, sum by (service, le) (rate(a_seconds_bucket{service=~"$service", '
        'outcome="error"}[$__rate_interval]))) / on (service) group_left(x) sum without (le) (b_total) > bool 1'
    )
    assert metric_names(expr) == {"a_seconds_bucket", "b_total"}
    assert metric_names("sum(rabbitmq_queue_messages_ready) or vector(0)") == {"rabbitmq_queue_messages_ready"}


def documented_metrics():
    """(names, prefixes) of the metrics table of docs/OBSERVABILITY.md; histograms bring their series."""
    text = read("docs/OBSERVABILITY.md")
    section = text.split("## Metrics", 1)[1].split("\n## ", 1)[0]
    names, prefixes = set(), set()
    for line in section.splitlines():
        cells = [cell.strip() for cell in line.split("|")[1:-1]]
        if not cells or not cells[0].startswith("`"):
            continue
        for name in re.findall(r"`([a-z_*]+)`", cells[0]):
            if name.endswith("*"):
                prefixes.add(name[:-1])
            elif len(cells) > 1 and cells[1] == "histogram":
                names |= {f"{name}_bucket", f"{name}_sum", f"{name}_count"}
            else:
                names.add(name)
    return names, prefixes


def test_the_dashboard_asks_only_for_documented_metrics(dashboard):
    names, prefixes = documented_metrics()
    # The table really was read: the names the dashboard needs most are in it.
    assert {
        "cartmesh_entrypoint_calls_total",
        "cartmesh_entrypoint_duration_seconds_bucket",
        "cartmesh_workers_in_flight",
    } <= names
    used = set()
    for expr in expressions(dashboard):
        used |= metric_names(expr)
    assert used, "no metric found in the dashboard"
    unknown = {name for name in used if name not in names and not name.startswith(("rabbitmq_", *prefixes))}
    assert not unknown, f"not in docs/OBSERVABILITY.md: {sorted(unknown)}"


def test_the_dashboard_has_the_panels_an_operator_needs(dashboard):
    assert dashboard["uid"] and dashboard["title"]
    ids = [
        panel["id"] for panel in dashboard["panels"] + [p for row in dashboard["panels"] for p in row.get("panels", [])]
    ]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    found = {}
    for panel in panels(dashboard):
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            found.setdefault(panel["title"], []).append(re.sub(r"\s+", " ", target["expr"]))

    def panel_with(*patterns):
        """Titles of the panels having an expression that matches every pattern."""
        return [
            title
            for title, exprs in found.items()
            if any(all(re.search(pattern, expr) for pattern in patterns) for expr in exprs)
        ]

    per_entrypoint = r"by \((service, )?entrypoint"
    assert panel_with(r"rate\(cartmesh_entrypoint_calls_total\{[^}]*\}", per_entrypoint), "request rate"
    assert panel_with(r'cartmesh_entrypoint_calls_total\{[^}]*outcome="error"', r"\) / sum", per_entrypoint), (
        "error rate"
    )
    for quantile in ("0.5", "0.95", "0.99"):
        assert panel_with(
            rf"histogram_quantile\({quantile},",
            r"by \(service, entrypoint, le\)",
            r"cartmesh_entrypoint_duration_seconds_bucket",
        ), f"latency quantile {quantile} per entrypoint"
    assert panel_with(r"rabbitmq_queue_messages_ready", r"by \(queue\)"), "queue depth"
    assert panel_with(r"cartmesh_workers_in_flight"), "in-flight workers"
