"""The public API (docs/API.md) as one table: every route, its rules and its handler.

The gateway serves exactly this table (router.py) and describes exactly this table (openapi.py). A handler
translates the checked request into one RPC call (docs/SERVICES.md); the services' errors travel back as they
are and become the error envelope in router.py. Every write passes the request's call id (calls.py): made from the
client's `Idempotency-Key` on the routes that take one (cart writes, checkout), else fresh.
"""

from werkzeug.wrappers import Response

from gateway_http import schemas
from gateway_http.auth import ADMIN, USER
from gateway_http.calls import call_id
from gateway_http.errors import unauthorized, validation_error
from gateway_http.openapi import openapi_document
from gateway_http.router import Reply, Route
from services.common import probes
from services.common.errors import NotFound, ValidationFailed

# --- accounts ---------------------------------------------------------------------------------------------


def write_call_id(call, operation):
    """The call id of this request's write `operation` (calls.py), from its Idempotency-Key if it sent one."""
    return call_id(call.user.id if call.user else None, operation, idempotency_key(call.headers))


def register(call):
    return call.service.accounts.register(call.body.email, call.body.password, call_id=call_id(None, "register"))


def issue_token(call):
    # Failed logins are slowed, then refused (ratelimit/policies.py), decided before accounts is asked.
    with call.service.login_guard(call.body.email, call.client):
        return call.service.accounts.issue_token(call.body.email, call.body.password)


def me(call):
    try:
        return call.service.accounts.get_user(call.user.id)
    except NotFound:
        # A valid token for a user that no longer exists: the credentials are what is wrong, not the path.
        raise unauthorized("The access token's user does not exist.", error="invalid_token")


# --- catalog ----------------------------------------------------------------------------------------------


# Reads come from the gateway's product cache (cache.py); a write drops what it changes at once, so this instance
# reads its own writes (the others on the product_changed event).


def list_products(call):
    params = {"limit": call.query.limit, "offset": call.query.offset, "q": call.query.q or None}
    return call.service.product_cache.page(params, lambda: call.service.catalog.list_products(**params))


def get_product(call):
    sku = call.path["sku"]
    return call.service.product_cache.product(sku, lambda: call.service.catalog.get_product(sku))


def create_product(call):
    product = call.service.catalog.create_product(call.body.model_dump(), call_id=call_id(None, "create_product"))
    call.service.product_cache.changed(product["sku"])
    return product


def update_product(call):
    sku = call.path["sku"]
    try:
        return call.service.catalog.update_product(sku, call.body.changes(), call_id=call_id(None, "update_product"))
    finally:  # even on a timeout: the change may have been made
        call.service.product_cache.changed(sku)


# --- carts ------------------------------------------------------------------------------------------------


def list_carts(call):
    return call.service.carts.list_carts(call.user.id)


def create_cart(call):
    items = [line.model_dump() for line in call.body.items]
    return call.service.carts.create_cart(call.user.id, items=items or None, call_id=write_call_id(call, "create_cart"))


def get_cart(call):
    return call.service.carts.get_cart(call.user.id, call.path["id"])


def add_item(call):
    return call.service.carts.add_item(
        call.user.id, call.path["id"], call.body.sku, call.body.quantity, call_id=write_call_id(call, "add_item")
    )


def set_item(call):
    return call.service.carts.set_item(
        call.user.id, call.path["id"], call.path["sku"], call.body.quantity, call_id=write_call_id(call, "set_item")
    )


def remove_item(call):
    return call.service.carts.remove_item(
        call.user.id, call.path["id"], call.path["sku"], call_id=write_call_id(call, "remove_item")
    )


def delete_cart(call):
    call.service.carts.delete_cart(call.user.id, call.path["id"], call_id=write_call_id(call, "delete_cart"))


def checkout(call):
    key = idempotency_key(call.headers)
    try:
        placed = call.service.orders.checkout(
            call.user.id,
            call.path["id"],
            call.body.payment.card_number,
            idempotency_key=key,
            call_id=call_id(call.user.id, "checkout", key),
        )
    except ValidationFailed as error:
        if "card_number" not in ((error.details or {}).get("fields") or {}):
            raise
        # The Luhn check (payments'): name the field as the request does.
        raise validation_error(error.message, {"payment.card_number": "is not a valid card number"})
    return Reply(202 if placed["created"] else 200, placed["order"])


def idempotency_key(headers):
    """The request's `Idempotency-Key`, or None; 422 for one that is not 1-255 printable ASCII characters."""
    key = headers.get("Idempotency-Key")
    if key is not None and not schemas.IDEMPOTENCY_KEY.match(key):
        raise validation_error(
            "The Idempotency-Key header breaks the rules in details.fields.",
            {"Idempotency-Key": "must be 1 to 255 printable ASCII characters"},
        )
    return key


# --- orders -----------------------------------------------------------------------------------------------


def list_orders(call):
    return call.service.orders.list_orders(call.user.id, limit=call.query.limit, offset=call.query.offset)


def get_order(call):
    return call.service.orders.get_order(call.user.id, call.path["id"])


def cancel_order(call):
    user_id = call.user.id
    return call.service.orders.cancel_order(user_id, call.path["id"], call_id=call_id(user_id, "cancel_order"))


# --- operations -------------------------------------------------------------------------------------------


def health(call):
    services = call.service.health_probe()
    healthy = all(state == "ok" for state in services.values())
    return Reply(200 if healthy else 503, {"status": "ok" if healthy else "degraded", "services": services})


def openapi(call):
    return OPENAPI


def metrics(call):
    # Prometheus text (or OpenMetrics when the scraper asks for it) of the whole gateway process.
    body, content_type = probes.render_metrics(call.headers.get("Accept"))
    return Response(body, content_type=content_type)


def services(call):
    return {"services": call.service.service_map()}


ROUTES = (
    Route(
        "POST",
        "/auth/register",
        register,
        "Create an account",
        "the new account",
        "accounts",
        status=201,
        body=schemas.Registration,
        response=schemas.Registered,
        errors=(409,),
    ),
    Route(
        "POST",
        "/auth/token",
        issue_token,
        "Get an access token",
        "a bearer token",
        "accounts",
        body=schemas.Credentials,
        response=schemas.AccessToken,
        errors=(401,),
    ),
    Route(
        "GET", "/me", me, "The caller's account", "the caller's account", "accounts", auth=USER, response=schemas.User
    ),
    Route(
        "GET",
        "/products",
        list_products,
        "List products",
        "a page of products in sku order",
        "catalog",
        query=schemas.ProductQuery,
        response=schemas.ProductPage,
    ),
    Route("GET", "/products/{sku}", get_product, "Get a product", "the product", "catalog", response=schemas.Product),
    Route(
        "POST",
        "/products",
        create_product,
        "Add a product (admin)",
        "the new product",
        "catalog",
        status=201,
        auth=ADMIN,
        body=schemas.NewProduct,
        response=schemas.Product,
        errors=(409,),
    ),
    Route(
        "PATCH",
        "/products/{sku}",
        update_product,
        "Change a product (admin)",
        "the changed product",
        "catalog",
        auth=ADMIN,
        body=schemas.ProductChanges,
        response=schemas.Product,
    ),
    Route(
        "GET",
        "/carts",
        list_carts,
        "The caller's carts",
        "the caller's carts, newest first",
        "carts",
        auth=USER,
        response=schemas.CartList,
    ),
    Route(
        "POST",
        "/carts",
        create_cart,
        "Open a cart",
        "the new cart",
        "carts",
        status=201,
        auth=USER,
        body=schemas.NewCart,
        empty_body=True,
        response=schemas.Cart,
        refusals=(
            ("unknown_product", "a line names a sku the catalog does not have"),
            ("validation_error", "the lines of one sku add up to more than 999"),
        ),
    ),
    Route("GET", "/carts/{id}", get_cart, "Get a cart", "the cart", "carts", auth=USER, response=schemas.Cart),
    Route(
        "POST",
        "/carts/{id}/items",
        add_item,
        "Add to a line",
        "the cart",
        "carts",
        auth=USER,
        body=schemas.NewLine,
        response=schemas.Cart,
        errors=(409,),
        refusals=(
            ("unknown_product", "the sku is not in the catalog"),
            ("validation_error", "the line would hold more than 999 after adding (details.fields.quantity)"),
        ),
    ),
    Route(
        "PUT",
        "/carts/{id}/items/{sku}",
        set_item,
        "Set a line's quantity (0 removes it)",
        "the cart",
        "carts",
        auth=USER,
        body=schemas.LineQuantity,
        response=schemas.Cart,
        errors=(409,),
        refusals=(("unknown_product", "a quantity above 0 for a sku that is not in the catalog"),),
    ),
    Route(
        "DELETE",
        "/carts/{id}/items/{sku}",
        remove_item,
        "Remove a line",
        "the cart",
        "carts",
        auth=USER,
        response=schemas.Cart,
        errors=(409,),
    ),
    Route(
        "DELETE", "/carts/{id}", delete_cart, "Delete a cart", "deleted", "carts", status=204, auth=USER, errors=(409,)
    ),
    Route(
        "POST",
        "/carts/{id}/checkout",
        checkout,
        "Check out a cart",
        "the new order, pending",
        "orders",
        status=202,
        auth=USER,
        body=schemas.Checkout,
        response=schemas.Order,
        alternatives=((200, "the order an earlier request with the same Idempotency-Key made"),),
        errors=(409,),
        refusals=(
            ("validation_error", 'the card number fails the Luhn check (details.fields["payment.card_number"])'),
            ("empty_cart", "the cart has no lines"),
        ),
    ),
    Route(
        "GET",
        "/orders",
        list_orders,
        "The caller's orders",
        "a page of the caller's orders, newest first",
        "orders",
        auth=USER,
        query=schemas.PageQuery,
        response=schemas.OrderPage,
    ),
    Route("GET", "/orders/{id}", get_order, "Get an order", "the order", "orders", auth=USER, response=schemas.Order),
    Route(
        "POST",
        "/orders/{id}/cancel",
        cancel_order,
        "Cancel a confirmed order (refund, stock back)",
        "the cancelled order",
        "orders",
        auth=USER,
        response=schemas.Order,
        errors=(409,),
    ),
    Route(
        "GET",
        "/health",
        health,
        "Backend health",
        "every backend answers",
        "operations",
        response=schemas.Health,
        alternatives=((503, "some backend is down: the failing ones are marked"),),
    ),
    Route(
        "GET",
        "/metrics",
        metrics,
        "Prometheus metrics of the gateway",
        "the Prometheus text exposition (OpenMetrics when the Accept header asks for it)",
        "operations",
        local=True,
        media_type="text/plain; version=0.0.4",
    ),
    Route(
        "GET",
        "/services",
        services,
        "Live services",
        "what the broker knows of each service: its instances (consumers of its RPC queue) and its queue depth",
        "operations",
        response=schemas.ServiceList,
        errors=(503,),
    ),
    Route(
        "GET",
        "/openapi.json",
        openapi,
        "This API's description",
        "the OpenAPI 3.1 document",
        "operations",
        response=schemas.OpenApiDocument,
        local=True,
    ),
)

# Built once, at import: a route the generator cannot describe fails at start-up, not on the first request.
OPENAPI = openapi_document(ROUTES)
