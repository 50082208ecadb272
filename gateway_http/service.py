"""The gateway service: `nameko run --config config/gateway.yml gateway_http.service`.

Config: WEB_SERVER_ADDRESS (host:port), JWT_SECRET (required), MAX_BODY_BYTES, RPC_TIMEOUT (or RPC_TIMEOUTS per
service), HEALTH_TIMEOUT, RABBITMQ_API_URI and RABBITMQ_API_TIMEOUT (GET /services; the vhost comes from
AMQP_URI); TRUSTED_PROXIES (http.py); rate limits and login throttling (ratelimit/), headers and CORS
(security.py), HTTP limits (server.py) and the pages' cookies (storefront/session.py).

One entrypoint takes every request: the storefront's pages ("/", /shop, /account, /console, /static) go to the
page site, everything else to the API's route table. Both run the same checks, limits, request ids, metrics and
logs (router.py), so the pages are no second door.
"""

from nameko.dependency_providers import Config

from gateway_http.auth import TokenVerifier
from gateway_http.cache import ProductCache, product_events
from gateway_http.health import HealthProbe
from gateway_http.http import ClientAddress
from gateway_http.ratelimit.extensions import LoginGuard, RateLimit
from gateway_http.router import Router
from gateway_http.routes import ROUTES
from gateway_http.server import every_request
from gateway_http.service_map import ServiceMap
from gateway_http.storefront.pages import is_page_path
from gateway_http.storefront.session import PageSessions
from gateway_http.storefront.site import SITE
from services.common.context import RequestId
from services.common.metrics import Telemetry
from services.common.rpc import Rpc

ROUTER = Router(ROUTES)


class GatewayService:
    """The public HTTP API (the route table in routes.py) and the storefront's pages (storefront/site.py)."""

    name = "gateway"

    config = Config()
    request_id = RequestId()
    telemetry = Telemetry()
    verify_token = TokenVerifier()
    client_address = ClientAddress()  # behind TRUSTED_PROXIES
    # Always there; with their limits at 0 they check nothing. Counters in Redis (REDIS_URL) or memory.
    rate_limit = RateLimit()  # RATE_LIMIT_*, every request
    login_guard = LoginGuard()  # LOGIN_THROTTLE_*, around POST /auth/token and the log-in page
    page_sessions = PageSessions()  # SESSION_SECRET, SESSION_COOKIE_SECURE: the pages' cookies and CSRF tokens
    # The backends; /health asks every service named by an Rpc here. Each has a circuit breaker (BREAKER_*);
    # the reads named `idempotent` are sent once more after a timeout or unavailable, writes never.
    accounts = Rpc("accounts", idempotent=("get_user",))
    catalog = Rpc("catalog", idempotent=("get_product", "get_products", "list_products"))
    carts = Rpc("carts", idempotent=("get_cart", "list_carts"))
    payments = Rpc("payments")
    orders = Rpc("orders", idempotent=("get_order", "list_orders", "recent_orders"))
    product_cache = ProductCache()  # CACHE_*: GET /products and /products/{sku} from memory
    health_probe = HealthProbe()
    service_map = ServiceMap()

    @every_request
    def handle(self, request):
        if is_page_path(request.path):
            return SITE.dispatch(self, request)
        return ROUTER.dispatch(self, request)

    @product_events("catalog", "product_changed")
    def on_product_changed(self, payload):
        """Every instance hears every change (a broadcast): drop what it makes stale (cache.py)."""
        self.product_cache.changed((payload.get("product") or {}).get("sku"))

    @product_events("catalog", "stock_changed")
    def on_stock_changed(self, payload):
        """An order's stock hold changed a product's stock: the same as any change, for the cache."""
        self.product_cache.changed(payload.get("sku"))
