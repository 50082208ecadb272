"""The gateway service: `nameko run --config config/gateway.yml gateway_http.service`.

Config: WEB_SERVER_ADDRESS (host:port), JWT_SECRET (required), MAX_BODY_BYTES, RPC_TIMEOUT (or RPC_TIMEOUTS per
service), HEALTH_TIMEOUT, RABBITMQ_API_URI and RABBITMQ_API_TIMEOUT (GET /services; the vhost comes from
AMQP_URI).
"""
from nameko.dependency_providers import Config

from gateway_http.auth import TokenVerifier
from gateway_http.health import HealthProbe
from gateway_http.router import Router
from gateway_http.routes import ROUTES
from gateway_http.server import every_request
from gateway_http.service_map import ServiceMap
from services.common.context import RequestId
from services.common.metrics import Telemetry
from services.common.rpc import Rpc

ROUTER = Router(ROUTES)


class GatewayService:
    """The public HTTP API: every request goes through the route table in routes.py."""

    name = "gateway"

    config = Config()
    request_id = RequestId()
    telemetry = Telemetry()
    verify_token = TokenVerifier()
    # The backends; /health asks every service named by an Rpc here.
    accounts = Rpc("accounts")
    catalog = Rpc("catalog")
    carts = Rpc("carts")
    payments = Rpc("payments")
    orders = Rpc("orders")
    health_probe = HealthProbe()
    service_map = ServiceMap()

    @every_request
    def handle(self, request):
        return ROUTER.dispatch(self, request)
