"""Who is calling: bearer tokens verified locally (no call to accounts), and the route's auth requirement."""

import logging
import time
from collections import OrderedDict
from typing import NamedTuple

from nameko.exceptions import ConfigurationError
from nameko.extensions import DependencyProvider

from gateway_http.errors import forbidden, unauthorized
from services.common.errors import Unauthorized
from services.common.tokens import key_ring, parse_secrets, verify_token

log = logging.getLogger(__name__)

NONE, USER, ADMIN = "none", "user", "admin"


class Principal(NamedTuple):
    """The authenticated caller."""

    id: str
    is_admin: bool


class VerifiedTokens:
    """Tokens already verified, with their claims, until they expire: a client sends the same token with every
    request, and checking its signature again (PyJWT: about a tenth of the gateway's CPU per authenticated
    request) tells nothing new. Bounded (least recently used out); `verify` is the real check."""

    def __init__(self, verify, max_entries=10000, clock=time.time):
        self.verify = verify
        self.max_entries = max_entries
        self.clock = clock
        self.entries = OrderedDict()  # token -> claims

    def __call__(self, token):
        claims = self.entries.get(token)
        if claims is not None:
            if claims["exp"] > self.clock():
                self.entries.move_to_end(token)
                return claims
            del self.entries[token]
        claims = self.verify(token)  # Unauthorized for an invalid or expired token: nothing is kept
        self.entries[token] = claims
        if len(self.entries) > self.max_entries:
            self.entries.popitem(last=False)
        return claims


class TokenVerifier(DependencyProvider):
    """Injects `verify(token) -> claims`, checking tokens against the key ring of config JWT_SECRET (the key
    accounts signs with) and JWT_PREVIOUS_SECRETS (comma-separated retired keys, accepted until removed). A token
    verified once is not verified again until it expires (`VerifiedTokens`).

    The container refuses to start without a secret: a gateway that cannot verify tokens must not serve.
    """

    def setup(self):
        config = self.container.config
        secret = config.get("JWT_SECRET")
        if not isinstance(secret, str) or not secret.strip():
            raise ConfigurationError("JWT_SECRET is empty: the gateway cannot verify access tokens")
        self.keys = key_ring(secret, parse_secrets(config.get("JWT_PREVIOUS_SECRETS")))
        if len(self.keys) > 1:
            log.info(
                "verifying access tokens with %d keys (%s); the first signs new tokens",
                len(self.keys),
                ", ".join(self.keys),
            )

        self.verified = VerifiedTokens(lambda token: verify_token(self.keys, token))

    def get_dependency(self, worker_ctx):
        return self.verified


def bearer_token(request):
    """The token of an `Authorization: Bearer <token>` header; 401 when it is missing or malformed."""
    header = request.headers.get("Authorization")
    if not header:
        raise unauthorized("This needs an access token: send Authorization: Bearer <token>.")
    scheme, _, token = header.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token or " " in token:
        raise unauthorized("The Authorization header must be: Bearer <token>.", error="invalid_request")
    return token


def principal_from_claims(claims):
    """The caller named by verified claims; 401 when the subject is unusable."""
    subject = claims.get("sub")
    if not isinstance(subject, str) or not subject:
        raise unauthorized("The access token is invalid.", error="invalid_token")
    return Principal(id=subject, is_admin=claims.get("admin") is True)


def authorize(requirement, request, verify):
    """The caller for a route that needs `requirement` (NONE, USER or ADMIN): None for NONE; 401 without a
    valid token; 403 for a non-admin where ADMIN is needed."""
    if requirement == NONE:
        return None
    token = bearer_token(request)
    try:
        claims = verify(token)
    except Unauthorized:
        raise unauthorized("The access token is invalid or expired.", error="invalid_token")
    principal = principal_from_claims(claims)
    if requirement == ADMIN and not principal.is_admin:
        raise forbidden("Only an administrator may do this.")
    return principal
