"""What the broker knows of the live services, from the RabbitMQ management API: `GET /services`.

A service's instances are the consumers of its RPC queue (`rpc-<name>`, nameko's name for it) and its queue
depth is that queue's ready messages. The management API's figures are sampled by the broker (every few seconds
by default), so a new or stopped instance shows up after a short delay.
"""

import logging
from urllib.parse import quote, unquote, urlsplit, urlunsplit

import requests
from nameko.extensions import DependencyProvider

from services.common.errors import ServiceUnavailable
from services.common.rpc import Rpc
from services.common.rpc_transport import addresses

MANAGEMENT_PORT = 15672
AUTO = "auto"  # RABBITMQ_API_URI's default: the management API of the broker AMQP_URI names
DEFAULT_TIMEOUT = 2.0

log = logging.getLogger(__name__)


def vhost_of(amqp_uri):
    """The virtual host an AMQP URI names ("/" when it names none)."""
    path = urlsplit(amqp_uri or "").path
    return unquote(path[1:]) if len(path) > 1 else "/"


def management_api_uri(configured, amqp_uri):
    """The management API's URI: `configured` unless it is empty or "auto"; else that of the broker `amqp_uri`
    names (same host and credentials, port 15672), e.g. http://guest:guest@localhost:15672/api."""
    if configured and configured != AUTO:
        return configured
    parts = urlsplit(amqp_uri or "amqp://guest:guest@localhost:5672/")
    userinfo = ""
    if parts.username:
        userinfo = parts.username + (f":{parts.password}" if parts.password is not None else "") + "@"
    return f"http://{userinfo}{parts.hostname or 'localhost'}:{MANAGEMENT_PORT}/api"


def split_credentials(api_uri):
    """(the URI without user and password, (user, password) or None): the password never reaches a log line."""
    parts = urlsplit(api_uri)
    netloc = parts.hostname or ""
    if parts.port:
        netloc = f"{netloc}:{parts.port}"
    auth = (unquote(parts.username or ""), unquote(parts.password or "")) if parts.username else None
    return urlunsplit((parts.scheme, netloc, parts.path.rstrip("/"), "", "")), auth


def queue_stats(api_uri, vhost, timeout=DEFAULT_TIMEOUT):
    """{queue name: {"consumers", "messages_ready"}} of every queue in `vhost`; ServiceUnavailable when the
    management API does not answer, or answers with an error."""
    base, auth = split_credentials(api_uri)
    url = f"{base}/queues/{quote(vhost, safe='')}"
    try:
        response = requests.get(url, auth=auth, timeout=timeout, params={"columns": "name,consumers,messages_ready"})
        response.raise_for_status()
        queues = response.json()
    except (requests.RequestException, ValueError) as exc:
        log.warning("the RabbitMQ management API at %s did not answer: %s", base, type(exc).__name__)
        raise ServiceUnavailable("The broker's management API did not answer.")
    return {queue["name"]: queue for queue in queues if isinstance(queue, dict) and "name" in queue}


def service_map(names, queues):
    """[{"name", "instances", "queue_depth"}] for each service in `names`, from `queue_stats`' answer (a service
    whose queue does not exist has 0 of both)."""
    rows = []
    for name in names:
        queue = queues.get(f"rpc-{name}") or {}
        rows.append(
            {
                "name": name,
                "instances": int(queue.get("consumers") or 0),
                "queue_depth": int(queue.get("messages_ready") or 0),
            }
        )
    return rows


class ServiceMap(DependencyProvider):
    """Injects `services()` → `service_map` of every service the gateway calls (its `Rpc` dependencies, like
    /health). Config: RABBITMQ_API_URI (default "auto": `management_api_uri` of AMQP_URI), the vhost from
    AMQP_URI, RABBITMQ_API_TIMEOUT (seconds, default 2)."""

    def setup(self):
        config = self.container.config
        # With several brokers in AMQP_URI (a cluster's nodes), the first one's API and vhost.
        first_broker = (addresses(config.get("AMQP_URI") or "") or [None])[0]
        self.api_uri = management_api_uri(config.get("RABBITMQ_API_URI"), first_broker)
        self.vhost = vhost_of(first_broker)
        self.timeout = float(config.get("RABBITMQ_API_TIMEOUT") or DEFAULT_TIMEOUT)
        self.names = sorted(
            {dependency.target_service for dependency in self.container.dependencies if isinstance(dependency, Rpc)}
        )

    def get_dependency(self, worker_ctx):
        return lambda: service_map(self.names, queue_stats(self.api_uri, self.vhost, self.timeout))
