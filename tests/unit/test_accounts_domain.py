"""accounts' rules without broker or database: emails, passwords, password hashes."""

import pytest

from services.accounts.domain import (
    dummy_hash,
    email_problem,
    hash_password,
    normalize_email,
    password_problem,
    validate_registration,
    verify_password,
)
from services.common.errors import ValidationFailed


@pytest.mark.parametrize(
    "email",
    [
        "a@b.co",
        "Alice.Smith+tag@Example.COM",
        "x@sub.domain.example",
        "o'neil@example.ie",
        "u@" + "d" * 249 + ".io",  # exactly 254 characters
    ],
)
def test_acceptable_emails(email):
    assert email_problem(email) is None


@pytest.mark.parametrize(
    "email, reason",
    [
        ("", "is required"),
        ("plainaddress", "must contain exactly one @"),
        ("a@b@c.com", "must contain exactly one @"),
        ("@example.com", "is not a valid email address"),
        ("alice@", "is not a valid email address"),
        ("alice@localhost", "is not a valid email address"),
        ("alice@.example.com", "is not a valid email address"),
        ("alice@example.", "is not a valid email address"),
        ("alice@exa..mple.com", "is not a valid email address"),
        ("al ice@example.com", "must not contain whitespace or control characters"),
        ("alice@exa\tmple.com", "must not contain whitespace or control characters"),
        ("alice@example.com\x00", "must not contain whitespace or control characters"),
        ("u@" + "d" * 250 + ".io", "must be at most 254 characters"),
        (None, "must be a string"),
        (42, "must be a string"),
        (["a@b.co"], "must be a string"),
    ],
)
def test_unacceptable_emails(email, reason):
    assert email_problem(email) == reason


@pytest.mark.parametrize("password", ["12345678", "x" * 128, "pass word", "пароль-длинный"])
def test_acceptable_passwords(password):
    assert password_problem(password) is None


@pytest.mark.parametrize(
    "password, reason",
    [
        ("1234567", "must be 8 to 128 characters"),
        ("", "must be 8 to 128 characters"),
        ("x" * 129, "must be 8 to 128 characters"),
        (None, "must be a string"),
        (12345678, "must be a string"),
    ],
)
def test_unacceptable_passwords(password, reason):
    assert password_problem(password) == reason


def test_registration_strips_the_email_and_keeps_its_case():
    assert validate_registration("  Alice@Example.COM \n", "correct horse") == "Alice@Example.COM"


def test_registration_names_every_bad_field():
    with pytest.raises(ValidationFailed) as failure:
        validate_registration("not-an-email", "short")
    assert failure.value.details == {
        "fields": {"email": "must contain exactly one @", "password": "must be 8 to 128 characters"}
    }


def test_normalized_email_ignores_case_and_surrounding_space():
    assert normalize_email(" Alice@Example.COM ") == normalize_email("alice@example.com") == "alice@example.com"


def test_hash_round_trip():
    password_hash = hash_password("correct horse")
    assert password_hash.startswith("$argon2id$")
    assert "correct horse" not in password_hash
    assert verify_password(password_hash, "correct horse")
    assert not verify_password(password_hash, "correct horsE")
    assert hash_password("correct horse") != password_hash  # salted


def test_verify_never_raises_on_bad_input():
    password_hash = hash_password("correct horse")
    assert not verify_password("not a hash", "correct horse")
    assert not verify_password(password_hash, None)
    assert not verify_password(password_hash, 12345678)


def test_dummy_hash_matches_no_ordinary_password():
    assert dummy_hash() == dummy_hash()
    assert not verify_password(dummy_hash(), "correct horse")
