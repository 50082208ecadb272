"""Fuzzing the running system from its own description: schemathesis reads GET /openapi.json and, for every
operation in it, generates requests that follow the schema (positive) and requests that break it (negative),
sends them over HTTP with a real user's or the admin's bearer token, and checks every answer:

- no 5xx (`not_a_server_error`);
- the status is one the operation documents, the content type and the body match the documented schema
  (`status_code_conformance`, `content_type_conformance`, `response_schema_conformance`);
- schema-breaking requests are refused (`negative_data_rejection`), auth is enforced where declared
  (`ignored_auth`: the same request without a token and with a forged one), other methods answer 405 with
  `Allow` (`unsupported_method`);
- every schema-valid request is accepted (`positive_data_acceptance`), or refused with a 422 that the document
  names for its operation: a rule the schema cannot state, such as an unknown sku or a card failing the Luhn
  check (`documented_refusals`; never a refusal of the gateway's own request models);
- and every non-2xx answer is exactly the error envelope.

Two runs use those checks:

- per operation and mode (`test_fuzz_operation`): half of the generated cases (a hypothesis draw, so it shrinks
  and replays like the rest) get real ids instead of random ones: a fresh cart of the user with one line of a real
  product, the user's order, a real sku in paths and bodies and, for checkout, a card that pays. So the fuzzing
  reaches the services and their databases, not only the gateway's 404s;
- stateful (`test_stateful_links_reach_every_operation`): schemathesis follows the document's links, so a cart
  made in one step is read, filled, emptied, checked out and deleted by the next ones, and the order its checkout
  placed is read and cancelled. Skus in carts are the real product's and cards pay (random ones are the first
  run's business), so the chains get past the catalog; every operation taking an id is reached with an id an
  earlier answer gave.

Runs on one database backend: PostgreSQL when TEST_POSTGRES_URL is set (what production runs; stricter than
SQLite about NUL bytes, integer ranges and text), else SQLite. The gateway, which this tests, is the same on both.
Reproducible: hypothesis runs from a fixed seed (SEED) and keeps no example database.
"""

import collections

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, assume, given, seed, settings
from hypothesis import strategies as st
from hypothesis.errors import Flaky
from schemathesis.config import SchemathesisConfig
from schemathesis.core.parameters import ParameterLocation
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
# The stateful run: scenarios of at most so many steps, each step one request; at most so many runs of them.
STATEFUL_SCENARIOS = 100
STATEFUL_RUNS = 10
STATEFUL_SETTINGS = settings(
    max_examples=STATEFUL_SCENARIOS,
    stateful_step_count=10,
    phases=[Phase.generate],  # no shrinking: a shorter replay would meet a system in another state
    database=None,
    deadline=None,
    suppress_health_check=list(HealthCheck),
)
SEED = 20261203
GOOD_CARD = "4242424242424242"
# The message of a 422 raised by the gateway's own request models (router.py), as opposed to a rule of a service
# the schema cannot state (Route.refusals: an unknown sku, a line over 999, an empty cart, the Luhn check).
MODEL_REFUSALS = ("The request body breaks the rules", "The query string breaks the rules")
ROUTE_OF = {(route.method, route.path): route for route in ROUTES}


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

    def headers_for(self, route, user=None):
        """The admin's bearer token for admin routes, the user's (`user`, else the world's) for the others that
        need one."""
        if route.auth == NONE:
            return {}
        return {"Authorization": f"Bearer {(self.admin if route.auth == ADMIN else user or self.user).token}"}

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
        """Put real ids (and the user's real credentials, a real sku, a card that pays) into `case` where it has a
        place for them (only where the case is schema-valid)."""
        params = case.path_parameters
        if params is not None:
            if "id" in params:
                params["id"] = self.order_id if case.path.startswith("/orders") else self.new_cart()
            if "sku" in params:
                params["sku"] = self.sku
        self.make_values_real(case)

    def make_values_real(self, case):
        """A real sku in a cart's lines and paths, a card that pays, the user's credentials; ids are left alone."""
        params = case.path_parameters
        if params is not None and "sku" in params and case.path.startswith("/carts"):
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
    yield schema, World(system)
    system.settled_audit()  # the orders placed here finish their sagas before other modules count rows


def test_the_served_description_is_the_generated_one(system, fuzzed):
    """What is fuzzed is what the code generates (routes.OPENAPI), not a stale copy."""
    assert system.client().get("/openapi.json").json() == OPENAPI


def documented_refusals(ctx, response, case):
    """`positive_data_acceptance`, except that a schema-valid request may get a 422 its operation's document names
    (Route.refusals): with one of those codes, and never from the gateway's own request models."""
    route = ROUTE_OF[(case.method, case.path)]
    if response.status_code == 422 and route.refusals and case.meta.generation.mode.is_positive:
        error = response.json()["error"]
        assert error["code"] in {code for code, _ in route.refusals}, response.text
        assert not error["message"].startswith(MODEL_REFUSALS), response.text
        return True
    return positive_data_acceptance(ctx, response, case)


def error_envelope(ctx, response, case):
    """A non-2xx answer is exactly {"error": {"code", "message", "details"?}}."""
    if response.status_code < 400:
        return True
    body = response.json()
    assert set(body) == {"error"}, response.text
    assert set(body["error"]) <= {"code", "message", "details"}, response.text
    assert isinstance(body["error"]["code"], str) and body["error"]["code"], response.text
    assert isinstance(body["error"]["message"], str) and body["error"]["message"], response.text
    return True


def not_rate_limited(ctx, response, case):
    assert response.status_code != 429, "the e2e gateway must run without rate limits (GATEWAY_TEST_SETTINGS)"
    return True


CHECKS = {
    "additional_checks": [documented_refusals, error_envelope, not_rate_limited],
    "excluded_checks": [positive_data_acceptance],
}


@pytest.mark.parametrize("route, mode", CASES)
def test_fuzz_operation(fuzzed, route, mode):
    schema, world = fuzzed
    positive = mode == "positive"
    strategy = schema[route.path][route.method].as_strategy(GenerationMode(mode))
    headers = world.headers_for(route)
    examples = SLOW_EXAMPLES.get((route.method, route.path, mode), MAX_EXAMPLES)
    statuses = []

    @seed(SEED)
    @settings(max_examples=examples, database=None, deadline=None, suppress_health_check=list(HealthCheck))
    @given(case=strategy, real=st.booleans())
    def fuzz(case, real):
        # A query parameter without a name, or with an empty list of values, cannot be sent: the HTTP client drops
        # it, and what is left may be valid.
        assume(positive or not any(key == "" or value == [] for key, value in (case.query or {}).items()))
        if positive and real:
            world.make_real(case)
        response = case.call_and_validate(headers=headers, **CHECKS)
        # In negative mode a case may still break nothing (an optional body left out): only count those that do.
        broken = any(info.mode.is_negative for info in case.meta.components.values())
        statuses.append((response.status_code, broken))

    fuzz()
    # Enough examples ran (an operation without input has exactly one), and schema-valid requests with real ids
    # got through to a success: the fuzzing reached the services, not only the gateway's refusals.
    assert len(statuses) >= (examples if _has_input(route) else 1)
    if positive:
        assert any(200 <= status < 300 for status, _ in statuses), sorted(set(statuses))
    else:
        refused = [400 <= status < 500 for status, broken in statuses if broken]
        assert refused and all(refused), sorted(set(statuses))


def test_stateful_links_reach_every_operation(fuzzed):
    """Scenarios of up to 10 requests that follow the document's links, with every check of
    `test_fuzz_operation`; then every operation that takes an id was reached with one an earlier answer gave
    (its link applied) and answered for it: a success, or a 409 for a state that forbids the change (an order
    still pending cannot be cancelled). Afterwards the cross-service audit finds nothing wrong."""
    schema, world = fuzzed
    user = world.system.new_user()  # its own: the first run left the world's user hundreds of carts to list
    calls = collections.defaultdict(collections.Counter)  # operation -> Counter of (linked, status)
    failures = []  # (curl command, failure): kept here, as a replay may not meet the same state again
    scenarios = []

    class Workflow(schema.as_state_machine()):
        def setup(self):
            scenarios.append(self)

        def step(self, input):
            self.linked = input.transition is not None and any(
                location == ParameterLocation.PATH for location, _ in input.applied_parameters
            )
            return super().step(input)

        def before_call(self, case):
            if not case.meta.generation.mode.is_positive:
                return  # a real value could repair what the case breaks on purpose
            world.make_values_real(case)
            if (case.method, case.path) == ("POST", "/products"):
                # Generated skus repeat from one scenario to the next, and a taken one is only a 409: each new
                # product gets a sku of its own, so that the links from its answer are followed.
                case.body["sku"] = f"S{len(scenarios)}-{case.body['sku']}"[:64]

        def get_call_kwargs(self, case):
            return {"headers": world.headers_for(ROUTE_OF[(case.method, case.path)], user)}

        def after_call(self, response, case):
            super().after_call(response, case)
            calls[f"{case.method} {case.path}"][(self.linked, response.status_code)] += 1

        def validate_response(self, response, case, additional_checks=(), **kwargs):
            try:
                case.validate_response(response, transport_kwargs=kwargs or None, recorder=self.recorder, **CHECKS)
            except Exception as failure:
                failures.append((case.as_curl_command(headers=dict(response.request.headers)), failure))
                raise

    taking_ids = {f"{route.method} {route.path}" for route in ROUTES if route.path_params}

    def answered():
        return {
            operation
            for operation, outcomes in calls.items()
            if any(linked and (200 <= status < 300 or status == 409) for linked, status in outcomes)
        }

    # The system's state moves on between scenarios, so hypothesis may find that replaying a step no longer
    # draws what it drew before (Flaky) and end a run early; as schemathesis itself does, another run from the
    # next seed goes on until enough scenarios have run, and until every operation taking an id has been reached
    # through a link (which scenarios reach deep chains, checkout then cancel, depends on what the system answered
    # before: a run from another seed walks other chains).
    for attempt in range(STATEFUL_RUNS):
        if failures or (len(scenarios) >= STATEFUL_SCENARIOS and taking_ids <= answered()):
            break
        Workflow.rule_order_seed = SEED + attempt
        try:
            seed(SEED + attempt)(Workflow).run(settings=STATEFUL_SETTINGS)
        except Flaky:
            pass
    assert not failures, "\n\n".join(f"{curl}\n{failure}" for curl, failure in failures)
    assert len(scenarios) >= STATEFUL_SCENARIOS
    reached = answered()
    assert taking_ids <= reached, {operation: dict(calls[operation]) for operation in taking_ids - reached}
    report = world.system.settled_audit()  # and whatever the scenarios did, money and stock still add up
    assert report["ok"], report["breaches"]
