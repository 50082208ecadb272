"""The shapes of requests and answers: pydantic v2 models, the source of both validation and the OpenAPI schemas.

Request models are strict: a JSON number must be an integer where one is asked for ("2", 2.5 and true are not a
quantity), strings must be strings, and unknown fields are refused. Response models only document what the
services answer; answers are passed through, not validated against them.
"""
import re
import uuid
from typing import Annotated, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, model_validator

SKU_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"
# Ids are accepted in the canonical 8-4-4-4-12 form only (any case); they reach the services lower-cased.
UUID_PATTERN = r"^[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}$"
# The largest money amount or stock count accepted: what a 32-bit SQL INTEGER column holds.
MAX_AMOUNT = 2**31 - 1

Email = Annotated[str, Field(min_length=3, max_length=254, pattern=r"^[^@\s]+@[^@\s]+$")]
Password = Annotated[str, Field(min_length=8, max_length=128)]
Sku = Annotated[str, Field(pattern=SKU_PATTERN, description="1-64 characters of A-Z a-z 0-9 - _")]
Name = Annotated[str, Field(min_length=1, max_length=200)]
Description = Annotated[str, Field(max_length=2000)]
Amount = Annotated[int, Field(ge=0, le=MAX_AMOUNT)]
AddQuantity = Annotated[int, Field(ge=1, le=999)]
SetQuantity = Annotated[int, Field(ge=0, le=999, description="0 removes the line")]


class StrictModel(BaseModel):
    """Base of the request models: JSON types only, no coercion, no unknown fields."""

    model_config = ConfigDict(strict=True, extra="forbid")


# --- request bodies ---------------------------------------------------------------------------------------


class Credentials(StrictModel):
    """`POST /auth/token`: the password is checked by accounts, so only its size is limited here."""

    email: Annotated[str, Field(min_length=1, max_length=254)]
    password: Annotated[str, Field(min_length=1, max_length=128)]


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

    limit: Annotated[int, Field(ge=1, le=100), QueryInt] = 20
    offset: Annotated[int, Field(ge=0, le=MAX_AMOUNT), QueryInt] = 0


class ProductQuery(PageQuery):
    """`GET /products?limit&offset&q`."""

    q: Annotated[str, Field(max_length=200, description="case-insensitive filter on name and description")] = ""


class Payment(StrictModel):
    card_number: Annotated[str, Field(pattern=r"^[0-9]{12,19}$",
                                      description="12-19 digits; checked with Luhn by payments")]


class Checkout(StrictModel):
    """`POST /carts/{id}/checkout`; the card number is never stored: payments keeps its last four digits."""

    payment: Payment


# An Idempotency-Key header: printable ASCII, as long as a UUID or a little more.
IDEMPOTENCY_KEY = re.compile(r"^[\x21-\x7e]{1,255}$")


# --- path parameters --------------------------------------------------------------------------------------


def _canonical_uuid(value):
    return str(uuid.UUID(value))


# Path parameter name → (pattern it must match, JSON schema, normaliser). A value that does not match is a 404.
# `id` is the UUID of a cart or an order, named as in the contract's paths ("/carts/{id}").
PATH_PARAMS = {
    "sku": (re.compile(SKU_PATTERN), {"type": "string", "pattern": SKU_PATTERN}, str),
    "id": (re.compile(UUID_PATTERN), {"type": "string", "format": "uuid"}, _canonical_uuid),
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
    details: dict | None = Field(default=None, description="e.g. {\"fields\": {field: reason}} for a 422")


class ErrorEnvelope(BaseModel):
    """Every non-2xx answer."""

    error: ErrorBody


# --- validation errors ------------------------------------------------------------------------------------


def field_errors(error: ValidationError):
    """{field: reason} for a pydantic error: dotted paths for nested fields ("items.0.quantity"), first reason
    per field; a rule on the whole object is reported under "body"."""
    fields = {}
    for problem in error.errors():
        name = ".".join(str(part) for part in problem["loc"]) or "body"
        reason = problem["msg"]
        if problem["type"] == "value_error":  # our own ValueError: drop pydantic's "Value error, " prefix
            reason = str(problem.get("ctx", {}).get("error", reason))
        fields.setdefault(name, reason)
    return fields
