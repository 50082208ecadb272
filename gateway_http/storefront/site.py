"""Every page, as one table: path, handler and who may see it (pages.py serves it)."""

from werkzeug.wrappers import Response

from gateway_http.auth import ADMIN, USER
from gateway_http.errors import not_found
from gateway_http.storefront import console, shop
from gateway_http.storefront.pages import STATIC_CACHE, Page, Site, load_static

STATIC = load_static()


def static_file(visit):
    """A file of static/ (htmx, the stylesheet, the icon), cacheable by the browser."""
    found = STATIC.get(visit.path["file"])
    if found is None:
        raise not_found()
    body, content_type = found
    response = Response(body, content_type=content_type)
    response.headers["Cache-Control"] = STATIC_CACHE
    return response


PAGES = (
    Page("GET", "/", shop.catalog),
    Page("GET", "/shop/products/{sku}", shop.product),
    Page("GET", "/shop/cart", shop.cart, auth=USER),
    Page("POST", "/shop/cart/items", shop.add_to_cart, auth=USER),
    Page("POST", "/shop/cart/items/{sku}", shop.set_quantity, auth=USER),
    Page("POST", "/shop/cart/items/{sku}/remove", shop.remove_line, auth=USER),
    Page("POST", "/shop/checkout", shop.checkout, auth=USER),
    Page("GET", "/account/login", shop.login_form),
    Page("POST", "/account/login", shop.login),
    Page("GET", "/account/register", shop.register_form),
    Page("POST", "/account/register", shop.register),
    Page("POST", "/account/logout", shop.logout),
    Page("GET", "/account/orders", shop.orders, auth=USER),
    Page("GET", "/account/orders/{id}", shop.order, auth=USER),
    Page("GET", "/account/orders/{id}/status", shop.order, auth=USER),
    Page("POST", "/account/orders/{id}/cancel", shop.cancel_order, auth=USER),
    Page("GET", "/console", console.dashboard, auth=ADMIN),
    Page("GET", "/console/services", console.services, auth=ADMIN),
    Page("GET", "/console/products", console.products, auth=ADMIN),
    Page("POST", "/console/products", console.create_product, auth=ADMIN),
    Page("GET", "/console/products/{sku}", console.edit_product, auth=ADMIN),
    Page("POST", "/console/products/{sku}", console.update_product, auth=ADMIN),
    Page("GET", "/console/events", console.events, auth=ADMIN),
    Page("POST", "/console/events/{service}/replay", console.replay, auth=ADMIN),
    Page("GET", "/console/orders", console.recent_orders, auth=ADMIN),
    Page("GET", "/console/audit", console.audit, auth=ADMIN),
    Page("GET", "/static/{file}", static_file),
)

SITE = Site(PAGES)
