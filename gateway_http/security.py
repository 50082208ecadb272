"""Security headers on every answer, and the CORS policy (config `CORS_ORIGINS`).

Headers (`secure_headers`): `X-Content-Type-Options: nosniff`; `X-Frame-Options: DENY` and a CSP of
`default-src 'none'; frame-ancestors 'none'` (the API serves JSON, which nothing should render, frame or run),
except on HTML answers (the storefront's pages), which get `PAGE_CSP`: scripts, styles, images and requests from
this origin only, no inline script or style, forms posting to this origin only;
`Referrer-Policy: no-referrer`; and `Cache-Control: no-store` on every answer, except that an anonymous request's
successful answer keeps a `Cache-Control` its handler chose. An answer to a request carrying `Authorization` is
always `no-store`, and so is every error: nothing personal or transient is kept by a browser or a shared cache.

CORS (`CorsPolicy`): `CORS_ORIGINS` is a comma list of exact origins (`https://shop.example.com`); empty means
no CORS headers at all, so browsers keep the same-origin rule. `*` is refused: the policy allows credentials
(the Authorization header), which a wildcard must not be combined with. A preflight (OPTIONS with `Origin` and
`Access-Control-Request-Method`) from an allowed origin, for a method and headers the API uses, is answered 204
with the allowed methods and headers; any other preflight is 403 in the error envelope, without CORS headers.
"""

from werkzeug.wrappers import Response

from gateway_http.errors import HttpError

SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": "default-src 'none'; frame-ancestors 'none'",
    "Referrer-Policy": "no-referrer",
}
# The storefront's pages (gateway_http/storefront/): htmx from /static, no inline script or style anywhere.
PAGE_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
    "form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
)
NO_STORE = "no-store"

ALLOWED_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")
ALLOWED_HEADERS = ("Authorization", "Content-Type", "Idempotency-Key", "X-Request-ID")
EXPOSED_HEADERS = ("X-Request-ID", "Retry-After")
DEFAULT_MAX_AGE = 600  # seconds a browser may reuse a preflight's answer


def secure_headers(headers, status, authenticated):
    """Sets the security headers on `headers` (a response's) for an answer with `status` to a request that did
    (`authenticated`) or did not carry an Authorization header."""
    for name, value in SECURITY_HEADERS.items():
        headers[name] = value
    if str(headers.get("Content-Type", "")).startswith("text/html"):
        headers["Content-Security-Policy"] = PAGE_CSP
    if authenticated or status >= 400 or "Cache-Control" not in headers:
        headers["Cache-Control"] = NO_STORE
    return headers


def _origin(value):
    """An origin as browsers send it: scheme://host[:port], lowercase, nothing after."""
    return value.strip().rstrip("/").lower()


class CorsPolicy:
    """Which browser origins may call the API, and the CORS headers that says so."""

    def __init__(self, origins=(), max_age=DEFAULT_MAX_AGE):
        self.origins = frozenset(_origin(origin) for origin in origins if origin.strip())
        if "*" in self.origins or "null" in self.origins:
            raise ValueError("CORS_ORIGINS must list exact origins: '*' and 'null' are not allowed with credentials")
        for origin in self.origins:
            scheme, sep, rest = origin.partition("://")
            if scheme not in ("http", "https") or not sep or not rest or "/" in rest:
                raise ValueError(f"CORS_ORIGINS: {origin!r} is not an origin like https://shop.example.com")
        self.max_age = max_age

    @classmethod
    def from_config(cls, config):
        spec = config.get("CORS_ORIGINS") or ""
        return cls(
            spec.split(",") if isinstance(spec, str) else spec,
            int(config.get("CORS_MAX_AGE_SECONDS") or DEFAULT_MAX_AGE),
        )

    @property
    def enabled(self):
        return bool(self.origins)

    def allows(self, origin):
        return bool(origin) and _origin(origin) in self.origins

    @staticmethod
    def is_preflight(method, headers):
        return method == "OPTIONS" and "Origin" in headers and "Access-Control-Request-Method" in headers

    def preflight(self, headers):
        """The answer to a preflight request with these request headers: 204 with the policy, or 403."""
        origin = headers.get("Origin")
        method = headers.get("Access-Control-Request-Method", "").strip().upper()
        asked = {
            name.strip().lower()
            for name in headers.get("Access-Control-Request-Headers", "").split(",")
            if name.strip()
        }
        allowed_headers = {name.lower() for name in ALLOWED_HEADERS}
        if not self.allows(origin) or method not in ALLOWED_METHODS or not asked <= allowed_headers:
            return None
        response = Response(status=204)
        response.headers.pop("Content-Type", None)
        self.allow(response.headers, origin)
        response.headers["Access-Control-Allow-Methods"] = ", ".join(ALLOWED_METHODS)
        response.headers["Access-Control-Allow-Headers"] = ", ".join(ALLOWED_HEADERS)
        response.headers["Access-Control-Max-Age"] = str(self.max_age)
        return response

    def allow(self, response_headers, origin):
        response_headers["Access-Control-Allow-Origin"] = _origin(origin)
        response_headers["Access-Control-Allow-Credentials"] = "true"

    def apply(self, response_headers, origin):
        """The CORS headers of an ordinary answer to a request from `origin` (None: not a browser's)."""
        if not self.enabled:
            return
        response_headers.add("Vary", "Origin")  # the answer differs by origin: caches must keep them apart
        if self.allows(origin):
            self.allow(response_headers, origin)
            response_headers["Access-Control-Expose-Headers"] = ", ".join(EXPOSED_HEADERS)


def preflight_refused():
    return HttpError(403, "forbidden", "This origin, method or header is not allowed to call the API from a browser.")
