"""The operator console (administrators only): products, the live service map, parked events, the audit and
recent orders. What it shows comes from the same RPC calls and providers as the API's operations routes, plus
`orders.recent_orders` and the `parked_events` / `replay_parked` methods of the services that park events
(services/common/deadletters.py)."""

from gateway_http import schemas
from gateway_http.calls import call_id
from gateway_http.storefront.forms import price_cents, price_text, validate, whole_number
from gateway_http.storefront.shop import PAGE_SIZE, service_errors
from services.common.errors import Conflict, NotFound, ServiceTimeout, ServiceUnavailable, ValidationFailed

# The services whose event handlers retry and park (they mix in deadletters.ParkedEventsRpc).
PARKING_SERVICES = ("carts",)
ORDER_STATUSES = ("pending", "confirmed", "failed", "cancelled")
RECENT_ORDERS = 50
UNREACHABLE = (ServiceUnavailable, ServiceTimeout)
# Fixed notices a redirect may name (?notice=...): nothing the query says is shown as it is.
NOTICES = {
    "created": "The product was created.",
    "saved": "The product was saved.",
    "replayed": "Parked events were sent back to their queues.",
}


def notice(visit):
    return NOTICES.get(visit.query("notice"))


def dashboard(visit):
    """The service map (refreshed by htmx), order counts by status, and the ways into the rest."""
    try:
        counts = visit.service.orders.recent_orders(limit=1)["counts"]
    except UNREACHABLE as error:
        counts = {"unavailable": error.message}
    return visit.render("console/dashboard.html", services=service_map(visit), counts=counts)


def services(visit):
    """The live service map; its fragment is what the dashboard polls."""
    return visit.render(
        "console/dashboard.html",
        fragment="service_map" if visit.wants("service-map") else None,
        services=service_map(visit),
        counts={},
    )


def service_map(visit):
    """{"rows": [...]} from the broker's management API, or {"error": message} when it does not answer."""
    try:
        return {"rows": visit.service.service_map()}
    except UNREACHABLE as error:
        return {"error": error.message}


# --- products ---------------------------------------------------------------------------------------------


def products(visit, status=200, errors=None, draft=None):
    page = visit.page_number(last=10**6)
    q = visit.query("q").strip()[:200]
    params = {"limit": PAGE_SIZE, "offset": (page - 1) * PAGE_SIZE, "q": q or None}
    listing = visit.service.catalog.list_products(**params)  # not the cache: an operator sees the catalog as it is
    return visit.render(
        "console/products.html",
        status=status,
        products=listing["items"],
        total=listing["total"],
        page=page,
        pages=max(1, -(-listing["total"] // PAGE_SIZE)),
        q=q,
        errors=errors or {},
        draft=draft or {"sku": "", "name": "", "description": "", "price": "", "stock": "0"},
        notice=notice(visit),
    )


def create_product(visit):
    form = visit.form
    draft = {name: form.get(name, "") for name in ("sku", "name", "description", "price", "stock")}
    data = {
        "sku": draft["sku"].strip(),
        "name": draft["name"],
        "description": draft["description"],
        "price_cents": price_cents(draft["price"]),
        "stock": whole_number(draft["stock"]),
    }
    new, errors = validate(schemas.NewProduct, data)
    if data["price_cents"] is None:
        errors = {key: value for key, value in errors.items() if key != "price_cents"}
        errors["price"] = "must be an amount such as 12.50"
    status = 422
    if not errors:
        try:
            created = visit.service.catalog.create_product(new.model_dump(), call_id=call_id(None, "create_product"))
        except Conflict:
            errors, status = {"sku": "is taken by another product"}, 409
        except ValidationFailed as error:
            errors = service_errors(error)
        else:
            visit.service.product_cache.changed(created["sku"])
            return visit.redirect(f"/console/products/{created['sku']}?notice=created")
    return products(visit, status=status, errors=rename(errors), draft=draft)


def edit_product(visit, status=200, errors=None, draft=None):
    item = visit.service.catalog.get_product(visit.path["sku"])
    if draft is None:
        draft = {
            "name": item["name"],
            "description": item["description"],
            "price": price_text(item["price_cents"]),
            "stock": str(item["stock"]),
        }
    return visit.render(
        "console/product.html", status=status, product=item, draft=draft, errors=errors or {}, notice=notice(visit)
    )


def update_product(visit):
    sku, form = visit.path["sku"], visit.form
    draft = {name: form.get(name, "") for name in ("name", "description", "price", "stock")}
    data = {
        "name": draft["name"],
        "description": draft["description"],
        "price_cents": price_cents(draft["price"]),
        "stock": whole_number(draft["stock"]),
    }
    changes, errors = validate(schemas.ProductChanges, data)
    if data["price_cents"] is None:
        errors = {key: value for key, value in errors.items() if key != "price_cents"}
        errors["price"] = "must be an amount such as 12.50"
    if not errors:
        try:
            visit.service.catalog.update_product(sku, changes.changes(), call_id=call_id(None, "update_product"))
        except ValidationFailed as error:
            errors = service_errors(error)
        else:
            return visit.redirect(f"/console/products/{sku}?notice=saved")
        finally:  # even on a timeout: the change may have been made (as routes.update_product)
            visit.service.product_cache.changed(sku)
    return edit_product(visit, status=422, errors=rename(errors), draft=draft)


def rename(errors):
    """The model's field names as the form calls them."""
    return {("price" if name == "price_cents" else name): reason for name, reason in errors.items()}


# --- parked events ----------------------------------------------------------------------------------------


def events(visit):
    """Each parking service's parked events, with their error and a replay button."""
    parked = {}
    for name in PARKING_SERVICES:
        try:
            parked[name] = {"events": getattr(visit.service, name).parked_events(50)}
        except UNREACHABLE as error:
            parked[name] = {"error": error.message}
    return visit.render(
        "console/events.html",
        parked=parked,
        notice=notice(visit),
        replayed=visit.query("count") if visit.query("count").isdigit() else None,
    )


def replay(visit):
    name = visit.path["service"]
    if name not in PARKING_SERVICES:
        raise NotFound("No service of that name parks events.")
    count = getattr(visit.service, name).replay_parked()
    return visit.redirect(f"/console/events?notice=replayed&count={int(count)}")


# --- orders and audit -------------------------------------------------------------------------------------


def recent_orders(visit):
    status = visit.query("status") or None
    if status not in ORDER_STATUSES:
        status = None
    found = visit.service.orders.recent_orders(status=status, limit=RECENT_ORDERS)
    return visit.render(
        "console/orders.html", orders=found["items"], counts=found["counts"], chosen=status, statuses=ORDER_STATUSES
    )


def audit(visit):
    return visit.render("console/audit.html", report=visit.service.orders.audit())
