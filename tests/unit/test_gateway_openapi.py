"""/openapi.json is generated from the route table: same paths and methods, the models' schemas, no dangling refs,
links between the operations, the rules a schema cannot state; docs/openapi.json is that document, committed."""

from gateway_http.openapi import DOCUMENT_PATH, ERROR_RESPONSES, document_text
from gateway_http.routes import OPENAPI, ROUTES
from gateway_http.server import _REFUSALS

HTTP_METHODS = {"get", "put", "post", "delete", "options", "head", "patch", "trace"}


def refs(node):
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref":
                yield value
            else:
                yield from refs(value)
    elif isinstance(node, list):
        for item in node:
            yield from refs(item)


def resolve(document, ref):
    node = document
    for part in ref.removeprefix("#/").split("/"):
        node = node[part]
    return node


def test_every_route_and_nothing_else_is_described():
    assert OPENAPI["openapi"] == "3.1.0"
    described = {(method.upper(), path) for path, operations in OPENAPI["paths"].items() for method in operations}
    assert described == {(route.method, route.path) for route in ROUTES}
    assert all(set(operations) <= HTTP_METHODS for operations in OPENAPI["paths"].values())
    operation_ids = [op["operationId"] for ops in OPENAPI["paths"].values() for op in ops.values()]
    assert len(operation_ids) == len(set(operation_ids))


def test_every_reference_resolves_and_every_model_is_present():
    for ref in refs(OPENAPI):
        assert ref.startswith("#/components/"), ref
        resolve(OPENAPI, ref)
    schemas = OPENAPI["components"]["schemas"]
    for route in ROUTES:
        for model in (route.body, route.response):
            if model is not None:
                assert model.__name__ in schemas, model
    assert set(schemas["ErrorEnvelope"]["required"]) == {"error"}
    assert set(schemas["ErrorBody"]["required"]) == {"code", "message"}


def test_operations_carry_auth_parameters_bodies_and_errors():
    for route in ROUTES:
        operation = OPENAPI["paths"][route.path][route.method.lower()]
        responses = operation["responses"]
        assert str(route.status) in responses
        assert (operation["security"] == []) == (route.auth == "none")
        assert ("401" in responses) == (route.auth != "none" or 401 in route.errors)
        assert ("403" in responses) == (route.auth == "admin")
        path_names = [p["name"] for p in operation.get("parameters", []) if p["in"] == "path"]
        assert path_names == route.path_params
        assert ("404" in responses) == bool(route.path_params)
        if route.body is None:
            assert "requestBody" not in operation
        else:
            body = operation["requestBody"]
            assert body["required"] is not route.empty_body
            assert body["content"]["application/json"]["schema"] == {
                "$ref": f"#/components/schemas/{route.body.__name__}"
            }
            assert {"400", "413", "415", "422"} <= set(responses)
        for status, response in responses.items():
            if status.startswith(("4", "5")) and "$ref" in response:
                schema = resolve(OPENAPI, response["$ref"])["content"]["application/json"]["schema"]
                assert schema == {"$ref": "#/components/schemas/ErrorEnvelope"}
    assert OPENAPI["components"]["securitySchemes"]["bearerAuth"]["scheme"] == "bearer"


def test_schemas_carry_the_contract_rules():
    schemas = OPENAPI["components"]["schemas"]
    assert schemas["Registration"]["properties"]["password"] | {"title": None} == {
        "type": "string",
        "minLength": 8,
        "maxLength": 128,
        "pattern": "^[^\\x00]*$",
        "title": None,
    }
    assert schemas["LineQuantity"]["properties"]["quantity"]["minimum"] == 0
    assert schemas["NewLine"]["properties"]["sku"]["pattern"] == "^[A-Za-z0-9_-]{1,64}$"
    assert schemas["NewProduct"]["additionalProperties"] is False
    limit = next(p for p in OPENAPI["paths"]["/products"]["get"]["parameters"] if p["name"] == "limit")
    assert (limit["in"], limit["schema"]["type"], limit["schema"]["minimum"], limit["schema"]["maximum"]) == (
        "query",
        "integer",
        1,
        100,
    )
    cart = OPENAPI["paths"]["/carts/{id}"]["get"]["parameters"][0]
    assert cart["schema"] == {"type": "string", "format": "uuid"}
    health = OPENAPI["paths"]["/health"]["get"]["responses"]
    assert health["503"]["content"] == health["200"]["content"]  # /health's 503 is its own body, not an error
    assert "content" not in OPENAPI["paths"]["/carts/{id}"]["delete"]["responses"]["204"]


def test_refusals_any_route_can_meet_and_the_idempotency_header_are_described():
    for route in ROUTES:
        responses = OPENAPI["paths"][route.path][route.method.lower()]["responses"]
        assert {"408", "414", "429", "431"} <= set(responses), route.path  # before routing, or rate limited
    assert OPENAPI["components"]["responses"]["rate_limited"]["headers"]["Retry-After"]["schema"] == {
        "type": "integer",
        "minimum": 1,
    }
    checkout = OPENAPI["paths"]["/carts/{id}/checkout"]["post"]["parameters"]
    key = next(p for p in checkout if p["in"] == "header")
    assert (key["name"], key["required"], key["schema"]["pattern"]) == (
        "Idempotency-Key",
        False,
        "^[\\x21-\\x7e]{1,255}$",
    )


def test_the_committed_document_is_the_generated_one():
    committed = DOCUMENT_PATH.read_text(encoding="utf-8")
    assert committed == document_text(OPENAPI), "docs/openapi.json is stale: run `make openapi` and commit it"


def operations_by_id():
    return {op["operationId"]: (path, op) for path, ops in OPENAPI["paths"].items() for op in ops.values()}


def test_links_lead_from_every_id_an_answer_carries_to_every_operation_taking_it():
    operations = operations_by_id()
    linked = set()
    for path, ops in OPENAPI["paths"].items():
        for operation in ops.values():
            for status, response in operation["responses"].items():
                for name, link in response.get("links", {}).items():
                    assert status.startswith("2"), (path, status)
                    target_path, _ = operations[link["operationId"]]
                    assert name == link["operationId"]
                    [(parameter, expression)] = link["parameters"].items()
                    assert "{%s}" % parameter in target_path
                    pointer = expression.removeprefix("$response.body#/")
                    schema = resolve(OPENAPI, response["content"]["application/json"]["schema"]["$ref"])
                    assert pointer in schema["required"], (path, name)  # every answer of that shape carries it
                    linked.add(link["operationId"])
    # Every operation on a cart, an order or a product can be reached with an id an earlier answer gave.
    assert linked == {operation_id for operation_id, (path, _) in operations.items() if "{" in path}
    new_cart = OPENAPI["paths"]["/carts"]["post"]["responses"]["201"]["links"]
    assert set(new_cart) == {"get_cart", "delete_cart", "add_item", "set_item", "remove_item", "checkout"}
    checkout = OPENAPI["paths"]["/carts/{id}/checkout"]["post"]["responses"]
    assert set(checkout["202"]["links"]) == set(checkout["200"]["links"]) == {"get_order", "cancel_order"}
    assert checkout["202"]["links"]["cancel_order"]["parameters"] == {"id": "$response.body#/id"}


def test_rules_a_schema_cannot_state_are_named_on_their_operations():
    refusing = {(route.method, route.path): route.refusals for route in ROUTES if route.refusals}
    assert set(refusing) == {
        ("POST", "/carts"),
        ("POST", "/carts/{id}/items"),
        ("PUT", "/carts/{id}/items/{sku}"),
        ("POST", "/carts/{id}/checkout"),
    }
    for (method, path), refusals in refusing.items():
        description = OPENAPI["paths"][path][method.lower()]["responses"]["422"]["description"]
        for code, when in refusals:
            assert f"`{code}` when {when}" in description
    assert {code for refusals in refusing.values() for code, _ in refusals} == {
        "unknown_product",
        "validation_error",
        "empty_cart",
    }
    checkout = OPENAPI["paths"]["/carts/{id}/checkout"]["post"]["responses"]["422"]["description"]
    assert "Luhn" in checkout


def test_the_prose_contract_names_every_route_status_and_error_code():
    """docs/API.md is written by hand: it must still name what the code can answer."""
    prose = (DOCUMENT_PATH.parent / "API.md").read_text(encoding="utf-8")
    for route in ROUTES:
        assert f"`{route.method} {route.path}" in prose, route.path
        for code, _ in route.refusals:
            assert f"`{code}`" in prose
    for status, (code, _) in ERROR_RESPONSES.items():
        assert f"| {status} | `{code}` |" in prose, code
    for status, (code, _) in _REFUSALS.items():
        assert f"| {status} | `{code}` |" in prose, code
    for header in ("X-Request-ID", "Idempotency-Key", "Retry-After", "Cache-Control", "WWW-Authenticate", "Allow"):
        assert f"`{header}`" in prose, header
