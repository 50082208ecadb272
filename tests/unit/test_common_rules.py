"""The identifiers and limits shared by the services and the gateway (services/common/rules.py)."""

import uuid

import pytest

from gateway_http import schemas
from services.common import rules
from services.common.errors import ValidationFailed

ID = "0b5e4a8e-7c1f-4d2a-9a3b-1c2d3e4f5a6b"


def fields_of(failure):
    return failure.value.details["fields"]


@pytest.mark.parametrize("sku", ["A", "abc-DEF_123", "x" * 64, "-", "_"])
def test_skus(sku):
    assert rules.is_sku(sku)
    assert rules.validate_sku(sku) == sku


@pytest.mark.parametrize("sku", ["", "x" * 65, "has space", "dot.ted", "ümlaut", "A\n", None, 12, True])
def test_not_skus_name_the_field_given(sku):
    assert not rules.is_sku(sku)
    with pytest.raises(ValidationFailed) as failure:
        rules.validate_sku(sku, "items[0].sku")
    assert fields_of(failure) == {"items[0].sku": rules.SKU_REASON}


def test_ids_are_canonical_uuids_in_any_case_stored_lower_case():
    assert rules.is_uuid(ID) and rules.is_uuid(ID.upper())
    assert rules.normalize_uuid(ID.upper()) == ID
    assert rules.validate_order_id(ID.upper()) == ID
    garbage = ["", "nope", ID.replace("-", ""), "{%s}" % ID, "urn:uuid:" + ID, ID + "\n", " " + ID, None, 5, [ID]]
    for value in garbage + ["٠" * 8 + ID[8:]]:  # Arabic-Indic digits are digits to int(), not to a UUID
        assert not rules.is_uuid(value)
        assert rules.normalize_uuid(value) is None
        with pytest.raises(ValidationFailed) as failure:
            rules.validate_order_id(value)
        assert fields_of(failure) == {"order_id": "must be a UUID string"}


def test_is_uuid_agrees_with_python_on_canonical_form():
    for _ in range(100):
        value = str(uuid.uuid4())
        assert rules.is_uuid(value) and rules.normalize_uuid(value.upper()) == value


def test_a_user_id_is_a_string_as_long_as_a_uuid_at_most():
    assert rules.validate_user_id("u") == "u"
    assert rules.validate_user_id(ID) == ID
    for value in ["", "u" * 37, None, 7, ["x"]]:
        with pytest.raises(ValidationFailed) as failure:
            rules.validate_user_id(value)
        assert fields_of(failure) == {"user_id": "must be a string of 1 to 36 characters"}


def test_quantities_are_whole_numbers_up_to_999():
    assert rules.validate_quantity(999) == 999
    assert rules.validate_quantity(0, minimum=0) == 0
    for value in [0, 1000, True, 1.0, "1", None]:
        with pytest.raises(ValidationFailed) as failure:
            rules.validate_quantity(value, field="q")
        assert fields_of(failure) == {"q": "must be an integer from 1 to 999"}


@pytest.mark.parametrize(
    "value, whole", [(0, True), (-3, True), (2**70, True), (True, False), (1.0, False), ("1", False)]
)
def test_whole_numbers(value, whole):
    assert rules.is_whole_number(value) is whole


@pytest.mark.parametrize(
    "value, shape",
    [
        ("4242424242424242", True),
        ("1" * 12, True),
        ("1" * 11, False),
        ("1" * 20, False),
        ("4242 4242 4242", False),
        ("４２４２４２４２４２４２", False),
        (4242424242424242, False),
    ],
)
def test_card_number_shape(value, shape):
    assert rules.is_card_number_shape(value) is shape


def test_the_gateways_request_models_take_the_same_patterns_and_limits():
    """gateway_http/schemas.py must let through exactly what the services accept (it imports the rules; the
    models' JSON schemas show they are used)."""

    def properties(model):
        return model.model_json_schema()["properties"]

    product = properties(schemas.NewProduct)
    assert product["sku"]["pattern"] == rules.SKU_PATTERN
    assert product["name"]["maxLength"] == rules.PRODUCT_NAME_MAX_LENGTH
    assert product["description"]["maxLength"] == rules.PRODUCT_DESCRIPTION_MAX_LENGTH
    assert product["price_cents"]["maximum"] == product["stock"]["maximum"] == rules.MAX_AMOUNT
    assert properties(schemas.NewLine)["quantity"]["maximum"] == rules.MAX_QUANTITY
    assert properties(schemas.LineQuantity)["quantity"]["maximum"] == rules.MAX_QUANTITY
    registration = properties(schemas.Registration)
    assert registration["email"]["maxLength"] == rules.EMAIL_MAX_LENGTH
    assert registration["password"]["minLength"] == rules.PASSWORD_MIN_LENGTH
    assert registration["password"]["maxLength"] == rules.PASSWORD_MAX_LENGTH
    credentials = properties(schemas.Credentials)
    assert credentials["email"]["maxLength"] == rules.EMAIL_MAX_LENGTH
    assert credentials["password"]["maxLength"] == rules.PASSWORD_MAX_LENGTH
    page = properties(schemas.ProductQuery)
    assert page["limit"]["maximum"] == rules.MAX_PAGE_LIMIT
    assert page["limit"]["default"] == rules.DEFAULT_PAGE_LIMIT
    assert page["offset"]["maximum"] == rules.MAX_OFFSET
    assert page["q"]["maxLength"] == rules.SEARCH_MAX_LENGTH
    assert properties(schemas.Payment)["card_number"]["pattern"] == rules.CARD_NUMBER_PATTERN
