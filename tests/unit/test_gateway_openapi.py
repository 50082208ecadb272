"""/openapi.json is generated from the route table: same paths and methods, the models' schemas, no dangling refs."""

from gateway_http.routes import OPENAPI, ROUTES

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
