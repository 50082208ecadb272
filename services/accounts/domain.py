"""The rules of accounts, callable without a broker or a database: emails, passwords, password hashes."""

import functools

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from services.common.errors import ValidationFailed
from services.common.rules import EMAIL_MAX_LENGTH, PASSWORD_MAX_LENGTH, PASSWORD_MIN_LENGTH

# argon2id with the lightest-memory row of OWASP's recommended settings (Password Storage Cheat Sheet: m=7 MiB,
# t=5, p=1), which OWASP lists as equivalent in strength to its m=19 MiB/t=2 and m=46 MiB/t=1 rows: the same
# work, spread over more passes of less memory. The memory is allocated for every hash and every verification,
# so it is what the accounts process grows by per concurrent sign-in (two at a time: services.accounts.
# dependencies.PasswordHashing); with 19 MiB the process peaked near 90 MiB. argon2-cffi's own default (RFC 9106's
# low-memory profile: 64 MiB, t=3, p=4) put it at 140 MiB. Parameters are stored in each hash, so hashes made with
# other parameters still verify, and `needs_rehash` moves them to these on the next sign-in.
_hasher = PasswordHasher(time_cost=5, memory_cost=7 * 1024, parallelism=1)


def email_problem(email):
    """Why `email` (already stripped) is not an acceptable address, or None when it is.

    Deliberately simple: one `@`, a non-empty local part, a domain with a dot and no empty labels, no
    whitespace or control characters, at most 254 characters. Whether it receives mail is not checked.
    """
    if not isinstance(email, str):
        return "must be a string"
    if not email:
        return "is required"
    if len(email) > EMAIL_MAX_LENGTH:
        return f"must be at most {EMAIL_MAX_LENGTH} characters"
    if any(ch.isspace() or not ch.isprintable() for ch in email):
        return "must not contain whitespace or control characters"
    if email.count("@") != 1:
        return "must contain exactly one @"
    local, domain = email.split("@")
    labels = domain.split(".")
    if not local or len(labels) < 2 or not all(labels):
        return "is not a valid email address"
    return None


def password_problem(password):
    """Why `password` is not acceptable, or None when it is (8–128 characters, anything else goes)."""
    if not isinstance(password, str):
        return "must be a string"
    if not PASSWORD_MIN_LENGTH <= len(password) <= PASSWORD_MAX_LENGTH:
        return f"must be {PASSWORD_MIN_LENGTH} to {PASSWORD_MAX_LENGTH} characters"
    return None


def clean_email(email):
    """`email` stripped of surrounding whitespace (anything that is not a string is returned as is)."""
    return email.strip() if isinstance(email, str) else email


def normalize_email(email):
    """The form that makes two addresses the same account: stripped and lowercased."""
    return email.strip().lower()


def validate_registration(email, password):
    """The stripped email when `email` and `password` are acceptable, else `ValidationFailed` naming both."""
    email = clean_email(email)
    errors = {}
    for field, problem in (("email", email_problem(email)), ("password", password_problem(password))):
        if problem:
            errors[field] = problem
    ValidationFailed.raise_if(errors)
    return email


def hash_password(password):
    """An argon2id hash of `password` (salted; parameters are encoded in the hash)."""
    return _hasher.hash(password)


def verify_password(password_hash, password):
    """Whether `password` matches `password_hash`; False (never an error) for a malformed hash or input."""
    if not isinstance(password, str):
        return False
    try:
        return _hasher.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


def needs_rehash(password_hash):
    """Whether `password_hash` was made with other parameters than today's (hash the password again then)."""
    try:
        return _hasher.check_needs_rehash(password_hash)
    except InvalidHashError:
        return True


@functools.lru_cache(maxsize=1)
def dummy_hash():
    """A hash to verify against when the email is unknown, so that answer takes as long as a wrong password."""
    return _hasher.hash("not-a-password-of-anyone")
