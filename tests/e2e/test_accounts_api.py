"""Contract: Accounts (register, token, /me) over HTTP, good and bad input."""

import time
import uuid

import jwt
import pytest

from services.common.tokens import AUDIENCE, ISSUER
from tests.e2e.conftest import ADMIN_EMAIL, Client, assert_error


def new_email():
    return f"Someone-{uuid.uuid4().hex[:10]}@Example.com"


def test_register_then_login_then_me(anon):
    email = new_email()
    response = anon.post("/auth/register", json={"email": email, "password": "s3cret-pass"})
    assert response.status_code == 201
    registered = response.json()
    assert set(registered) == {"id", "email"}
    assert registered["email"].lower() == email.lower()

    token = anon.post("/auth/token", json={"email": email, "password": "s3cret-pass"})
    assert token.status_code == 200
    body = token.json()
    assert set(body) == {"access_token", "token_type", "expires_in"}
    assert body["token_type"] == "bearer" and body["expires_in"] == 3600

    me = Client(anon.base_url, body["access_token"]).get("/me")
    assert me.status_code == 200
    assert me.json() == {"id": registered["id"], "email": registered["email"], "is_admin": False}


def test_email_is_taken_case_insensitively(anon):
    email = new_email()
    assert anon.post("/auth/register", json={"email": email, "password": "password1"}).status_code == 201
    assert_error(anon.post("/auth/register", json={"email": email.upper(), "password": "password2"}), 409, "conflict")
    # Login is case-insensitive too, with the password of the one account.
    assert anon.post("/auth/token", json={"email": email.lower(), "password": "password1"}).status_code == 200


@pytest.mark.parametrize(
    "body, field",
    [
        ({"email": "a@example.com", "password": "x" * 7}, "password"),
        ({"email": "a@example.com", "password": "x" * 129}, "password"),
        ({"email": "not-an-email", "password": "long enough"}, "email"),
        ({"email": "a@example.com"}, "password"),
        ({"password": "long enough"}, "email"),
        ({"email": 42, "password": "long enough"}, "email"),
        ({"email": "a@example.com", "password": 12345678}, "password"),
    ],
)
def test_register_rejects_bad_input(anon, body, field):
    error = assert_error(anon.post("/auth/register", json=body), 422, "validation_error")
    assert field in error["details"]["fields"]


def test_password_length_bounds_are_inclusive(anon):
    for password in ("x" * 8, "x" * 128):
        response = anon.post("/auth/register", json={"email": new_email(), "password": password})
        assert response.status_code == 201, response.text


def test_wrong_credentials_are_401_with_the_same_answer(anon):
    email = new_email()
    anon.post("/auth/register", json={"email": email, "password": "right password"})
    wrong_password = assert_error(
        anon.post("/auth/token", json={"email": email, "password": "wrong password"}), 401, "unauthorized"
    )
    unknown_email = assert_error(
        anon.post("/auth/token", json={"email": new_email(), "password": "whatever1"}), 401, "unauthorized"
    )
    assert wrong_password["message"] == unknown_email["message"]


def test_me_needs_a_valid_token(system, anon):
    assert_error(anon.get("/me"), 401, "unauthorized")
    for header in ("Bearer", "Bearer not.a.token", "Basic dXNlcjpwYXNz", "bearer"):
        assert_error(anon.get("/me", headers={"Authorization": header}), 401, "unauthorized")


def _token(secret, **claims):
    now = int(time.time())
    payload = {
        "sub": str(uuid.uuid4()),
        "email": "x@example.com",
        "admin": True,
        "iss": ISSUER,
        "aud": AUDIENCE,
        "iat": now,
        "exp": now + 600,
    }
    payload.update(claims)
    return jwt.encode(payload, secret, algorithm="HS256")


def test_expired_forged_and_unsigned_tokens_are_401(system, anon):
    expired = _token(system.jwt_secret, iat=int(time.time()) - 7200, exp=int(time.time()) - 3600)
    forged = _token("not-the-secret")
    unsigned = jwt.encode(
        {
            "sub": "x",
            "admin": True,
            "iss": ISSUER,
            "aud": AUDIENCE,
            "iat": int(time.time()),
            "exp": int(time.time()) + 600,
        },
        None,
        algorithm="none",
    )
    for token in (expired, forged, unsigned):
        assert_error(Client(anon.base_url, token).get("/me"), 401, "unauthorized")
        assert_error(Client(anon.base_url, token).post("/products", json={}), 401, "unauthorized")


def test_admin_comes_from_the_environment(admin):
    me = admin.get("/me").json()
    assert me["email"] == ADMIN_EMAIL and me["is_admin"] is True
