"""accounts' argon2 parameters: OWASP's minimum (19 MiB, 2 passes, 1 lane), and older hashes still accepted."""

from argon2 import PasswordHasher
from argon2.profiles import RFC_9106_LOW_MEMORY

from services.accounts.domain import hash_password, needs_rehash, verify_password


def test_new_hashes_use_19_mib_two_passes_one_lane():
    password_hash = hash_password("correct horse")
    assert "$m=19456,t=2,p=1$" in password_hash
    assert not needs_rehash(password_hash)


def test_a_hash_made_with_the_old_default_parameters_still_verifies_and_asks_for_a_rehash():
    old = PasswordHasher.from_parameters(RFC_9106_LOW_MEMORY).hash("correct horse")  # 64 MiB, t=3, p=4
    assert "$m=65536,t=3,p=4$" in old
    assert verify_password(old, "correct horse")
    assert not verify_password(old, "wrong horse")
    assert needs_rehash(old)


def test_a_malformed_hash_needs_a_rehash_rather_than_an_error():
    assert needs_rehash("not a hash")
