"""`python -m scripts.healthcheck <name> [timeout]`: the containers' healthcheck; exit 0 healthy, 1 not.

For a service, it calls that service's `health()` RPC (which answers "ok" when its database answers) through
the broker named in config/<name>.yml, waiting at most `timeout` seconds (default 5). For `gateway`, it asks the
gateway's `GET /health` on 127.0.0.1:`GATEWAY_PORT`; the gateway is healthy when it answers at all with the
health document, 200 or 503, since a 503 only says that some backend is down (that backend's own check reports
it) and restarting the gateway would not help.

With several replicas of a service, any one of them may answer the call: the check says "the service answers
on the broker", not "this very container answers".
"""

import json
import logging
import os
import signal
import sys
import urllib.error
import urllib.request
import warnings

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_TIMEOUT = 5.0


def check_service(name, config, timeout=DEFAULT_TIMEOUT):
    """None when `name` answers `health()` with "ok" within `timeout` seconds, else what went wrong."""
    from nameko.exceptions import RpcTimeout, UnknownService
    from nameko.rpc import ServiceProxy
    from nameko.standalone.rpc import ServiceRpcProxy

    class ExpiringProxy(ServiceRpcProxy):
        """nameko's standalone proxy, but its requests expire with the wait: a service that comes back later
        never works through a backlog of stale checks."""

        def __init__(self):
            super().__init__(name, config, timeout=timeout)
            self._proxy = ServiceProxy(self._worker_ctx, name, self._reply_listener, expiration=timeout)

    try:
        with ExpiringProxy() as service:
            answer = service.health()
    except UnknownService:
        return f"{name}: no queue on the broker (the service never started)"
    except RpcTimeout:
        return f"{name}: no answer within {timeout:g} s"
    except Exception as exc:  # a broker or remote failure: unhealthy either way, say which
        return f"{name}: {type(exc).__name__}: {exc}"
    if answer != "ok":
        return f"{name}: health() answered {answer!r}"
    return None


def check_gateway(url, timeout=DEFAULT_TIMEOUT):
    """None when the gateway at `url` answers `GET /health` with its health document, else what went wrong."""
    try:
        with urllib.request.urlopen(url.rstrip("/") + "/health", timeout=timeout) as response:
            status, body = response.status, response.read()
    except urllib.error.HTTPError as error:
        status, body = error.code, error.read()
    except (OSError, ValueError) as exc:
        return f"gateway: {exc}"
    try:
        document = json.loads(body)
    except ValueError:
        return f"gateway: /health answered {status} without JSON"
    if status not in (200, 503) or not isinstance(document, dict) or "status" not in document:
        return f"gateway: /health answered {status}: {body[:200]!r}"
    return None


def main(argv):
    if len(argv) not in (1, 2):
        print(__doc__.splitlines()[0], file=sys.stderr)
        return 2
    name = argv[0]
    # Only the verdict is wanted: no library chatter (amqp's notes on closing, eventlet's deprecation).
    logging.basicConfig(level=logging.ERROR)
    warnings.filterwarnings("ignore", message=r"\s*Eventlet is deprecated")
    timeout = float(argv[1]) if len(argv) > 1 else DEFAULT_TIMEOUT
    # A hard bound whatever hangs (a broker that accepts TCP but never speaks): SIGALRM ends the process.
    signal.alarm(int(timeout) + 5)
    if name == "gateway":
        problem = check_gateway(f"http://127.0.0.1:{os.environ.get('GATEWAY_PORT') or 8000}", timeout)
    else:
        config_path = os.path.join(ROOT, "config", f"{name}.yml")
        if not os.path.exists(config_path):
            print(f"unknown service {name!r}: no {config_path}", file=sys.stderr)
            return 2
        from services.common.config import load_config

        problem = check_service(name, load_config(config_path), timeout)
    if problem:
        print(f"unhealthy: {problem}", file=sys.stderr)
        return 1
    print(f"{name}: ok")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
