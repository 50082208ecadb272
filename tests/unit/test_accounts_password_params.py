"""accounts' argon2 parameters: OWASP's lightest-memory row (7 MiB, 5 passes, 1 lane), and hashes made with other
parameters still accepted (and re-hashed)."""

from argon2 import PasswordHasher
from argon2.profiles import RFC_9106_LOW_MEMORY

from services.accounts.domain import hash_password, needs_rehash, verify_password


def test_new_hashes_use_7_mib_five_passes_one_lane():
    password_hash = hash_password("correct horse")
    assert "$m=7168,t=5,p=1$" in password_hash
    assert not needs_rehash(password_hash)


def test_a_hash_made_with_the_previous_19_mib_parameters_still_verifies_and_asks_for_a_rehash():
    previous = PasswordHasher(time_cost=2, memory_cost=19 * 1024, parallelism=1).hash("correct horse")
    assert verify_password(previous, "correct horse")
    assert needs_rehash(previous)


def test_a_hash_made_with_the_old_default_parameters_still_verifies_and_asks_for_a_rehash():
    old = PasswordHasher.from_parameters(RFC_9106_LOW_MEMORY).hash("correct horse")  # 64 MiB, t=3, p=4
    assert "$m=65536,t=3,p=4$" in old
    assert verify_password(old, "correct horse")
    assert not verify_password(old, "wrong horse")
    assert needs_rehash(old)


def test_a_malformed_hash_needs_a_rehash_rather_than_an_error():
    assert needs_rehash("not a hash")
