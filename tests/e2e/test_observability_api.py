"""Observability, end to end: the request id across services' JSON log lines, no secret in any line, the
gateway's /metrics by route template, and entrypoint counters that move by outcome through the real services.

The whole system runs in this process (tests/e2e/conftest.py), so the gateway's /metrics shows every service's
metrics and one logging handler sees every service's lines.
"""

import json
import logging
import uuid

import pytest
from prometheus_client.parser import text_string_to_metric_families

from services.common.logs import Formatter
from tests.waiting import wait_until

GOOD_CARD = "4242424242424242"


class JsonLines(logging.Handler):
    """Every record, formatted as the services' JSON log lines."""

    def __init__(self):
        super().__init__(level=logging.DEBUG)
        self.setFormatter(Formatter(log_format="json"))
        self.lines = []

    def emit(self, record):
        self.lines.append(self.format(record))

    def records(self):
        return [json.loads(line) for line in self.lines]


@pytest.fixture
def log_lines():
    """The JSON lines every logger writes during the test, DEBUG included."""
    handler = JsonLines()
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        yield handler
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


def scrape(client):
    """{(name, frozenset(labels)): value} of the gateway's /metrics (the whole process's registry)."""
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/plain")
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def value(samples, name, **labels):
    return samples.get((name, frozenset(labels.items())), 0.0)


def stocked(admin):
    sku = f"O-{uuid.uuid4().hex[:10]}"
    response = admin.post("/products", json={"sku": sku, "name": f"Thing {sku}", "price_cents": 700, "stock": 5})
    assert response.status_code == 201, response.text
    return sku


def test_one_requests_id_is_on_the_json_lines_of_every_service_it_reaches(user, admin, log_lines):
    sku = stocked(admin)
    cart = user.post("/carts", json={"items": [{"sku": sku, "quantity": 1}]}).json()
    request_id = f"trace-me-{uuid.uuid4().hex}"

    # A checkout reaches four services within the request: payments, orders, carts and (for prices) catalog.
    response = user.post(
        f"/carts/{cart['id']}/checkout",
        json={"payment": {"card_number": GOOD_CARD}},
        headers={"X-Request-ID": request_id},
    )

    assert response.status_code == 202 and response.headers["X-Request-ID"] == request_id

    def ends():
        return {
            (record["service"], record["entrypoint"], record["outcome"])
            for record in log_lines.records()
            if record["request_id"] == request_id and record["logger"] == "cartmesh.worker"
        }

    # The worker-end lines come after the answer: wait for the backends', with a deadline.
    wait_until(
        lambda: (
            {
                ("payments", "register_card", "success"),
                ("orders", "checkout", "success"),
                ("carts", "checkout_cart", "success"),
                ("catalog", "get_products", "success"),
            }
            <= ends()
        )
    )
    mine = [record for record in log_lines.records() if record["request_id"] == request_id]
    assert {"gateway", "payments", "orders", "carts", "catalog"} <= {record["service"] for record in mine}
    assert all(isinstance(record["duration"], float) for record in mine if record["logger"] == "cartmesh.worker")


def test_no_password_token_or_card_number_in_any_log_line_of_a_checkout(system, admin, log_lines):
    sku = stocked(admin)
    email, password = f"secret-{uuid.uuid4().hex[:8]}@example.com", f"pw-{uuid.uuid4().hex}"
    client = system.client()
    assert client.post("/auth/register", json={"email": email, "password": password}).status_code == 201
    user = client.login(email, password)
    cart = user.post("/carts", json={"items": [{"sku": sku, "quantity": 1}]}).json()
    checkout = user.post(f"/carts/{cart['id']}/checkout", json={"payment": {"card_number": GOOD_CARD}})
    assert checkout.status_code == 202, checkout.text
    order_id = checkout.json()["id"]
    wait_until(lambda: user.get(f"/orders/{order_id}").json()["status"] != "pending", timeout=20)
    # A bad login and a malformed card go through the error paths too.
    assert client.post("/auth/token", json={"email": email, "password": password + "x"}).status_code == 401
    bad = user.post(f"/carts/{cart['id']}/checkout", json={"payment": {"card_number": "4242424242424241"}})
    assert bad.status_code in (409, 422)

    text = "\n".join(log_lines.lines)
    assert len(log_lines.lines) > 20 and order_id in text  # the flow was logged: the check below means something
    for secret in (
        password,
        user.token,
        GOOD_CARD,
        "4242424242424241",
        system.jwt_secret,
        system.admin_password,
        admin.token,
    ):
        assert secret not in text
    assert "4242 4242" not in text and "424242424242" not in text


def test_gateway_metrics_are_labelled_by_route_template_not_path(user):
    cart = user.post("/carts", json={}).json()
    assert user.get(f"/carts/{cart['id']}").status_code == 200
    assert user.get("/no/such/path").status_code == 404

    response = user.get("/metrics")
    samples = scrape(user)

    assert (
        value(
            samples, "cartmesh_http_requests_total", service="gateway", method="GET", route="/carts/{id}", status="200"
        )
        >= 1
    )
    assert (
        value(samples, "cartmesh_http_requests_total", service="gateway", method="GET", route="unmatched", status="404")
        >= 1
    )
    assert cart["id"] not in response.text and "/no/such/path" not in response.text


def test_entrypoint_counters_move_by_outcome_through_the_real_services(own_system):
    system, user = own_system, own_system.new_user()  # its own: this test stops carts
    cart = user.post("/carts", json={}).json()
    calls = "cartmesh_entrypoint_calls_total"
    carts_get = dict(service="carts", entrypoint="get_cart", kind="rpc")
    gateway_handle = dict(service="gateway", entrypoint="handle", kind="http")
    before = scrape(user)

    assert user.get(f"/carts/{cart['id']}").status_code == 200
    assert user.get(f"/carts/{uuid.uuid4()}").status_code == 404  # NotFound: one of carts' expected errors
    carts = system.stop("carts")
    try:  # nothing answers for carts: the gateway's worker answers 503, an error
        assert user.get(f"/carts/{cart['id']}").status_code == 503
    finally:
        system.start(carts)

    def moved(name, labels, count=1, since=before):
        return value(scrape(user), name, **labels) - value(since, name, **labels) >= count

    # The worker-end counters move after the answer has left: wait for them, with a deadline.
    wait_until(
        lambda: (
            moved(calls, dict(carts_get, outcome="success")) and moved(calls, dict(carts_get, outcome="expected_error"))
        )
    )
    assert moved(calls, dict(gateway_handle, outcome="success"))
    assert moved(calls, dict(gateway_handle, outcome="expected_error"))
    assert moved(calls, dict(gateway_handle, outcome="error"))
    assert moved("cartmesh_entrypoint_duration_seconds_count", carts_get, 2)
    assert moved("cartmesh_rpc_client_failures_total", dict(service="gateway", target="carts", reason="unavailable"))
    assert moved("cartmesh_rpc_client_duration_seconds_count", dict(service="gateway", target="carts"), 3)
    assert user.get(f"/carts/{cart['id']}").status_code == 200  # carts is back
