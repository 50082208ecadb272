"""Access tokens: JWT signed with HS256. accounts issues them; the gateway verifies them without a call.

Every token names its signing key in the `kid` header. A key id is a fingerprint of the secret (HMAC-SHA256 of a
fixed label under the secret, 16 hex digits), so operators never manage ids: moving the old secret from
JWT_SECRET into JWT_PREVIOUS_SECRETS keeps its id, and its tokens verify until they expire (the rotation
procedure is in SECURITY.md). The fingerprint tells an attacker nothing the token's own signature does not.

Verification trusts nothing in the header but the key id: the algorithm must be exactly HS256 (so `alg=none`,
HS512 or RS256 headers are refused before any signature check), the key id must be one of the configured keys,
and `iss`, `aud`, `sub`, `iat` and `exp` must be present and right.
"""

import hashlib
import hmac
import time

import jwt

from services.common.errors import Unauthorized

ISSUER = "cartmesh-accounts"
AUDIENCE = "cartmesh-api"
ALGORITHM = "HS256"
REQUIRED_CLAIMS = ["sub", "exp", "iat", "iss", "aud"]
# Only what HS256 tokens of ours carry: a header naming keys elsewhere (jku, jwk, x5u...) is refused outright.
ALLOWED_HEADER = {"alg", "typ", "kid"}
_KID_LABEL = b"cartmesh access token key id"
REFUSED = "the access token is missing, invalid or expired"


def key_id(secret):
    """The key id of `secret`: 16 hex digits, the same wherever the same secret is configured."""
    return hmac.new(secret.encode(), _KID_LABEL, hashlib.sha256).hexdigest()[:16]


def parse_secrets(text):
    """The secrets of a comma-separated list (JWT_PREVIOUS_SECRETS); blanks around entries are ignored."""
    if not text:
        return []
    return [entry.strip() for entry in str(text).split(",") if entry.strip()]


def key_ring(secret, previous=()):
    """{key id: secret} of the signing `secret` and the `previous` ones, which still verify."""
    ring = {}
    for each in [secret, *previous]:
        ring.setdefault(key_id(each), each)
    return ring


def issue_token(secret, user, ttl_seconds, now=None):
    """A signed token for `user` ({"id", "email", "is_admin"}) valid for `ttl_seconds`."""
    now = int(now if now is not None else time.time())
    claims = {
        "sub": user["id"],
        "email": user["email"],
        "admin": bool(user["is_admin"]),
        "iss": ISSUER,
        "aud": AUDIENCE,
        "iat": now,
        "exp": now + int(ttl_seconds),
    }
    return jwt.encode(claims, secret, algorithm=ALGORITHM, headers={"kid": key_id(secret)})


def verify_token(keys, token):
    """The claims of a valid token; `Unauthorized` for an expired, forged or malformed one.

    `keys` is a key ring ({key id: secret}, see `key_ring`) or a single secret.
    """
    if isinstance(keys, str):
        keys = key_ring(keys)
    try:
        header = jwt.get_unverified_header(token)
    except jwt.PyJWTError:
        raise Unauthorized(REFUSED) from None
    secret = keys.get(header.get("kid")) if isinstance(header.get("kid"), str) else None
    if header.get("alg") != ALGORITHM or secret is None or set(header) - ALLOWED_HEADER:
        raise Unauthorized(REFUSED)
    try:
        return jwt.decode(
            token,
            secret,
            algorithms=[ALGORITHM],
            audience=AUDIENCE,
            issuer=ISSUER,
            options={"require": REQUIRED_CLAIMS},
        )
    except jwt.PyJWTError:
        raise Unauthorized(REFUSED) from None
