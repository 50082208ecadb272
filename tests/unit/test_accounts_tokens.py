"""Access tokens as accounts issues them, and the start-up checks of the token issuer."""

from types import SimpleNamespace

import jwt
import pytest

from services.accounts.dependencies import TokenIssuer, Tokens, token_ttl
from services.common.errors import StartupRefused, Unauthorized
from services.common.tokens import AUDIENCE, ISSUER, key_id, verify_token

SECRET = "unit-test-secret-that-is-long-enough-for-hs256"
USER = {"id": "7d1f4c5e-0000-4000-8000-000000000001", "email": "Alice@Example.com", "is_admin": True}


def test_token_contents():
    answer = Tokens(SECRET, 900).issue(USER)
    assert answer["token_type"] == "bearer"
    assert answer["expires_in"] == 900
    claims = verify_token(SECRET, answer["access_token"])
    assert claims["sub"] == USER["id"]
    assert claims["email"] == USER["email"]
    assert claims["admin"] is True
    assert (claims["iss"], claims["aud"]) == (ISSUER, AUDIENCE)
    assert claims["exp"] - claims["iat"] == 900
    assert jwt.get_unverified_header(answer["access_token"]) == {"alg": "HS256", "typ": "JWT", "kid": key_id(SECRET)}


def test_token_of_another_secret_is_refused():
    answer = Tokens(SECRET, 900).issue(dict(USER, is_admin=False))
    with pytest.raises(Unauthorized):
        verify_token(SECRET + "x", answer["access_token"])


@pytest.mark.parametrize("value, ttl", [(None, 3600), ("", 3600), (60, 60), ("120", 120)])
def test_token_ttl(value, ttl):
    assert token_ttl({"TOKEN_TTL_SECONDS": value}) == ttl


@pytest.mark.parametrize("value", [0, -5, "soon", True, 1.5])
def test_bad_token_ttl_is_a_configuration_error(value):
    with pytest.raises(StartupRefused, match="TOKEN_TTL_SECONDS"):
        token_ttl({"TOKEN_TTL_SECONDS": value})


def issuer_with(config):
    issuer = TokenIssuer()
    issuer.container = SimpleNamespace(config=config)
    return issuer


@pytest.mark.parametrize("config", [{}, {"JWT_SECRET": ""}, {"JWT_SECRET": "   "}, {"JWT_SECRET": None}])
def test_issuer_refuses_to_start_without_a_secret(config):
    with pytest.raises(StartupRefused, match="JWT_SECRET is not set"):
        issuer_with(config).setup()


def test_issuer_injects_tokens_with_the_configured_secret_and_ttl():
    issuer = issuer_with({"JWT_SECRET": SECRET, "TOKEN_TTL_SECONDS": 60})
    issuer.setup()
    tokens = issuer.get_dependency(worker_ctx=None)
    assert (tokens.secret, tokens.ttl_seconds) == (SECRET, 60)
