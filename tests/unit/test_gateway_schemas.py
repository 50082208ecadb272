"""The gateway's request models: strict JSON types (an integral number is an integer), the contract's ranges, and
field paths in errors."""

import pytest
from pydantic import ValidationError

from gateway_http import schemas
from gateway_http.router import Router


def fields(model, data):
    """The {field: reason} a model reports for `data`."""
    with pytest.raises(ValidationError) as failure:
        model.model_validate(data)
    return schemas.field_errors(failure.value)


@pytest.mark.parametrize("quantity", ["2", 2.5, 1e-300, True, False, None, [2], {"n": 2}])
def test_a_quantity_is_a_json_integer_and_nothing_else(quantity):
    assert list(fields(schemas.NewLine, {"sku": "tea", "quantity": quantity})) == ["quantity"]


@pytest.mark.parametrize("written, value", [(2, 2), (2.0, 2), (1e2, 100), (999.0, 999)])
def test_an_integral_number_is_an_integer_as_in_json_schema(written, value):
    quantity = schemas.NewLine.model_validate({"sku": "tea", "quantity": written}).quantity
    assert quantity == value and type(quantity) is int  # the services get an int
    changes = schemas.ProductChanges.model_validate({"stock": written, "price_cents": written}).changes()
    assert changes == {"stock": value, "price_cents": value} and {type(v) for v in changes.values()} == {int}


def test_an_integral_number_out_of_range_is_still_refused():
    assert fields(schemas.NewLine, {"sku": "tea", "quantity": 1e3}) == {
        "quantity": "Input should be less than or equal to 999"
    }
    assert list(fields(schemas.NewProduct, {"sku": "t", "name": "T", "price_cents": 1e300, "stock": 1})) == [
        "price_cents"
    ]


@pytest.mark.parametrize("model, low, high", [(schemas.NewLine, 1, 999), (schemas.LineQuantity, 0, 999)])
def test_quantity_ranges(model, low, high):
    extra = {"sku": "tea"} if model is schemas.NewLine else {}
    assert model.model_validate(dict(extra, quantity=low)).quantity == low
    assert model.model_validate(dict(extra, quantity=high)).quantity == high
    assert "quantity" in fields(model, dict(extra, quantity=low - 1))
    assert "quantity" in fields(model, dict(extra, quantity=high + 1))


@pytest.mark.parametrize(
    "sku, ok",
    [
        ("a", True),
        ("A-z_09", True),
        ("x" * 64, True),
        ("x" * 65, False),
        ("", False),
        ("tea cup", False),
        ("tea/cup", False),
        ("té", False),
        ("tea\n", False),
    ],
)
def test_sku_pattern(sku, ok):
    data = {"sku": sku, "quantity": 1}
    if ok:
        assert schemas.NewLine.model_validate(data).sku == sku
    else:
        assert list(fields(schemas.NewLine, data)) == ["sku"]


def test_nested_errors_use_dotted_paths_and_unknown_fields_are_refused():
    reported = fields(
        schemas.NewCart, {"items": [{"sku": "ok", "quantity": 1}, {"sku": "ok", "quantity": "3"}], "coupon": "FREE"}
    )
    assert reported == {
        "items.1.quantity": "Input should be a valid integer",
        "coupon": "Extra inputs are not permitted",
    }
    assert fields(schemas.NewCart, {"items": {"sku": "ok"}}) == {"items": "Input should be a valid list"}
    assert schemas.NewCart.model_validate({}).items == []


def test_registration_password_length_and_email_shape():
    assert schemas.Registration.model_validate({"email": "a@b.c", "password": "x" * 8})
    assert schemas.Registration.model_validate({"email": "a@b.c", "password": "x" * 128})
    assert list(fields(schemas.Registration, {"email": "a@b.c", "password": "x" * 7})) == ["password"]
    assert list(fields(schemas.Registration, {"email": "a@b.c", "password": "x" * 129})) == ["password"]
    assert list(fields(schemas.Registration, {"email": "nobody", "password": "x" * 8})) == ["email"]
    assert set(fields(schemas.Registration, {})) == {"email", "password"}


def test_new_product_rules():
    product = schemas.NewProduct.model_validate({"sku": "tea", "name": "Tea", "price_cents": 0, "stock": 0})
    assert product.model_dump() == {"sku": "tea", "name": "Tea", "description": "", "price_cents": 0, "stock": 0}
    reported = fields(
        schemas.NewProduct,
        {"sku": "tea", "name": "n" * 201, "description": "d" * 2001, "price_cents": -1, "stock": 1.5},
    )
    assert set(reported) == {"name", "description", "price_cents", "stock"}
    assert list(fields(schemas.NewProduct, {"sku": "t", "name": "", "price_cents": 1, "stock": 1})) == ["name"]


def test_product_changes_need_a_field_and_refuse_null():
    assert schemas.ProductChanges.model_validate({"stock": 4}).changes() == {"stock": 4}
    assert schemas.ProductChanges.model_validate({"description": ""}).changes() == {"description": ""}
    assert fields(schemas.ProductChanges, {}) == {"body": "give at least one of name, description, price_cents, stock"}
    assert list(fields(schemas.ProductChanges, {"name": None})) == ["name"]
    assert list(fields(schemas.ProductChanges, {"sku": "other"})) == ["sku"]


@pytest.mark.parametrize(
    "value, reason",
    [
        ("abc", "must be a decimal integer"),
        ("2.5", "must be a decimal integer"),
        ("+1", "must be a decimal integer"),
        ("", "must be a decimal integer"),
        ("0x10", "must be a decimal integer"),
        ("1" * 30, "is out of range"),
        ("0", "Input should be greater than or equal to 1"),
        ("101", "Input should be less than or equal to 100"),
    ],
)
def test_query_limits_must_be_decimal_integers_in_range(value, reason):
    assert fields(schemas.ProductQuery, {"limit": value}) == {"limit": reason}


def test_query_defaults_and_values():
    assert schemas.ProductQuery.model_validate({}).model_dump() == {"limit": 20, "offset": 0, "q": ""}
    query = schemas.ProductQuery.model_validate({"limit": "100", "offset": "007", "q": "tea"})
    assert (query.limit, query.offset, query.q) == (100, 7, "tea")
    assert list(fields(schemas.ProductQuery, {"offset": "-1"})) == ["offset"]
    assert list(fields(schemas.ProductQuery, {"page": "2"})) == ["page"]


def test_path_parameters_are_checked_and_normalised():
    cart_id = "0F8FAD5B-D9CB-469F-A165-70867728950E"
    assert Router.path_params({"id": cart_id, "sku": "tea-1"}) == {"id": cart_id.lower(), "sku": "tea-1"}
    for raw in (
        {"id": "0f8fad5bd9cb469fa16570867728950e"},
        {"id": "{%s}" % cart_id},
        {"id": "nope"},
        {"sku": "tea cup"},
        {"sku": "x" * 65},
    ):
        with pytest.raises(Exception) as failure:
            Router.path_params(raw)
        assert (failure.value.status, failure.value.code) == (404, "not_found")


@pytest.mark.parametrize(
    "email, ok",
    [
        ("a@b.co", True),
        ("first.last+tag@mail.example.org", True),
        ("0@0", False),
        ("a@b..c", False),
        ("a@b.", False),
        ("a b@c.de", False),
        ("\u0430dmin@example.com", False),
        ("\uff41@example.com", False),
        ("a\u200b@example.com", False),
        ("a@example.com\n", False),
    ],
)
def test_a_new_accounts_email_is_printable_ascii_with_a_dotted_domain(email, ok):
    data = {"email": email, "password": "x" * 8}
    if ok:
        assert schemas.Registration.model_validate(data).email == email
    else:
        assert list(fields(schemas.Registration, data)) == ["email"]


def test_free_text_refuses_nul_and_names_refuse_blanks_with_reasons_for_people():
    reported = fields(
        schemas.NewProduct, {"sku": "t", "name": "\u3000 \t", "description": "a\x00", "price_cents": 1, "stock": 1}
    )
    assert reported == {
        "name": "must not be blank or contain NUL characters",
        "description": "must not contain NUL characters",
    }
    assert fields(schemas.Credentials, {"email": "a\x00", "password": "p"}) == {
        "email": "must not contain NUL characters"
    }
    assert (
        schemas.NewProduct.model_validate(
            {"sku": "t", "name": " x ", "description": "'; --\n{{7*7}}", "price_cents": 1, "stock": 1}
        ).name
        == " x "
    )


def test_path_parameters_with_a_final_newline_are_404_not_500():
    for raw in ({"id": "0f8fad5b-d9cb-469f-a165-70867728950e\n"}, {"sku": "tea\n"}):
        with pytest.raises(Exception) as failure:
            Router.path_params(raw)
        assert (failure.value.status, failure.value.code) == (404, "not_found")
