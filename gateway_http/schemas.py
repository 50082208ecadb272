"""The shapes of requests and answers: pydantic v2 models, the source of both validation and the OpenAPI schemas.

Request models are strict: where an integer is asked for, a JSON number with no fractional part is one (2 and 2.0
and 1e2 alike, as JSON Schema counts them; the services get Python ints), while "2", 2.5 and true are refused;
strings must be strings, and unknown fields are refused. Response models only document what the
services answer; answers are passed through, not validated against them.
"""

import re
import uuid
from typing import Annotated, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, model_validator

# The rules the services apply, defined once (services/common/rules.py): sku and id patterns (ids in the canonical
# 8-4-4-4-12 form only, any case; they reach the services lower-cased), the largest amount (what a 32-bit SQL
# INTEGER column holds), quantities, lengths and page limits.
from services.common.rules import (
    CARD_NUMBER_PATTERN,
    DEFAULT_PAGE_LIMIT,
    EMAIL_MAX_LENGTH,
    MAX_AMOUNT,
    MAX_OFFSET,
    MAX_PAGE_LIMIT,
    MAX_QUANTITY,
    PASSWORD_MAX_LENGTH,
    PASSWORD_MIN_LENGTH,
    PRODUCT_DESCRIPTION_MAX_LENGTH,
    PRODUCT_NAME_MAX_LENGTH,
    SEARCH_MAX_LENGTH,
    SKU_PATTERN,
    UUID_PATTERN,
)

# A new account's email: printable ASCII (no look-alike of another address in another script), one @, a domain of
# two or more non-empty labels: the accounts service's rule (services/accounts/domain.py), made exact in the
# schema so that whatever the schema allows the service accepts.
_EMAIL_CHAR = r"\x21-\x2d\x2f-\x3f\x41-\x7e"  # printable ASCII but space, "@" and "."
EMAIL_PATTERN = rf"^[.{_EMAIL_CHAR}]+@[{_EMAIL_CHAR}]+(\.[{_EMAIL_CHAR}]+)+$"
Email = Annotated[
    str,
    Field(
        min_length=5,
        max_length=EMAIL_MAX_LENGTH,
        pattern=EMAIL_PATTERN,
        description="printable ASCII: local part, @, a domain with a dot",
    ),
]
# Free text never holds NUL: PostgreSQL cannot store it (nor compare with it), and no person types it.
NO_NUL_PATTERN = r"^[^\x00]*$"
Password = Annotated[str, Field(min_length=PASSWORD_MIN_LENGTH, max_length=PASSWORD_MAX_LENGTH, pattern=NO_NUL_PATTERN)]
Sku = Annotated[str, Field(pattern=SKU_PATTERN, description="1-64 characters of A-Z a-z 0-9 - _")]
# What Python's str.strip() removes, spelled out: regex engines disagree on what \s covers.
_WHITESPACE = r"\x09-\x0d\x1c-\x20\x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
# A name is not blank (the catalog's rule): at least one character that is neither whitespace nor NUL.
NAME_PATTERN = rf"^[^\x00]*[^\x00{_WHITESPACE}][^\x00]*$"
Name = Annotated[str, Field(min_length=1, max_length=PRODUCT_NAME_MAX_LENGTH, pattern=NAME_PATTERN)]
Description = Annotated[str, Field(max_length=PRODUCT_DESCRIPTION_MAX_LENGTH, pattern=NO_NUL_PATTERN)]


def _integral(value):
    # JSON Schema's "integer" is any number without a fractional part, so 2.0 and 1e2 are integers; strict mode
    # then refuses every other float, strings and booleans.
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


# After the Field constraints in Annotated, so they still show in the JSON Schema as minimum/maximum.
Integral = BeforeValidator(_integral)
Amount = Annotated[int, Field(ge=0, le=MAX_AMOUNT), Integral]
AddQuantity = Annotated[int, Field(ge=1, le=MAX_QUANTITY), Integral]
SetQuantity = Annotated[int, Field(ge=0, le=MAX_QUANTITY, description="0 removes the line"), Integral]


def exact(pattern):
    """`pattern` ("^...$") compiled for Python's re so that `.match` takes the whole string: Python's `$` also
    matches before a final newline ("tea\n" would pass as a sku), JSON Schema's and pydantic's do not."""
    return re.compile(pattern.removesuffix("$") + r"\Z")


class StrictModel(BaseModel):
    """Base of the request models: JSON types only, no coercion, no unknown fields."""

    model_config = ConfigDict(strict=True, extra="forbid")


# --- request bodies ---------------------------------------------------------------------------------------


class Credentials(StrictModel):
    """`POST /auth/token`: the password is checked by accounts, so only its size is limited here."""

    email: Annotated[str, Field(min_length=1, max_length=EMAIL_MAX_LENGTH, pattern=NO_NUL_PATTERN)]
    password: Annotated[str, Field(min_length=1, max_length=PASSWORD_MAX_LENGTH, pattern=NO_NUL_PATTERN)]


class Registration(StrictModel):
    email: Email
    password: Password


class NewProduct(StrictModel):
    sku: Sku
    name: Name
    description: Description = ""
    price_cents: Amount
    stock: Amount


class ProductChanges(StrictModel):
    """`PATCH /products/{sku}`: at least one field; a field given must have a value (null is refused)."""

    # A default of None is never validated, so an absent field is None while an explicit null fails the type.
    name: Name = Field(default=None, json_schema_extra=lambda schema: schema.pop("default"))
    description: Description = Field(default=None, json_schema_extra=lambda schema: schema.pop("default"))
    price_cents: Amount = Field(default=None, json_schema_extra=lambda schema: schema.pop("default"))
    stock: Amount = Field(default=None, json_schema_extra=lambda schema: schema.pop("default"))

    model_config = ConfigDict(json_schema_extra={"minProperties": 1})

    @model_validator(mode="after")
    def _not_empty(self):
        if not self.model_fields_set:
            raise ValueError("give at least one of name, description, price_cents, stock")
        return self

    def changes(self):
        """The fields the caller gave, as a dict."""
        return self.model_dump(include=self.model_fields_set)


class NewLine(StrictModel):
    sku: Sku
    quantity: AddQuantity


class NewCart(StrictModel):
    """`POST /carts`: an empty body counts as `{}`."""

    items: list[NewLine] = Field(default_factory=list, max_length=100)


class LineQuantity(StrictModel):
    quantity: SetQuantity


# --- query strings ----------------------------------------------------------------------------------------


def _decimal_integer(value):
    # Query values arrive as text: only plain decimal digits (with an optional minus) make an integer.
    if not isinstance(value, str):
        return value
    if not re.fullmatch(r"-?[0-9]+", value):
        raise ValueError("must be a decimal integer")
    if len(value) > 20:
        raise ValueError("is out of range")
    return int(value)


# After the Field constraints in Annotated, so they still show in the JSON Schema as minimum/maximum.
QueryInt = BeforeValidator(_decimal_integer)


class PageQuery(StrictModel):
    """`?limit&offset` of a list."""

    limit: Annotated[int, Field(ge=1, le=MAX_PAGE_LIMIT), QueryInt] = DEFAULT_PAGE_LIMIT
    offset: Annotated[int, Field(ge=0, le=MAX_OFFSET), QueryInt] = 0


class ProductQuery(PageQuery):
    """`GET /products?limit&offset&q`."""

    q: Annotated[
        str,
        Field(
            max_length=SEARCH_MAX_LENGTH,
            pattern=NO_NUL_PATTERN,
            description="case-insensitive filter on name and description",
        ),
    ] = ""


class Payment(StrictModel):
    card_number: Annotated[
        str, Field(pattern=CARD_NUMBER_PATTERN, description="12-19 digits; checked with Luhn by payments")
    ]


class Checkout(StrictModel):
    """`POST /carts/{id}/checkout`; the card number is never stored: payments keeps its last four digits."""

    payment: Payment


# An Idempotency-Key header: printable ASCII, as long as a UUID or a little more.
IDEMPOTENCY_KEY_PATTERN = r"^[\x21-\x7e]{1,255}$"
IDEMPOTENCY_KEY = exact(IDEMPOTENCY_KEY_PATTERN)
# Request headers an operation reads, by (method, path): name → (JSON schema, description) for /openapi.json.
_CART_WRITE_KEY = {
    "Idempotency-Key": (
        {"type": "string", "pattern": IDEMPOTENCY_KEY_PATTERN},
        "a repeat with the same key changes nothing and answers what the first request answered",
    ),
}
HEADER_PARAMS = {
    ("POST", "/carts"): _CART_WRITE_KEY,
    ("POST", "/carts/{id}/items"): _CART_WRITE_KEY,
    ("PUT", "/carts/{id}/items/{sku}"): _CART_WRITE_KEY,
    ("DELETE", "/carts/{id}/items/{sku}"): _CART_WRITE_KEY,
    ("DELETE", "/carts/{id}"): _CART_WRITE_KEY,
    ("POST", "/carts/{id}/checkout"): {
        "Idempotency-Key": (
            {"type": "string", "pattern": IDEMPOTENCY_KEY_PATTERN},
            "a repeat with the same key answers the same order and never registers the card or charges twice",
        ),
    },
}


# --- path parameters --------------------------------------------------------------------------------------


def _canonical_uuid(value):
    return str(uuid.UUID(value))


# Path parameter name → (pattern it must match, JSON schema, normaliser). A value that does not match is a 404.
# `id` is the UUID of a cart or an order, named as in the contract's paths ("/carts/{id}").
PATH_PARAMS = {
    "sku": (exact(SKU_PATTERN), {"type": "string", "pattern": SKU_PATTERN}, str),
    "id": (exact(UUID_PATTERN), {"type": "string", "format": "uuid"}, _canonical_uuid),
}


# --- answers (documentation only) -------------------------------------------------------------------------


class User(BaseModel):
    id: str
    email: str
    is_admin: bool


class Registered(BaseModel):
    id: str
    email: str


class AccessToken(BaseModel):
    access_token: str
    token_type: Literal["bearer"]
    expires_in: int


class Product(BaseModel):
    sku: str
    name: str
    description: str
    price_cents: int
    stock: int = Field(description="what can still be bought: on hand minus reserved")


class ProductPage(BaseModel):
    items: list[Product]
    total: int
    limit: int
    offset: int


class CartLine(BaseModel):
    sku: str
    name: str
    quantity: int
    unit_price_cents: int
    line_total_cents: int


class Cart(BaseModel):
    id: str = Field(json_schema_extra={"format": "uuid"})
    status: Literal["open", "checked_out"]
    items: list[CartLine]
    total_cents: int
    created_at: str = Field(json_schema_extra={"format": "date-time"})
    updated_at: str = Field(json_schema_extra={"format": "date-time"})


class Order(BaseModel):
    id: str = Field(json_schema_extra={"format": "uuid"})
    cart_id: str = Field(json_schema_extra={"format": "uuid"})
    status: Literal["pending", "confirmed", "failed", "cancelled"]
    failure_reason: Literal["out_of_stock", "payment_declined", "timeout"] | None
    items: list[CartLine] = Field(description="as in the cart at checkout, prices frozen")
    total_cents: int
    created_at: str = Field(json_schema_extra={"format": "date-time"})
    updated_at: str = Field(json_schema_extra={"format": "date-time"})


class OrderPage(BaseModel):
    items: list[Order]
    total: int
    limit: int
    offset: int


class CartList(BaseModel):
    items: list[Cart]


class Health(BaseModel):
    status: Literal["ok", "degraded"]
    services: dict[str, Literal["ok", "unavailable", "timeout", "error"]]


class LiveService(BaseModel):
    name: str
    instances: int = Field(ge=0, description="consumers of the service's RPC queue")
    queue_depth: int = Field(ge=0, description="requests waiting in the service's RPC queue")


class ServiceList(BaseModel):
    services: list[LiveService]


class OpenApiDocument(BaseModel):
    model_config = ConfigDict(extra="allow", json_schema_extra={"description": "an OpenAPI 3.1 document"})

    openapi: str


class ErrorBody(BaseModel):
    code: str = Field(description="machine-readable, e.g. validation_error")
    message: str = Field(description="one sentence for a person")
    details: dict | None = Field(default=None, description='e.g. {"fields": {field: reason}} for a 422')


class ErrorEnvelope(BaseModel):
    """Every non-2xx answer."""

    error: ErrorBody


# --- validation errors ------------------------------------------------------------------------------------


# What a pattern means, said to a person instead of the regular expression.
PATTERN_REASONS = {
    NO_NUL_PATTERN: "must not contain NUL characters",
    NAME_PATTERN: "must not be blank or contain NUL characters",
    EMAIL_PATTERN: "is not a valid email address (printable ASCII, one @, a domain with a dot)",
    SKU_PATTERN: "must be 1 to 64 characters of A-Z, a-z, 0-9, '-' and '_'",
    CARD_NUMBER_PATTERN: "must be 12 to 19 digits",
}


def field_errors(error: ValidationError):
    """{field: reason} for a pydantic error: dotted paths for nested fields ("items.0.quantity"), first reason
    per field; a rule on the whole object is reported under "body"."""
    fields = {}
    for problem in error.errors():
        name = ".".join(str(part) for part in problem["loc"]) or "body"
        reason = problem["msg"]
        if problem["type"] == "value_error":  # our own ValueError: drop pydantic's "Value error, " prefix
            reason = str(problem.get("ctx", {}).get("error", reason))
        elif problem["type"] == "string_pattern_mismatch":
            reason = PATTERN_REASONS.get(problem.get("ctx", {}).get("pattern"), reason)
        fields.setdefault(name, reason)
    return fields
