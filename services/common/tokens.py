"""Access tokens: JWT signed with HS256. accounts issues them; the gateway verifies them without a call."""
import time

import jwt

from services.common.errors import Unauthorized

ISSUER = "cartmesh-accounts"
AUDIENCE = "cartmesh-api"
ALGORITHM = "HS256"


def issue_token(secret, user, ttl_seconds, now=None):
    """A signed token for `user` ({"id", "email", "is_admin"}) valid for `ttl_seconds`."""
    now = int(now if now is not None else time.time())
    claims = {
        "sub": user["id"], "email": user["email"], "admin": bool(user["is_admin"]),
        "iss": ISSUER, "aud": AUDIENCE, "iat": now, "exp": now + int(ttl_seconds),
    }
    return jwt.encode(claims, secret, algorithm=ALGORITHM)


def verify_token(secret, token):
    """The claims of a valid token; `Unauthorized` for an expired, forged or malformed one."""
    try:
        return jwt.decode(token, secret, algorithms=[ALGORITHM], audience=AUDIENCE, issuer=ISSUER,
                          options={"require": ["sub", "exp", "iat", "iss", "aud"]})
    except jwt.PyJWTError:
        raise Unauthorized("the access token is missing, invalid or expired")
