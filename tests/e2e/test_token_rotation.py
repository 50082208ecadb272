"""Rotating the token signing key over HTTP, in the two deploys SECURITY.md describes: a token of the old key
still works after the first (new key signs, old key only verifies), and is 401 after the second (old key gone)."""

import secrets

import jwt

from services.common.tokens import key_id
from tests.e2e.conftest import assert_error


def redeploy(system, **settings):
    """Restart accounts and the gateway (gateway first, as the procedure says) with new token settings."""
    for name in ("gateway", "accounts"):
        system.stop(name)
        system.configs[name].update(settings)
        system.start(name)


def test_old_tokens_verify_until_their_key_is_removed(own_system):
    old_secret = own_system.jwt_secret
    user = own_system.new_user()
    assert jwt.get_unverified_header(user.token)["kid"] == key_id(old_secret)
    assert user.get("/carts").status_code == 200

    new_secret = secrets.token_urlsafe(32)
    redeploy(own_system, JWT_SECRET=new_secret, JWT_PREVIOUS_SECRETS=old_secret)
    assert user.get("/carts").status_code == 200  # the old key's token, still valid
    email = f"rotated-{secrets.token_hex(4)}@example.com"
    assert (
        own_system.client().post("/auth/register", json={"email": email, "password": "correct horse"}).status_code
        == 201
    )
    fresh = own_system.client().login(email, "correct horse")
    assert jwt.get_unverified_header(fresh.token)["kid"] == key_id(new_secret)
    assert fresh.get("/carts").status_code == 200

    redeploy(own_system, JWT_PREVIOUS_SECRETS="")
    assert_error(user.get("/carts"), 401, "unauthorized")
    assert fresh.get("/carts").status_code == 200
