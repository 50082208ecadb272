"""accounts moves a password hash made with older argon2 parameters to today's at the next sign-in."""

import pytest
from argon2 import PasswordHasher
from argon2.profiles import RFC_9106_LOW_MEMORY
from nameko.standalone.rpc import ServiceRpcProxy
from sqlalchemy import select, update

from services.accounts.models import User
from services.accounts.service import AccountsService
from services.common.db import make_engine
from services.common.errors import Unauthorized

SECRET = "integration-test-secret-long-enough-for-hs256"


@pytest.fixture
def accounts_config(service_config, fresh_database):
    return service_config(
        "accounts",
        DATABASE_URL=fresh_database("accounts"),
        JWT_SECRET=SECRET,
        TOKEN_TTL_SECONDS=600,
        ADMIN_EMAIL="",
        ADMIN_PASSWORD="",
    )


def stored_hash(config, email):
    engine = make_engine(config["DATABASE_URL"])
    try:
        with engine.connect() as connection:
            return connection.execute(select(User.password_hash).where(User.email == email)).scalar_one()
    finally:
        engine.dispose()


def store_hash(config, email, password_hash):
    engine = make_engine(config["DATABASE_URL"])
    try:
        with engine.begin() as connection:
            connection.execute(update(User).where(User.email == email).values(password_hash=password_hash))
    finally:
        engine.dispose()


def test_an_old_parameter_hash_signs_in_and_is_replaced_by_a_current_one(container_factory, accounts_config):
    container_factory(AccountsService, accounts_config).start()
    with ServiceRpcProxy("accounts", accounts_config) as accounts:
        accounts.register("old@example.com", "correct horse")
        old = PasswordHasher.from_parameters(RFC_9106_LOW_MEMORY).hash("correct horse")
        store_hash(accounts_config, "old@example.com", old)  # as registered before the change

        with pytest.raises(Unauthorized):  # a wrong password changes nothing
            accounts.issue_token("old@example.com", "wrong horse")
        assert stored_hash(accounts_config, "old@example.com") == old

        assert accounts.issue_token("old@example.com", "correct horse")["token_type"] == "bearer"
        rehashed = stored_hash(accounts_config, "old@example.com")
        assert "$m=7168,t=5,p=1$" in rehashed
        # The new hash is the same password, and a current hash is left alone at the next sign-in.
        assert accounts.issue_token("old@example.com", "correct horse")["token_type"] == "bearer"
        assert stored_hash(accounts_config, "old@example.com") == rehashed
