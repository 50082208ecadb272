"""The shopper's pages: catalog, product, cart and checkout, account (register, log in, log out), orders.

Each handler calls the services through the gateway's RPC proxies, as the API's handlers do (routes.py), a write
with a fresh call id (gateway_http/calls.py; checkout's comes from the form's idempotency key). A form
that breaks a rule is shown again with the reason (422, or the service's status), never a 500; a form that worked
answers 303 to the page that shows its effect, or, asked by htmx, the changed fragment.
"""

from gateway_http import schemas
from gateway_http.calls import call_id
from gateway_http.errors import HttpError
from gateway_http.storefront.forms import validate, whole_number
from gateway_http.storefront.pages import local_path, new_idempotency_key
from services.common.errors import (
    Conflict,
    EmptyCart,
    NotFound,
    Unauthorized,
    UnknownProduct,
    ValidationFailed,
)
from services.common.rules import SEARCH_MAX_LENGTH

PAGE_SIZE = 12  # products per catalog page
ORDERS_PAGE_SIZE = 10
# The simulated provider's test cards (payments/domain.py), listed on the checkout form.
TEST_CARDS = (
    ("4242424242424242", "paid"),
    ("4000000000000002", "declined: card_declined"),
    ("4000000000009995", "declined: insufficient_funds"),
)


def service_errors(error):
    """{field: reason} of a service's ValidationFailed, or its message under "form"."""
    fields = (error.details or {}).get("fields") if isinstance(error.details, dict) else None
    return dict(fields) if fields else {"form": error.message}


# --- catalog ----------------------------------------------------------------------------------------------


def catalog(visit):
    """The catalog grid: `?q` searches names and descriptions, `?page` from 1. Pages come from the gateway's
    product cache (cache.py), the same entries as GET /products."""
    q = visit.query("q").strip()
    errors = {}
    if len(q) > SEARCH_MAX_LENGTH or "\x00" in q:
        errors, q = {"q": f"must be at most {SEARCH_MAX_LENGTH} characters"}, ""
    page = visit.page_number(last=10**6)
    params = {"limit": PAGE_SIZE, "offset": (page - 1) * PAGE_SIZE, "q": q or None}
    listing = visit.service.product_cache.page(params, lambda: visit.service.catalog.list_products(**params))
    pages = max(1, -(-listing["total"] // PAGE_SIZE))
    return visit.render(
        "catalog.html",
        status=422 if errors else 200,
        fragment="catalog" if visit.wants("catalog") else None,
        products=listing["items"],
        total=listing["total"],
        q=q,
        page=page,
        pages=pages,
        errors=errors,
    )


def product(visit):
    sku = visit.path["sku"]
    item = visit.service.product_cache.product(sku, lambda: visit.service.catalog.get_product(sku))
    return visit.render("product.html", product=item, errors={}, quantity="1", added=None)


# --- cart -------------------------------------------------------------------------------------------------


def cart(visit):
    return cart_page(visit)


def cart_page(visit, status=200, errors=None, card_number=""):
    """The cart (or, to htmx, its fragment): lines, total, and the checkout form."""
    return visit.render(
        "cart.html",
        status=status,
        fragment="cart" if visit.wants("cart") else None,
        cart=visit.cart,
        errors=errors or {},
        card_number=card_number,
        idempotency_key=new_idempotency_key(),
        test_cards=TEST_CARDS,
    )


def add_to_cart(visit):
    """Add `quantity` of `sku` to the open cart (opened now if there is none)."""
    form = visit.form
    line, errors = validate(
        schemas.NewLine, {"sku": form.get("sku", ""), "quantity": whole_number(form.get("quantity", "1"))}
    )
    if line is not None:
        try:
            carts = visit.service.carts
            if visit.cart is None:
                visit.cart = carts.create_cart(
                    visit.user.id, items=[line.model_dump()], call_id=call_id(visit.user.id, "create_cart")
                )
            else:
                visit.cart = carts.add_item(
                    visit.user.id, visit.cart["id"], line.sku, line.quantity, call_id=call_id(visit.user.id, "add_item")
                )
        except (UnknownProduct, ValidationFailed, Conflict) as error:
            errors = service_errors(error)
    if not errors:
        if visit.wants("add-result"):
            return visit.render("product.html", fragment="add_result", added=line.quantity, errors={})
        return visit.redirect("/shop/cart")
    sku = form.get("sku", "")
    if not schemas.exact(schemas.SKU_PATTERN).match(sku):
        raise HttpError(422, "validation_error", "There is no such product to add.")
    item = visit.service.product_cache.product(sku, lambda: visit.service.catalog.get_product(sku))
    return visit.render(
        "product.html",
        status=422,
        fragment="add_result" if visit.wants("add-result") else None,
        product=item,
        errors=errors,
        quantity=form.get("quantity", "1"),
        added=None,
    )


def set_quantity(visit):
    """Set a line's quantity (0 removes it)."""
    line, errors = validate(schemas.LineQuantity, {"quantity": whole_number(visit.form.get("quantity", ""))})
    return change_line(visit, errors, lambda cart_id: (cart_id, visit.path["sku"], line.quantity), "set_item")


def remove_line(visit):
    return change_line(visit, {}, lambda cart_id: (cart_id, visit.path["sku"]), "remove_item")


def change_line(visit, errors, arguments, method):
    cart_id = visit.form.get("cart_id", "")
    if not errors:
        if not schemas.exact(schemas.UUID_PATTERN).match(cart_id):
            raise HttpError(422, "validation_error", "The form names no cart.")
        try:
            visit.cart = getattr(visit.service.carts, method)(
                visit.user.id, *arguments(cart_id), call_id=call_id(visit.user.id, method)
            )
        except (ValidationFailed, Conflict, UnknownProduct) as error:
            errors = service_errors(error)
        except NotFound:  # the line (or the cart) is gone already: show the cart as it is
            visit.cart = ...
    if errors:
        return cart_page(visit, status=422, errors={f"line:{visit.path['sku']}": next(iter(errors.values()))})
    if visit.wants("cart"):
        return cart_page(visit)
    return visit.redirect("/shop/cart")


def checkout(visit):
    """Check the cart out with the card (orders registers it), and show the new order (which then settles by
    itself)."""
    form = visit.form
    card_number = form.get("card_number", "").replace(" ", "")
    cart_id, key = form.get("cart_id", ""), form.get("idempotency_key", "")
    _, errors = validate(schemas.Payment, {"card_number": card_number})
    if not schemas.exact(schemas.UUID_PATTERN).match(cart_id) or not schemas.IDEMPOTENCY_KEY.match(key):
        errors["form"] = "The form is incomplete: open the cart again."
    if errors:
        return cart_page(visit, status=422, errors=errors, card_number=card_number)
    try:
        placed = visit.service.orders.checkout(
            visit.user.id, cart_id, card_number, idempotency_key=key, call_id=call_id(visit.user.id, "checkout", key)
        )
    except ValidationFailed as error:
        if "card_number" in ((error.details or {}).get("fields") or {}):  # the Luhn check
            return cart_page(visit, status=422, errors={"card_number": "is not a valid card number"}, card_number="")
        visit.cart = ...
        return cart_page(visit, status=error.status, errors={"form": error.message})
    except (EmptyCart, Conflict, NotFound) as error:
        visit.cart = ...
        return cart_page(visit, status=error.status, errors={"form": error.message})
    return visit.redirect(f"/account/orders/{placed['order']['id']}")


# --- account ----------------------------------------------------------------------------------------------


def login_form(visit):
    return visit.render("login.html", email="", next=local_path(visit.query("next")), errors={})


def login(visit):
    form = visit.form
    email, password = form.get("email", ""), form.get("password", "")
    next_path = local_path(form.get("next", "/"))
    credentials, errors = validate(schemas.Credentials, {"email": email, "password": password})
    status = 422
    if credentials is not None:
        try:
            with visit.service.login_guard(credentials.email, visit.service.client_address(visit.request.environ)):
                issued = visit.service.accounts.issue_token(credentials.email, credentials.password)
        except Unauthorized:
            errors, status = {"form": "The email or the password is wrong."}, 401
        except HttpError as error:  # the login guard's 429: too many failed logins
            if error.status != 429:
                raise
            errors, status = {"form": error.message}, 429
    if errors:
        return visit.render("login.html", status=status, email=email, next=next_path, errors=errors)
    log_in(visit, issued)
    return visit.redirect(next_path)


def log_in(visit, issued):
    visit.new_token = issued["access_token"]
    visit.new_token_max_age = int(issued.get("expires_in") or 3600)


def register_form(visit):
    return visit.render("register.html", email="", errors={})


def register(visit):
    email, password = visit.form.get("email", ""), visit.form.get("password", "")
    registration, errors = validate(schemas.Registration, {"email": email, "password": password})
    status = 422
    if registration is not None:
        try:
            visit.service.accounts.register(
                registration.email, registration.password, call_id=call_id(None, "register")
            )
        except Conflict:
            errors, status = {"email": "already has an account: log in instead"}, 409
        except ValidationFailed as error:
            errors = service_errors(error)
    if errors:
        return visit.render("register.html", status=status, email=email, errors=errors)
    log_in(visit, visit.service.accounts.issue_token(registration.email, registration.password))
    return visit.redirect("/")


def logout(visit):
    visit.logged_out = True
    return visit.redirect("/")


# --- orders -----------------------------------------------------------------------------------------------


def orders(visit):
    page = visit.page_number(last=10**5)
    listing = visit.service.orders.list_orders(
        visit.user.id, limit=ORDERS_PAGE_SIZE, offset=(page - 1) * ORDERS_PAGE_SIZE
    )
    pages = max(1, -(-listing["total"] // ORDERS_PAGE_SIZE))
    return visit.render("orders.html", orders=listing["items"], page=page, pages=pages, total=listing["total"])


def order(visit, status=200, errors=None):
    """An order; while it is pending, the page refreshes its status by itself (htmx polls the fragment, and
    without JavaScript the page reloads itself)."""
    item = visit.service.orders.get_order(visit.user.id, visit.path["id"])
    return visit.render(
        "order.html",
        status=status,
        fragment="status" if visit.wants("order-status") else None,
        order=item,
        errors=errors or {},
    )


def cancel_order(visit):
    try:
        visit.service.orders.cancel_order(visit.user.id, visit.path["id"])
    except Conflict as error:
        return order(visit, status=409, errors={"form": error.message})
    return visit.redirect(f"/account/orders/{visit.path['id']}")
