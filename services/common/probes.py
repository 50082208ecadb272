"""A small HTTP server per process for Prometheus and for liveness/readiness probes.

Config `METRICS_PORT` (absent or 0: no server) and `METRICS_BIND` (default 0.0.0.0). Every container of the
process that has the `Telemetry` dependency and names the same address shares one server (tests run several
services in one process); the server starts with the first such container and stops with the last.

    GET /metrics        Prometheus text exposition of the whole process (every service in it, plus the
                        process collector: CPU, memory, open files)
    GET /health/live    200 while the process's containers run, else 503
    GET /health/ready   200 when the broker accepts a connection and every `Database` dependency answers
                        `SELECT 1` within `READINESS_TIMEOUT` seconds (default 2); else 503, and the JSON body
                        names what failed: {"status": "unavailable", "failed": ["carts.db"], "checks": {...}}

Served with eventlet's own WSGI server: no web framework, no access log.
"""

import json
import logging
import sys

import eventlet
from eventlet import wsgi
from kombu import Connection
from nameko.constants import AMQP_SSL_CONFIG_KEY, AMQP_URI_CONFIG_KEY
from prometheus_client import REGISTRY
from prometheus_client.exposition import choose_encoder

from services.common.listening import bind_exclusive
from services.common.logs import redact_text

log = logging.getLogger(__name__)

DEFAULT_BIND = "0.0.0.0"
DEFAULT_READINESS_TIMEOUT = 2.0

_servers = {}  # (bind, port) -> ProbeServer


def probe_address(config):
    """(bind, port) of the probe server `config` asks for, or None when `METRICS_PORT` is absent or 0."""
    port = int(config.get("METRICS_PORT") or 0)
    if not port:
        return None
    return (config.get("METRICS_BIND") or DEFAULT_BIND, port)


def attach(extension):
    """Serve probes for the container of `extension` (a bound extension: the `Telemetry` dependency) on the
    server its config names, started now if it is the first; returns the server, or None when the config asks
    for none."""
    address = probe_address(extension.container.config)
    if address is None:
        return None
    server = _servers.get(address)
    if server is None:
        server = _servers[address] = ProbeServer(*address)
    server.add(extension)
    return server


def detach(extension):
    """Stop serving probes for the container of `extension`; a server stops when it has no container left."""
    for address, server in list(_servers.items()):
        if server.remove(extension) and not server.members:
            del _servers[address]
            server.close()


def render_metrics(accept_header=None):
    """(body, content type) of the process's metrics, in the format `accept_header` prefers."""
    encoder, content_type = choose_encoder(accept_header or "")
    return encoder(REGISTRY), content_type


# --- checks -----------------------------------------------------------------------------------------------


def databases(container):
    """The container's `Database` dependencies (services.common.db) that have an engine. A process that never
    imported that module has none, and need not load SQLAlchemy to find that out (the gateway has no database)."""
    db = sys.modules.get("services.common.db")
    if db is None:
        return []
    return [p for p in container.dependencies if isinstance(p, db.Database) and p.engine is not None]


def broker_check(amqp_uri, ssl, timeout):
    """A check that opens (and closes) a connection to the broker at `amqp_uri`."""

    def check():
        with Connection(amqp_uri, ssl=ssl, connect_timeout=timeout) as connection:
            # No waiting between attempts: the probe answers now, the prober asks again later.
            connection.ensure_connection(max_retries=1, interval_start=0, interval_step=0, timeout=timeout)

    return check


def _failure(exc):
    """What a failed check answers: the exception's type and the first line of its message, secrets masked."""
    first_line = redact_text((str(exc).strip().splitlines() or [""])[0][:200])
    return f"{type(exc).__name__}: {first_line}" if first_line else type(exc).__name__


class ProbeServer:
    """The process's probe server on (bind, port), serving the containers added to it.

    Members are the extensions that attached (one per container): extensions hold their container through a
    weak proxy, which cannot be a dictionary key.
    """

    def __init__(self, bind, port):
        self.members = {}  # extension -> {name: DatabaseCheck} of its container
        self.socket = bind_exclusive(bind, port)  # a port taken by another process: StartupRefused
        self.address = self.socket.getsockname()[:2]
        self.thread = eventlet.spawn(
            wsgi.server, self.socket, self.app, log=log, log_output=False, debug=False, socket_timeout=30, max_size=32
        )
        log.info("probes and metrics on http://%s:%s", *self.address)

    def add(self, extension):
        self.members.setdefault(extension, {})

    def remove(self, extension):
        if extension not in self.members:
            return False
        for check in self.members.pop(extension).values():
            check.close()
        return True

    def close(self):
        self.thread.kill()
        self.socket.close()

    # -- the answers

    def live(self):
        return bool(self.members) and all(member.container.started for member in list(self.members))

    def checks(self):
        """{name: check} for everything readiness depends on."""
        checks = {}
        for member, db_checks in list(self.members.items()):
            container = member.container
            config = container.config
            timeout = float(config.get("READINESS_TIMEOUT") or DEFAULT_READINESS_TIMEOUT)
            # One broker check per broker, even with several containers on it.
            checks.setdefault(
                "broker", (broker_check(config[AMQP_URI_CONFIG_KEY], config.get(AMQP_SSL_CONFIG_KEY), timeout), timeout)
            )
            for provider in databases(container):
                name = f"{container.service_name}.{provider.attr_name}"
                if name not in db_checks:
                    db_checks[name] = provider.readiness_check()
                checks[name] = (db_checks[name], timeout)
        return checks

    def ready(self):
        """(ready, {name: "ok" or what failed}); the checks run side by side, each within its timeout."""
        if not self.live():
            return False, {"containers": "not running"}

        def run(item):
            name, (check, timeout) = item
            try:
                with eventlet.Timeout(timeout):
                    check()
            except eventlet.Timeout:
                return name, f"no answer within {timeout:g} s"
            except Exception as exc:
                return name, _failure(exc)
            return name, "ok"

        checks = self.checks()
        pool = eventlet.GreenPool(max(len(checks), 1))
        results = dict(pool.imap(run, sorted(checks.items())))
        return all(state == "ok" for state in results.values()), results

    def app(self, environ, start_response):
        path = environ.get("PATH_INFO", "")
        if environ.get("REQUEST_METHOD") not in ("GET", "HEAD"):
            return _answer(start_response, "405 Method Not Allowed", {"error": "GET only"}, [("Allow", "GET, HEAD")])
        try:
            if path == "/metrics":
                body, content_type = render_metrics(environ.get("HTTP_ACCEPT"))
                start_response("200 OK", [("Content-Type", content_type), ("Content-Length", str(len(body)))])
                return [body]
            if path == "/health/live":
                live = self.live()
                return _answer(
                    start_response,
                    "200 OK" if live else "503 Service Unavailable",
                    {"status": "ok" if live else "unavailable"},
                )
            if path == "/health/ready":
                ready, results = self.ready()
                body = {"status": "ok" if ready else "unavailable", "checks": results}
                if not ready:
                    body["failed"] = [name for name, state in results.items() if state != "ok"]
                    log.warning("not ready: %s", ", ".join(f"{n} ({results[n]})" for n in body["failed"]))
                return _answer(start_response, "200 OK" if ready else "503 Service Unavailable", body)
        except Exception:
            log.exception("probe %s failed", path)
            return _answer(start_response, "500 Internal Server Error", {"error": "probe failed"})
        return _answer(
            start_response,
            "404 Not Found",
            {"error": "not found", "paths": ["/metrics", "/health/live", "/health/ready"]},
        )


def _answer(start_response, status, payload, headers=()):
    body = json.dumps(payload, sort_keys=True).encode()
    start_response(status, [("Content-Type", "application/json"), ("Content-Length", str(len(body))), *headers])
    return [body]
