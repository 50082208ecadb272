"""Token verification as the gateway does it: every way a token is refused, key rotation, and the verifier's
start-up checks. Forged tokens are built by hand (base64 JSON), so nothing here trusts PyJWT to make them."""

import base64
import json
import time
from types import SimpleNamespace

import jwt
import pytest
from nameko.exceptions import ConfigurationError
from werkzeug.test import EnvironBuilder
from werkzeug.wrappers import Request

from gateway_http.auth import USER, TokenVerifier, authorize
from gateway_http.errors import HttpError
from services.common.errors import Unauthorized
from services.common.tokens import (
    AUDIENCE,
    ISSUER,
    issue_token,
    key_id,
    key_ring,
    parse_secrets,
    verify_token,
)

SECRET = "the-current-signing-secret-" + "0123456789abcdef" * 3
OLD = "the-previous-signing-secret-" + "0123456789abcdef" * 3
USER_DICT = {"id": "5b1c6a8e-0000-4000-8000-00000000000a", "email": "ann@example.com", "is_admin": False}


def b64(data):
    raw = data if isinstance(data, bytes) else json.dumps(data).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def claims(**changes):
    now = int(time.time())
    found = {
        "sub": USER_DICT["id"],
        "email": USER_DICT["email"],
        "admin": False,
        "iss": ISSUER,
        "aud": AUDIENCE,
        "iat": now,
        "exp": now + 60,
    }
    found.update(changes)
    return {name: value for name, value in found.items() if value is not None}


def signed(payload, secret=SECRET, algorithm="HS256", **header):
    header.setdefault("kid", key_id(secret))
    return jwt.encode(payload, secret, algorithm=algorithm, headers=header)


def refused(keys, token):
    with pytest.raises(Unauthorized):
        verify_token(keys, token)
    return True


def test_a_good_token_verifies_and_names_its_key():
    token = issue_token(SECRET, USER_DICT, 60)
    assert jwt.get_unverified_header(token) == {"alg": "HS256", "typ": "JWT", "kid": key_id(SECRET)}
    assert verify_token(SECRET, token)["sub"] == USER_DICT["id"]


def test_key_ids_are_stable_distinct_and_not_the_secret():
    assert key_id(SECRET) == key_id(SECRET) != key_id(OLD)
    assert len(key_id(SECRET)) == 16 and key_id(SECRET) not in SECRET


def test_alg_none_is_refused():
    unsigned = f"{b64({'alg': 'none', 'typ': 'JWT', 'kid': key_id(SECRET)})}.{b64(claims())}."
    assert refused(SECRET, unsigned)
    for spelling in ["None", "NONE", "nOnE"]:
        assert refused(SECRET, f"{b64({'alg': spelling, 'kid': key_id(SECRET)})}.{b64(claims())}.")


@pytest.mark.parametrize("algorithm", ["HS384", "HS512"])
def test_another_hmac_algorithm_with_the_right_secret_is_refused(algorithm):
    assert refused(SECRET, signed(claims(), algorithm=algorithm))


@pytest.mark.parametrize("algorithm", ["RS256", "ES256", "PS256", "EdDSA"])
def test_public_key_algorithms_are_refused(algorithm):
    # The header alone decides: refused before any signature is looked at.
    token = f"{b64({'alg': algorithm, 'typ': 'JWT', 'kid': key_id(SECRET)})}.{b64(claims())}.{b64(b'sig')}"
    assert refused(SECRET, token)


def test_header_forged_after_signing_is_refused():
    token = signed(claims())
    _, payload, signature = token.split(".")
    for header in [
        {"alg": "HS512", "typ": "JWT", "kid": key_id(SECRET)},
        {"alg": "HS256", "typ": "JWT", "kid": key_id(OLD)},
        {"alg": "HS256", "kid": key_id(SECRET)},
    ]:
        assert refused(key_ring(SECRET, [OLD]), f"{b64(header)}.{payload}.{signature}")


def test_claims_forged_after_signing_are_refused():
    header, _, signature = signed(claims()).split(".")
    assert refused(SECRET, f"{header}.{b64(claims(admin=True))}.{signature}")


@pytest.mark.parametrize(
    "extra",
    [
        {"jku": "https://evil.example/keys"},
        {"jwk": {"kty": "oct", "k": "AA"}},
        {"x5u": "https://evil.example/cert"},
        {"crit": ["exp"]},
    ],
)
def test_header_pointing_elsewhere_for_keys_is_refused(extra):
    assert refused(SECRET, signed(claims(), **extra))


def test_unknown_missing_or_odd_kid_is_refused():
    assert refused(SECRET, signed(claims(), kid="0123456789abcdef"))
    assert refused(SECRET, jwt.encode(claims(), SECRET, algorithm="HS256"))  # no kid at all
    assert refused(SECRET, f"{b64({'alg': 'HS256', 'kid': [key_id(SECRET)]})}.{b64(claims())}.x")
    # Signed with a secret the gateway does not have, under the id of one it has.
    assert refused(SECRET, signed(claims(), secret="x" * 40, kid=key_id(SECRET)))


@pytest.mark.parametrize("missing", ["sub", "exp", "iat", "iss", "aud"])
def test_each_required_claim_must_be_present(missing):
    assert refused(SECRET, signed(claims(**{missing: None})))


@pytest.mark.parametrize(
    "changes",
    [
        {"iss": "someone-else"},
        {"aud": "another-api"},
        {"exp": int(time.time()) - 5},
        {"iat": int(time.time()) + 3600, "exp": int(time.time()) + 7200},
        {"exp": "tomorrow"},
    ],
)
def test_wrong_issuer_audience_or_times_are_refused(changes):
    assert refused(SECRET, signed(claims(**changes)))


@pytest.mark.parametrize(
    "garbage",
    [
        "",
        "abc",
        "a.b",
        "a.b.c",
        "....",
        f"{b64([1, 2])}.{b64(claims())}.x",
        f"{b64(b'not json')}.{b64(claims())}.x",
        "é.é.é",
    ],
)
def test_malformed_tokens_are_refused(garbage):
    assert refused(SECRET, garbage)


def test_rotation_previous_keys_verify_until_removed():
    old_token = issue_token(OLD, USER_DICT, 60)
    new_token = issue_token(SECRET, USER_DICT, 60)
    during = key_ring(SECRET, [OLD])
    assert list(during) == [key_id(SECRET), key_id(OLD)]
    assert verify_token(during, old_token)["sub"] == verify_token(during, new_token)["sub"] == USER_DICT["id"]
    after = key_ring(SECRET)
    assert verify_token(after, new_token)["sub"] == USER_DICT["id"]
    assert refused(after, old_token)


def test_an_old_key_token_still_expires():
    expired = issue_token(OLD, USER_DICT, 60, now=time.time() - 120)
    assert refused(key_ring(SECRET, [OLD]), expired)


def test_parse_secrets():
    assert parse_secrets(None) == parse_secrets("") == parse_secrets(" , ") == []
    assert parse_secrets(" one ,two,, three ") == ["one", "two", "three"]


def verifier(config):
    provider = TokenVerifier()
    provider.container = SimpleNamespace(config=config)
    provider.setup()
    return provider.get_dependency(worker_ctx=None)


@pytest.mark.parametrize(
    "config", [{}, {"JWT_SECRET": ""}, {"JWT_SECRET": "  "}, {"JWT_SECRET": None}, {"JWT_PREVIOUS_SECRETS": OLD}]
)
def test_verifier_refuses_to_start_without_a_secret(config):
    with pytest.raises(ConfigurationError, match="JWT_SECRET"):
        verifier(config)


def test_verifier_reads_previous_secrets():
    verify = verifier({"JWT_SECRET": SECRET, "JWT_PREVIOUS_SECRETS": f"{OLD}, "})
    assert verify(issue_token(OLD, USER_DICT, 60))["sub"] == USER_DICT["id"]
    assert refused(key_ring(SECRET), issue_token(OLD, USER_DICT, 60))
    only_current = verifier({"JWT_SECRET": SECRET, "JWT_PREVIOUS_SECRETS": ""})
    with pytest.raises(Unauthorized):
        only_current(issue_token(OLD, USER_DICT, 60))


def request_with(token):
    return Request(EnvironBuilder(path="/carts", headers={"Authorization": f"Bearer {token}"}).get_environ())


def test_authorize_answers_401_invalid_token_for_a_forged_token():
    verify = verifier({"JWT_SECRET": SECRET})
    unsigned = f"{b64({'alg': 'none', 'kid': key_id(SECRET)})}.{b64(claims(admin=True))}."
    with pytest.raises(HttpError) as caught:
        authorize(USER, request_with(unsigned), verify)
    assert caught.value.status == 401
    assert caught.value.headers["WWW-Authenticate"] == 'Bearer error="invalid_token"'
    assert authorize(USER, request_with(issue_token(SECRET, USER_DICT, 60)), verify).id == USER_DICT["id"]


# --- tokens verified once ---------------------------------------------------------------------------------------


def test_a_verified_token_is_not_verified_again_until_it_expires():
    from gateway_http.auth import VerifiedTokens
    from services.common.errors import Unauthorized

    now = [1000.0]
    checked = []

    def verify(token):
        checked.append(token)
        if token == "forged":
            raise Unauthorized("no")
        return {"sub": token, "exp": 1060}

    verified = VerifiedTokens(verify, max_entries=2, clock=lambda: now[0])
    assert verified("a") == {"sub": "a", "exp": 1060}
    assert verified("a") == {"sub": "a", "exp": 1060}
    assert checked == ["a"]
    for _ in range(2):  # a refused token is checked every time, never kept
        with pytest.raises(Unauthorized):
            verified("forged")
    assert checked == ["a", "forged", "forged"]
    verified("b")
    verified("c")  # over the bound: "a", used least recently, goes
    verified("a")
    assert checked[-3:] == ["b", "c", "a"]
    now[0] = 1060.0  # expired: checked again (and refused by the real check, here it answers again)
    verified("a")
    assert checked[-1] == "a" and len(checked) == 7
