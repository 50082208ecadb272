"""Fuzzing the running system from its own description: schemathesis reads GET /openapi.json and, for every
operation in it, generates requests that follow the schema (positive) and requests that break it (negative),
sends them over HTTP with a real user's or the admin's bearer token, and checks every answer:

- no 5xx (`not_a_server_error`);
- the status is one the operation documents, the content type and the body match the documented schema
  (`status_code_conformance`, `content_type_conformance`, `response_schema_conformance`);
- schema-valid requests are accepted and schema-breaking ones refused (`positive_data_acceptance`,
  `negative_data_rejection`), auth is enforced where declared (`ignored_auth`: the same request without a token
  and with a forged one), other methods answer 405 with `Allow` (`unsupported_method`);
- and our own: every non-2xx answer is exactly the error envelope, and the gateway's request models never
  refuse what its published schema allows (the 422 the models raise says "breaks the rules in details.fields").

Half of the generated cases (a hypothesis draw, so it shrinks and replays like the rest) get real ids instead of
random ones: a fresh cart of the user with one line of a real product, the user's order, a real sku in paths
and bodies and, for checkout, a card that pays. So the fuzzing reaches the services and their databases, not
only the gateway's 404s.

Runs on one database backend: PostgreSQL when TEST_POSTGRES_URL is set (what production runs; stricter than
SQLite about NUL bytes, integer ranges and text), else SQLite. The gateway, which this tests, is the same on both.
Reproducible: hypothesis is derandomized (its seed comes from the test), and keeps no example database.
"""

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.config import SchemathesisConfig
from schemathesis.generation import GenerationMode
from schemathesis.specs.openapi.checks import positive_data_acceptance

from conftest import POSTGRES_ADMIN_URL
from gateway_http.auth import ADMIN, NONE
from gateway_http.routes import OPENAPI, ROUTES
from tests.waiting import wait_until

# Examples per operation and mode: 22 operations, 16 of which take input that can be made invalid, so 38 runs and
# about 3,000 generated requests (plus the checks' own probes). Schema-valid credentials cost an argon2 hash each
# (deliberately slow), so those two runs make fewer. An operation without input has exactly one example.
MAX_EXAMPLES = 100
SLOW_EXAMPLES = {("POST", "/auth/register", "positive"): 30, ("POST", "/auth/token", "positive"): 30}
GOOD_CARD = "4242424242424242"
# The message of a 422 raised by the gateway's own request models (router.py), as opposed to a business rule
# of a service (an unknown sku, a line over 999, an empty cart, a card failing the Luhn check).
MODEL_REFUSALS = ("The request body breaks the rules", "The query string breaks the rules")
# Operations whose schema-valid requests can still be refused by a rule the schema cannot state (it depends on
# the catalog, on the cart's state or on the card's checksum): answered 422, but never by the request models.
STATEFUL_422 = {
    ("POST", "/carts"),
    ("POST", "/carts/{id}/items"),
    ("PUT", "/carts/{id}/items/{sku}"),
    ("POST", "/carts/{id}/checkout"),
}


def _has_input(route):
    return bool(route.body or route.query or route.path_params)


CASES = [
    pytest.param(route, mode, id=f"{route.method} {route.path} {mode}")
    for route in ROUTES
    for mode in ("positive", "negative")
    if mode == "positive" or _has_input(route)
]


class World:
    """What the fuzzing works on: tokens of a real user and of the admin, a real product, the user's order, and
    fresh carts on demand. The user is registered here, so that its credentials are known."""

    EMAIL, PASSWORD = "fuzz-user@example.com", "fuzzing password"

    def __init__(self, system):
        self.system = system
        self.admin = system.admin()
        self.user = self._user()
        self.sku = self._product()
        self.order_id = self._order()

    def _user(self):
        anon = self.system.client()
        response = anon.post("/auth/register", json={"email": self.EMAIL, "password": self.PASSWORD})
        assert response.status_code == 201, response.text
        return anon.login(self.EMAIL, self.PASSWORD)

    def token_for(self, route):
        return self.admin.token if route.auth == ADMIN else self.user.token

    def _product(self):
        sku = "FUZZ-REAL"
        response = self.admin.post(
            "/products", json={"sku": sku, "name": "Fuzzed widget", "price_cents": 250, "stock": 1_000_000}
        )
        assert response.status_code == 201, response.text
        return sku

    def new_cart(self):
        response = self.user.post("/carts", json={"items": [{"sku": self.sku, "quantity": 2}]})
        assert response.status_code == 201, response.text
        return response.json()["id"]

    def _order(self):
        """A confirmed order of the user (so that a cancel of it can succeed once)."""
        response = self.user.post(f"/carts/{self.new_cart()}/checkout", json={"payment": {"card_number": GOOD_CARD}})
        assert response.status_code == 202, response.text
        order_id = response.json()["id"]
        wait_until(
            lambda: self.user.get(f"/orders/{order_id}").json()["status"] != "pending",
            timeout=30,
            what=f"order {order_id} settled",
        )
        return order_id

    def make_real(self, case):
        """Put real ids (and the user's real credentials) into `case` where it has a place for them (only where
        the case is schema-valid)."""
        params = case.path_parameters
        if params is not None:
            if "id" in params:
                params["id"] = self.order_id if case.path.startswith("/orders") else self.new_cart()
            if "sku" in params:
                params["sku"] = self.sku
        body = case.body
        if isinstance(body, dict):
            if case.path == "/auth/token" and isinstance(body.get("email"), str):
                body.update(email=self.EMAIL, password=self.PASSWORD)
            if isinstance(body.get("sku"), str):
                body["sku"] = self.sku
            if isinstance(body.get("items"), list):
                for line in body["items"]:
                    if isinstance(line, dict) and isinstance(line.get("sku"), str):
                        line["sku"] = self.sku
            if isinstance(body.get("payment"), dict) and isinstance(body["payment"].get("card_number"), str):
                body["payment"]["card_number"] = GOOD_CARD


@pytest.fixture(scope="module")
def fuzzed(system):
    """(schema loaded from the running gateway's /openapi.json, World)."""
    if system.backend == "sqlite" and POSTGRES_ADMIN_URL:
        pytest.skip("fuzzed on the PostgreSQL system; the gateway under test is the same on both backends")
    schema = schemathesis.openapi.from_url(system.base_url + "/openapi.json", config=SchemathesisConfig())
    schema.config.update(base_url=system.base_url)
    # Tokens are ours (valid ones, sent with every case); `ignored_auth` sends each operation without one and
    # with a forged one. Generated Authorization headers would only hide the body's and the query's negations.
    schema.config.generation.update(with_security_parameters=False)
    # Schema-breaking data may also be refused for its size: a body, a request line or headers over the limit.
    schema.config.checks.negative_data_rejection.expected_statuses += ["413", "414", "431"]
    return schema, World(system)


def test_the_served_description_is_the_generated_one(system, fuzzed):
    """What is fuzzed is what the code generates (routes.OPENAPI), not a stale copy."""
    assert system.client().get("/openapi.json").json() == OPENAPI


def whole_floats_to_integers(value):
    """`value` with every float that is a whole number written as an integer.

    JSON Schema counts 2.0 as an integer, so schemathesis sends it for `"type": "integer"`; the contract
    (API.md: "no strings, floats or booleans") refuses it, and the schema cannot say so. The refusal is tested in
    test_bad_input.py; here integers are sent as integers.
    """
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, list):
        return [whole_floats_to_integers(item) for item in value]
    if isinstance(value, dict):
        return {key: whole_floats_to_integers(item) for key, item in value.items()}
    return value


def assert_envelope(response):
    """A non-2xx answer is exactly {"error": {"code", "message", "details"?}}."""
    if response.status_code < 400:
        return
    body = response.json()
    assert set(body) == {"error"}, response.text
    assert set(body["error"]) <= {"code", "message", "details"}, response.text
    assert isinstance(body["error"]["code"], str) and body["error"]["code"], response.text
    assert isinstance(body["error"]["message"], str) and body["error"]["message"], response.text


@pytest.mark.parametrize("route, mode", CASES)
def test_fuzz_operation(fuzzed, route, mode):
    schema, world = fuzzed
    positive = mode == "positive"
    strategy = schema[route.path][route.method].as_strategy(GenerationMode(mode))
    headers = {} if route.auth == NONE else {"Authorization": f"Bearer {world.token_for(route)}"}
    # A schema-valid request to these may meet a rule the schema cannot state; see STATEFUL_422.
    excluded = [positive_data_acceptance] if (route.method, route.path) in STATEFUL_422 else []
    examples = SLOW_EXAMPLES.get((route.method, route.path, mode), MAX_EXAMPLES)
    statuses = []

    @settings(
        max_examples=examples, derandomize=True, database=None, deadline=None, suppress_health_check=list(HealthCheck)
    )
    @given(case=strategy, real=st.booleans())
    def fuzz(case, real):
        if positive:
            if isinstance(case.body, (dict, list)):
                case.body = whole_floats_to_integers(case.body)
            if real:
                world.make_real(case)
        response = case.call_and_validate(headers=headers, excluded_checks=excluded)
        # In negative mode a case may still break nothing (an optional body left out): only count those that do.
        broken = any(info.mode.is_negative for info in case.meta.components.values())
        statuses.append((response.status_code, broken))
        assert response.status_code != 429, "the e2e gateway must run without rate limits (GATEWAY_TEST_SETTINGS)"
        assert_envelope(response)
        if positive and response.status_code == 422:
            assert not response.json()["error"]["message"].startswith(MODEL_REFUSALS), response.text

    fuzz()
    # Enough examples ran (an operation without input has exactly one), and schema-valid requests with real ids
    # got through to a success: the fuzzing reached the services, not only the gateway's refusals.
    assert len(statuses) >= (examples if _has_input(route) else 1)
    if positive:
        assert any(200 <= status < 300 for status, _ in statuses), sorted(set(statuses))
    else:
        refused = [400 <= status < 500 for status, broken in statuses if broken]
        assert refused and all(refused), sorted(set(statuses))
