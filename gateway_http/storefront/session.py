"""Who is browsing, and whether a form came from our own page: the page cookies and CSRF tokens.

- `cartmesh_session` holds the access token accounts issued at log-in, the same bearer token the API takes, so a
  page is authorized exactly as an API call with that token would be. `HttpOnly` (no script reads it),
  `SameSite=Lax` (another site's form post does not carry it), `Path=/`, and it lives as long as the token. Log
  out deletes it (the token itself stays valid until it expires: tokens are verified without a call to accounts).
- `cartmesh_visit` is a random id set on the first page a browser sees. It binds the CSRF tokens of forms shown
  before log-in (log in, register), so that another site cannot log a visitor into its own account.
- Both are `Secure` unless config `SESSION_COOKIE_SECURE` is false, which only plain HTTP on loopback needs
  (`make run`); docs/STOREFRONT.md says who sets what.

A CSRF token is HMAC-SHA256 under a server secret of the session's token (or, before log-in, of the visit id):
a synchronizer token that needs no storage, changes with every log-in and cannot be made without the secret. The
secret is config `SESSION_SECRET`, or else derived from `JWT_SECRET` (an HMAC of a fixed label under it), so no
deployment needs a new secret and none is in code.
"""

import base64
import hashlib
import hmac
import secrets

from nameko.exceptions import ConfigurationError
from nameko.extensions import DependencyProvider

SESSION_COOKIE = "cartmesh_session"
VISIT_COOKIE = "cartmesh_visit"
CSRF_FIELD = "csrf_token"
VISIT_MAX_AGE = 30 * 24 * 3600  # seconds a browser keeps its visit id
_SECRET_LABEL = b"cartmesh storefront csrf"
_FALSE = {"false", "0", "no", "off"}


def csrf_secret(config):
    """The key of the CSRF tokens: SESSION_SECRET, else one derived from JWT_SECRET."""
    own = config.get("SESSION_SECRET")
    if isinstance(own, str) and own.strip():
        return own.encode()
    jwt_secret = config.get("JWT_SECRET")
    if not isinstance(jwt_secret, str) or not jwt_secret.strip():
        raise ConfigurationError("SESSION_SECRET and JWT_SECRET are empty: the pages cannot sign their forms")
    return hmac.new(jwt_secret.encode(), _SECRET_LABEL, hashlib.sha256).digest()


def csrf_token(secret, binding):
    """The CSRF token of the session or visit `binding`."""
    digest = hmac.new(secret, b"csrf\0" + binding.encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def is_secure(value):
    """Config SESSION_COOKIE_SECURE as a bool: anything but an explicit false is true."""
    if isinstance(value, bool):
        return value
    return str(value).strip().lower() not in _FALSE if value is not None else True


def new_visit_id():
    return secrets.token_urlsafe(24)


class PageSessions(DependencyProvider):
    """Injects the container's page-session policy (this provider): `csrf_token(binding)`,
    `valid_csrf(binding, token)` and `set_cookie(response, name, value, max_age)` / `delete_cookie(response,
    name)` with the cookie attributes above. Config: SESSION_SECRET (or JWT_SECRET), SESSION_COOKIE_SECURE
    (default true). Holds nothing per worker."""

    def setup(self):
        config = self.container.config
        self.secret = csrf_secret(config)
        self.secure = is_secure(config.get("SESSION_COOKIE_SECURE", True))

    def get_dependency(self, worker_ctx):
        return self

    def csrf_token(self, binding):
        return csrf_token(self.secret, binding)

    def valid_csrf(self, binding, token):
        return bool(binding) and isinstance(token, str) and hmac.compare_digest(self.csrf_token(binding), token)

    def set_cookie(self, response, name, value, max_age):
        response.set_cookie(name, value, max_age=max_age, path="/", secure=self.secure, httponly=True, samesite="Lax")

    def delete_cookie(self, response, name):
        response.delete_cookie(name, path="/", secure=self.secure, httponly=True, samesite="Lax")
