"""JSON over HTTP: answers with the right content type, and request bodies read safely.

A body is read from the WSGI input with a hard limit (`Content-Length` is checked first, and at most limit + 1
bytes are read so a chunked body cannot run past it), must be `application/json` (UTF-8), and must be a JSON
object. JSON that Python's parser would take but that means different things to different readers is refused
as 400: a key given twice in one object (which one wins?), a string holding half of a surrogate pair (not
Unicode: it cannot be stored or sent on), NaN and Infinity, and nesting deeper than `MAX_JSON_DEPTH`.

Who is calling: the TCP peer, or behind a trusted proxy the address it forwarded (`client_address`).
"""

import ipaddress
import json
import re

from nameko.exceptions import ConfigurationError
from nameko.extensions import DependencyProvider
from werkzeug.wrappers import Response

from gateway_http.errors import bad_request, payload_too_large, unsupported_media_type, validation_error

JSON_CONTENT_TYPE = "application/json; charset=utf-8"
_READ_CHUNK = 16 * 1024
# No request model nests deeper than 3; anything past this is refused before a model walks it.
MAX_JSON_DEPTH = 32
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")  # a valid pair is decoded to one character by the parser


def json_response(status, payload, headers=None):
    """An answer with `payload` as a UTF-8 JSON body."""
    body = json.dumps(payload, ensure_ascii=False, separators=(",", ":"))
    return Response(body.encode("utf-8"), status=status, headers=headers, content_type=JSON_CONTENT_TYPE)


def empty_response(status=204, headers=None):
    """An answer without a body (and so without a content type)."""
    response = Response(status=status, headers=headers)
    response.headers.pop("Content-Type", None)
    return response


def error_response(error):
    """The envelope answer for an `HttpError`."""
    return json_response(error.status, error.body(), headers=error.headers)


def check_declared_length(request, limit):
    """413 when the declared `Content-Length` is over `limit`: refused before anything is read."""
    if request.content_length is not None and request.content_length > limit:
        raise payload_too_large(limit)


def read_body(request, limit):
    """The raw body, at most `limit` bytes, else 413."""
    check_declared_length(request, limit)
    # werkzeug's `request.stream` is empty for a chunked body under eventlet (the server does not set
    # wsgi.input_terminated), so read eventlet's input directly: it ends at Content-Length or the last chunk.
    stream = request.environ["wsgi.input"]
    chunks, size = [], 0
    while size <= limit:
        chunk = stream.read(min(_READ_CHUNK, limit + 1 - size))
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    if size > limit:
        raise payload_too_large(limit)
    return b"".join(chunks)


def is_json(request):
    """Whether the body is plain application/json: no charset or charset=utf-8, and not compressed."""
    charset = request.mimetype_params.get("charset", "utf-8").lower()
    encoding = request.headers.get("Content-Encoding", "identity").strip().lower()
    return request.mimetype == "application/json" and charset in ("utf-8", "utf8") and encoding == "identity"


def parse_json_object(request, body, empty_means_object=False):
    """The request body as a dict: 415 for another content type, 400 for bad UTF-8, bad JSON or not an
    object. An empty body is `{}` when `empty_means_object`, else 400."""
    if not body:
        if empty_means_object:
            return {}
        raise bad_request("The request needs a JSON object body.")
    if not is_json(request):
        raise unsupported_media_type()
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise bad_request("The request body is not valid UTF-8.")
    try:
        value = json.loads(text, parse_constant=_refuse_constant, object_pairs_hook=_object_without_duplicates)
    except _DuplicateKey as exc:
        raise bad_request(f"The request body gives the key {exc.key!r} more than once.")
    except (ValueError, RecursionError):
        raise bad_request("The request body is not valid JSON.")
    if not isinstance(value, dict):
        raise bad_request("The request body must be a JSON object.")
    _check_tree(value)
    return value


def _refuse_constant(name):
    # NaN and Infinity are not JSON, although Python's parser accepts them.
    raise ValueError(f"{name} is not JSON")


class _DuplicateKey(ValueError):
    def __init__(self, key):
        super().__init__(key)
        self.key = key[:64]


def _object_without_duplicates(pairs):
    # Python keeps the last of repeated keys, other parsers the first: refuse rather than guess.
    value = {}
    for key, item in pairs:
        if key in value:
            raise _DuplicateKey(key)
        value[key] = item
    return value


def _check_tree(value):
    """400 for nesting deeper than MAX_JSON_DEPTH or a string (value or key) with a lone surrogate. Iterative,
    so that a deep body cannot exhaust the stack here."""
    pending = [(value, 1)]
    while pending:
        item, depth = pending.pop()  # depth: how many objects and arrays `item` is in, itself included
        if isinstance(item, (dict, list)) and depth > MAX_JSON_DEPTH:
            raise bad_request(f"The request body is nested deeper than {MAX_JSON_DEPTH} levels.")
        if isinstance(item, dict):
            for key, child in item.items():
                _check_text(key)
                pending.append((child, depth + 1))
        elif isinstance(item, list):
            pending.extend((child, depth + 1) for child in item)
        elif isinstance(item, str):
            _check_text(item)


def _check_text(text):
    if _LONE_SURROGATE.search(text):
        raise bad_request("The request body holds a string that is not valid Unicode (a lone surrogate).")


def query_values(request):
    """The query string as {name: value}; 422 when a name is given more than once."""
    repeated = {name: "given more than once" for name, values in request.args.lists() if len(values) > 1}
    if repeated:
        raise validation_error("The query string is not valid.", repeated)
    return request.args.to_dict()


def trusted_networks(spec):
    """The networks in a comma list such as "10.0.0.0/8, 127.0.0.1"; ValueError for a bad entry."""
    return tuple(ipaddress.ip_network(part.strip(), strict=False) for part in (spec or "").split(",") if part.strip())


def ip_address(text):
    """`text` as an IPv4 or IPv6 address; None when it is not one."""
    try:
        return ipaddress.ip_address(text.strip())
    except ValueError:
        return None


def client_address(environ, trusted=()):
    """The caller's address: the peer's, or, when the peer is in a `trusted` network (a proxy of ours), the
    nearest untrusted address in `X-Forwarded-For` (the ones further left are the caller's own claims)."""
    peer = environ.get("REMOTE_ADDR") or "unknown"
    if not trusted:
        return peer
    chain = [peer] + [hop for hop in reversed(environ.get("HTTP_X_FORWARDED_FOR", "").split(",")) if hop.strip()]
    for hop in chain:
        address = ip_address(hop)
        if address is None:  # garbage in the header: stop believing it
            return str(hop).strip()[:64]
        if not any(address in network for network in trusted):
            return str(address)
    return str(ip_address(chain[-1]))


class ClientAddress(DependencyProvider):
    """Injects `client_address(environ) -> str`, the caller's address behind the proxies of config
    `TRUSTED_PROXIES` (comma-separated addresses or networks; empty: the peer is the caller).

    Set-up parses `TRUSTED_PROXIES` once: a bad entry stops the start rather than every request."""

    def setup(self):
        try:
            self.trusted = trusted_networks(self.container.config.get("TRUSTED_PROXIES"))
        except ValueError as exc:
            raise ConfigurationError(f"TRUSTED_PROXIES: {exc}")

    def get_dependency(self, worker_ctx):
        return self.address

    def address(self, environ):
        return client_address(environ, self.trusted)
