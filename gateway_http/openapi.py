"""The OpenAPI 3.1 description of a route table: paths and methods from the routes, JSON Schemas from their
pydantic models (`models_json_schema`), one error envelope schema, one bearer security scheme, and links from the
answers that carry an id to the operations that take it.

The document is also committed as docs/openapi.json: `make openapi` (`python -m gateway_http.openapi`) writes it,
and a unit test fails when it differs from what the code generates.
"""

import json
import pathlib
import sys

from pydantic.json_schema import models_json_schema

from gateway_http.auth import ADMIN, NONE
from gateway_http.schemas import HEADER_PARAMS, PATH_PARAMS, Cart, ErrorEnvelope, Order, Product

SECURITY_SCHEME = "bearerAuth"
REF_TEMPLATE = "#/components/schemas/{model}"

# Each error status: its name in components/responses and when the gateway answers it (docs/API.md, Conventions).
ERROR_RESPONSES = {
    400: (
        "bad_request",
        "the body is not valid JSON (UTF-8) or not a JSON object, gives a key twice, holds a lone surrogate, NaN or"
        " Infinity, or nests deeper than 32 levels; or the HTTP request itself is malformed",
    ),
    401: ("unauthorized", "missing, malformed, expired or forged bearer token, or wrong credentials"),
    403: ("forbidden", "authenticated but not allowed"),
    404: ("not_found", "no such resource (or it belongs to someone else)"),
    408: ("request_timeout", "the request (its headers or its body) did not arrive in time"),
    409: ("conflict", "a duplicate, or a state that forbids the change"),
    413: ("payload_too_large", "the body is over the limit"),
    414: ("uri_too_long", "the request line (path and query) is over the limit"),
    415: ("unsupported_media_type", "the body is not application/json"),
    422: ("validation_error", "the request breaks the schema: validation_error, details.fields maps field to reason"),
    429: ("rate_limited", "too many requests from this address or user (or failed logins); see Retry-After"),
    431: ("request_header_fields_too_large", "a header line or all the headers are over the limit"),
    500: ("internal_error", "a bug; the log has the rest"),
    503: ("service_unavailable", "a backend service did not answer"),
    504: ("gateway_timeout", "a backend service answered too late"),
}


# Answers that carry the id other operations take in their path: each success answer of one of these shapes links
# to every operation under the path (the path itself included), filling that parameter from the answer's body (a
# JSON pointer). So a new cart leads to its items and its checkout, a checkout to the order and its cancel. Lists
# are not linked: a runtime expression can only name one item, and a list may be empty.
LINKED_PATHS = {
    Cart: ("/carts/{id}", "id", "/id"),
    Order: ("/orders/{id}", "id", "/id"),
    Product: ("/products/{sku}", "sku", "/sku"),
}

DOCUMENT_PATH = pathlib.Path(__file__).resolve().parent.parent / "docs" / "openapi.json"


def openapi_document(routes, title="Cartmesh API", version="1"):
    """The OpenAPI 3.1 document (a dict) of `routes`."""
    refs, schemas = _schemas(routes)
    paths = {}
    for route in routes:
        paths.setdefault(route.path, {})[route.method.lower()] = _operation(route, refs, routes)
    return {
        "openapi": "3.1.0",
        "info": {"title": title, "version": version},
        "paths": paths,
        "components": {
            "schemas": schemas,
            "responses": _error_responses(refs),
            "securitySchemes": {SECURITY_SCHEME: {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}},
        },
    }


def _schemas(routes):
    """({(model, mode): {"$ref"...}}, {name: JSON Schema}) for every model the routes use."""
    wanted = {(ErrorEnvelope, "serialization")}
    for route in routes:
        if route.body is not None:
            wanted.add((route.body, "validation"))
        if route.response is not None:
            wanted.add((route.response, "serialization"))
    keyed = sorted(wanted, key=lambda pair: (pair[0].__name__, pair[1]))
    refs, top = models_json_schema(keyed, ref_template=REF_TEMPLATE)
    return refs, top.get("$defs", {})


def _operation(route, refs, routes):
    operation = {
        "operationId": route.handler.__name__,
        "summary": route.summary,
        "tags": [route.tag],
        "responses": _responses(route, refs, routes),
    }
    parameters = _path_parameters(route) + _query_parameters(route) + _header_parameters(route)
    if parameters:
        operation["parameters"] = parameters
    if route.body is not None:
        operation["requestBody"] = {
            "required": not route.empty_body,
            "content": {"application/json": {"schema": refs[(route.body, "validation")]}},
        }
        if route.empty_body:
            operation["requestBody"]["description"] = "an empty body counts as {}"
    operation["security"] = [] if route.auth == NONE else [{SECURITY_SCHEME: []}]
    return operation


def _path_parameters(route):
    return [
        {"name": name, "in": "path", "required": True, "schema": dict(PATH_PARAMS[name][1])}
        for name in route.path_params
    ]


def _header_parameters(route):
    return [
        {"name": name, "in": "header", "required": False, "schema": dict(schema), "description": description}
        for name, (schema, description) in HEADER_PARAMS.get((route.method, route.path), {}).items()
    ]


def _query_parameters(route):
    if route.query is None:
        return []
    schema = route.query.model_json_schema()
    required = set(schema.get("required", ()))
    parameters = []
    for name, field_schema in schema["properties"].items():
        parameter = {"name": name, "in": "query", "required": name in required, "schema": field_schema}
        if "description" in field_schema:
            parameter["description"] = field_schema["description"]
        parameters.append(parameter)
    return parameters


def _responses(route, refs, routes):
    success = {"description": route.description}
    if route.response is not None and route.status != 204:
        schema = refs[(route.response, "serialization")]
        success["content"] = {route.media_type: {"schema": schema}}
    elif route.media_type != "application/json":  # a text answer (/metrics)
        success["content"] = {route.media_type: {"schema": {"type": "string"}}}
    links = _links(route, routes)
    if links:
        success["links"] = links
    responses = {str(route.status): success}
    for status, description in route.alternatives:
        responses[str(status)] = dict(success, description=description)
    if route.refusals:
        responses["422"] = _refusals_response(route, refs)
    for status in sorted(_error_statuses(route)):
        name = ERROR_RESPONSES[status][0]
        responses.setdefault(str(status), {"$ref": f"#/components/responses/{name}"})
    return responses


def _refusals_response(route, refs):
    """The 422 of an operation whose schema-valid requests can still be refused: each rule, named."""
    rules = "; ".join(f"`{code}` when {when}" for code, when in route.refusals)
    return {
        "description": (
            f"{ERROR_RESPONSES[422][1]}; or a request the schema allows breaks a rule the schema cannot state: {rules}"
        ),
        "content": {"application/json": {"schema": refs[(ErrorEnvelope, "serialization")]}},
    }


def _links(route, routes):
    """The links of `route`'s success answer: to every operation taking the ids its answer carries."""
    if route.response not in LINKED_PATHS or route.status == 204:
        return {}
    prefix, name, pointer = LINKED_PATHS[route.response]
    return {
        target.handler.__name__: {
            "operationId": target.handler.__name__,
            "parameters": {name: f"$response.body#{pointer}"},
            "description": f"{target.summary}: the {name} of this answer",
        }
        for target in routes
        if target.path == prefix or target.path.startswith(prefix + "/")
    }


def _error_responses(refs):
    """components/responses: one per error status, each the error envelope (429 also says when to retry)."""
    content = {"application/json": {"schema": refs[(ErrorEnvelope, "serialization")]}}
    responses = {
        name: {"description": description, "content": content} for name, description in ERROR_RESPONSES.values()
    }
    responses["rate_limited"]["headers"] = {
        "Retry-After": {
            "description": "whole seconds to wait before trying again",
            "required": True,
            "schema": {"type": "integer", "minimum": 1},
        }
    }
    return responses


def _error_statuses(route):
    """The error statuses `route` can answer (404 and 405 for unknown paths and methods are not per route).
    Some are everywhere: 422 (an unknown query parameter is refused on every route), 429 (every request counts
    against its client address's rate limit, ratelimit.py) and what the HTTP server refuses before routing
    (server.py): 408 slow headers, 414 a request line over the limit, 431 headers over the limit."""
    statuses = {408, 414, 422, 429, 431, 500} | set(route.errors)
    if not route.local:
        statuses |= {503, 504}
    if route.body is not None:
        statuses |= {400, 413, 415}
    if route.auth != NONE:
        statuses.add(401)
    if route.auth == ADMIN:
        statuses.add(403)
    if route.path_params:
        statuses.add(404)
    return statuses


def write_document(document, path=DOCUMENT_PATH):
    """Writes `document` as the committed docs/openapi.json: sorted keys, two-space indents, a final newline."""
    pathlib.Path(path).write_text(document_text(document), encoding="utf-8")


def document_text(document):
    return json.dumps(document, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


if __name__ == "__main__":  # make openapi
    from gateway_http.routes import OPENAPI

    write_document(OPENAPI)
    sys.stdout.write(f"wrote {DOCUMENT_PATH}\n")
