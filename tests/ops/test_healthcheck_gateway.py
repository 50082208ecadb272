"""The gateway's container healthcheck: alive means answering /health with the health document, even a 503
(a backend is down: that backend's own check says so, and restarting the gateway would not help)."""

import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

from scripts.healthcheck import check_gateway


def serve(status, body, content_type="application/json"):
    """A one-route HTTP server answering `status` and `body`; returns (url, server)."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            payload = body.encode()
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return f"http://127.0.0.1:{server.server_address[1]}", server


@pytest.mark.parametrize(
    "status, body, healthy",
    [
        (200, json.dumps({"status": "ok", "services": {"carts": "ok"}}), True),
        (503, json.dumps({"status": "degraded", "services": {"carts": "unavailable"}}), True),
        (500, json.dumps({"error": {"code": "internal_error", "message": "a bug"}}), False),
        (200, "<html>not the gateway</html>", False),
    ],
)
def test_the_gateway_is_healthy_when_it_answers_its_health_document(status, body, healthy):
    url, server = serve(status, body)
    try:
        problem = check_gateway(url, timeout=5)
    finally:
        server.shutdown()
        server.server_close()
    assert (problem is None) == healthy, problem
