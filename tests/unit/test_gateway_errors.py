"""How every failure maps to the error envelope: the services' errors keep their meaning, bugs say nothing."""

import pytest
from nameko.exceptions import RemoteError, deserialize, serialize

from gateway_http.errors import INTERNAL_MESSAGE, HttpError, http_error, is_expected
from gateway_http.http import error_response
from services.common import errors


@pytest.mark.parametrize(
    "error_class, status, code",
    [
        (errors.NotFound, 404, "not_found"),
        (errors.Conflict, 409, "conflict"),
        (errors.ValidationFailed, 422, "validation_error"),
        (errors.UnknownProduct, 422, "unknown_product"),
        (errors.EmptyCart, 422, "empty_cart"),
        (errors.Unauthorized, 401, "unauthorized"),
        (errors.Forbidden, 403, "forbidden"),
        (errors.ServiceUnavailable, 503, "service_unavailable"),
        (errors.ServiceTimeout, 504, "gateway_timeout"),
    ],
)
def test_service_errors_keep_status_code_message_and_details(error_class, status, code):
    # As the gateway receives them: serialised by the service, deserialised by nameko on this side.
    received = deserialize(serialize(error_class("a sentence for a person", {"sku": "tea"})))
    assert isinstance(received, error_class)
    error = http_error(received)
    assert (error.status, error.code, error.message, error.details) == (
        status,
        code,
        "a sentence for a person",
        {"sku": "tea"},
    )
    assert is_expected(received)


def test_validation_failed_field_details_pass_through():
    received = deserialize(serialize(errors.ValidationFailed.field("quantity", "a line holds at most 999")))
    assert http_error(received).body() == {
        "error": {
            "code": "validation_error",
            "message": "quantity: a line holds at most 999",
            "details": {"fields": {"quantity": "a line holds at most 999"}},
        }
    }


@pytest.mark.parametrize(
    "exc",
    [
        RuntimeError("secret path /srv/x.py"),
        RemoteError("KeyError", "'password_hash'"),
        errors.CartmeshError("base class: a bug"),
        KeyError("x"),
    ],
)
def test_anything_else_is_a_generic_500(exc):
    error = http_error(exc)
    assert (error.status, error.code, error.message, error.details) == (500, "internal_error", INTERNAL_MESSAGE, None)
    assert not is_expected(exc)


def test_a_mangled_service_error_is_a_500():
    mangled = errors.NotFound("x")
    mangled.status = "404"
    assert http_error(mangled).status == 500


def test_details_that_are_not_an_object_are_dropped():
    assert http_error(errors.Conflict("taken", ["not", "an", "object"])).body() == {
        "error": {"code": "conflict", "message": "taken"}
    }


def test_error_response_is_json_with_headers():
    response = error_response(HttpError(405, "method_not_allowed", "only GET", headers={"Allow": "GET"}))
    assert response.status_code == 405
    assert response.headers["Content-Type"] == "application/json; charset=utf-8"
    assert response.headers["Allow"] == "GET"
    assert response.get_json() == {"error": {"code": "method_not_allowed", "message": "only GET"}}
