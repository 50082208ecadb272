"""The accounts service in a real container on the real broker, on SQLite and PostgreSQL."""

import uuid

import eventlet
import pytest
from nameko.cli.run import import_service
from nameko.standalone.rpc import ServiceRpcProxy
from sqlalchemy import select

from services.accounts.models import User
from services.accounts.service import AccountsService
from services.common.db import make_engine
from services.common.errors import Conflict, NotFound, StartupRefused, Unauthorized, ValidationFailed
from services.common.tokens import verify_token

SECRET = "integration-test-secret-long-enough-for-hs256"


@pytest.fixture
def accounts_config(service_config, fresh_database):
    """Config of an accounts instance on a new database; no admin unless a test asks for one."""
    return service_config(
        "accounts",
        DATABASE_URL=fresh_database("accounts"),
        JWT_SECRET=SECRET,
        TOKEN_TTL_SECONDS=600,
        ADMIN_EMAIL="",
        ADMIN_PASSWORD="",
    )


@pytest.fixture
def start_accounts(container_factory):
    """Starts an accounts container with `config`; returns the container."""

    def start(config):
        container = container_factory(AccountsService, config)
        container.start()
        return container

    return start


def users_in(config):
    """Every row of the users table, read directly from the database."""
    engine = make_engine(config["DATABASE_URL"])
    try:
        with engine.connect() as connection:
            return connection.execute(select(User.__table__)).mappings().all()
    finally:
        engine.dispose()


def test_register_sign_in_and_get_user(start_accounts, accounts_config):
    start_accounts(accounts_config)
    with ServiceRpcProxy("accounts", accounts_config) as accounts:
        user = accounts.register("  Alice@Example.COM ", "correct horse")
        assert user == {"id": user["id"], "email": "Alice@Example.COM"}

        answer = accounts.issue_token("alice@example.com", "correct horse")
        assert answer["token_type"] == "bearer" and answer["expires_in"] == 600
        claims = verify_token(SECRET, answer["access_token"])
        assert (claims["sub"], claims["email"], claims["admin"]) == (user["id"], "Alice@Example.COM", False)

        assert accounts.get_user(user["id"]) == {"id": user["id"], "email": "Alice@Example.COM", "is_admin": False}
        assert accounts.health() == "ok"
    [row] = users_in(accounts_config)
    assert row["email_normalized"] == "alice@example.com"
    assert row["password_hash"].startswith("$argon2id$")


def test_duplicate_email_in_another_case_is_a_conflict(start_accounts, accounts_config):
    start_accounts(accounts_config)
    with ServiceRpcProxy("accounts", accounts_config) as accounts:
        accounts.register("bob@example.com", "password-one")
        with pytest.raises(Conflict):
            accounts.register("BOB@Example.Com", "password-two")
        # The first registration stands, with its own password.
        accounts.issue_token("bob@example.com", "password-one")
        with pytest.raises(Unauthorized):
            accounts.issue_token("bob@example.com", "password-two")
    assert len(users_in(accounts_config)) == 1


def test_bad_registration_is_refused_and_writes_nothing(start_accounts, accounts_config):
    start_accounts(accounts_config)
    cases = [
        ("not-an-email", "correct horse", {"email": "must contain exactly one @"}),
        ("carol@example.com", "short", {"password": "must be 8 to 128 characters"}),
        ("carol@example.com", "x" * 129, {"password": "must be 8 to 128 characters"}),
        (None, 12345678, {"email": "must be a string", "password": "must be a string"}),
    ]
    with ServiceRpcProxy("accounts", accounts_config) as accounts:
        for email, password, fields in cases:
            with pytest.raises(ValidationFailed) as failure:
                accounts.register(email, password)
            assert failure.value.details == {"fields": fields}
    assert users_in(accounts_config) == []


def test_wrong_password_and_unknown_email_get_the_same_answer(start_accounts, accounts_config):
    start_accounts(accounts_config)
    with ServiceRpcProxy("accounts", accounts_config) as accounts:
        accounts.register("dave@example.com", "correct horse")
        failures = []
        for email, password in [
            ("dave@example.com", "wrong horse"),
            ("nobody@example.com", "correct horse"),
            (None, None),
            ("dave@example.com", 42),
        ]:
            with pytest.raises(Unauthorized) as failure:
                accounts.issue_token(email, password)
            failures.append((str(failure.value), failure.value.details))
        assert len(set(failures)) == 1


def test_unknown_or_malformed_user_id_is_not_found(start_accounts, accounts_config):
    start_accounts(accounts_config)
    with ServiceRpcProxy("accounts", accounts_config) as accounts:
        for user_id in ["6f1c2a7e-6f0b-4c4e-9d0e-3f7e1c2b9a10", "not-a-uuid", 7, None]:
            with pytest.raises(NotFound):
                accounts.get_user(user_id)


def test_no_admin_without_the_environment(start_accounts, accounts_config):
    start_accounts(dict(accounts_config, ADMIN_EMAIL="root@example.com", ADMIN_PASSWORD=""))
    with ServiceRpcProxy("accounts", accounts_config) as accounts:
        user = accounts.register("erin@example.com", "correct horse")
        assert accounts.get_user(user["id"])["is_admin"] is False
        with pytest.raises(Unauthorized):
            accounts.issue_token("root@example.com", "")
    assert [row["is_admin"] for row in users_in(accounts_config)] == [False]


def test_admin_is_created_at_start_up(start_accounts, accounts_config):
    start_accounts(dict(accounts_config, ADMIN_EMAIL="Root@Example.com", ADMIN_PASSWORD="admin-password"))
    with ServiceRpcProxy("accounts", accounts_config) as accounts:
        token = accounts.issue_token("root@example.com", "admin-password")["access_token"]
        claims = verify_token(SECRET, token)
        assert claims["admin"] is True
        assert accounts.get_user(claims["sub"]) == {"id": claims["sub"], "email": "Root@Example.com", "is_admin": True}


def test_existing_user_is_made_admin_with_the_configured_password(start_accounts, accounts_config):
    start_accounts(accounts_config)
    with ServiceRpcProxy("accounts", accounts_config) as accounts:
        user = accounts.register("frank@example.com", "old-password")

    # A second instance (as in a rolling deploy) starts with the admin settings; either may answer after.
    start_accounts(dict(accounts_config, ADMIN_EMAIL="FRANK@example.com", ADMIN_PASSWORD="new-password"))
    with ServiceRpcProxy("accounts", accounts_config) as accounts:
        assert accounts.get_user(user["id"])["is_admin"] is True
        with pytest.raises(Unauthorized):
            accounts.issue_token("frank@example.com", "old-password")
        claims = verify_token(SECRET, accounts.issue_token("frank@example.com", "new-password")["access_token"])
        assert (claims["sub"], claims["admin"]) == (user["id"], True)
    assert len(users_in(accounts_config)) == 1


def test_two_instances_starting_together_make_one_admin(container_factory, accounts_config):
    config = dict(accounts_config, ADMIN_EMAIL="root@example.com", ADMIN_PASSWORD="admin-password")
    containers = [container_factory(AccountsService, config) for _ in range(2)]
    pool = eventlet.GreenPool()
    list(pool.imap(lambda container: container.start(), containers))
    [admin] = users_in(config)
    assert admin["is_admin"] and admin["email_normalized"] == "root@example.com"


def test_unacceptable_admin_settings_stop_the_start(container_factory, accounts_config):
    for admin_email, admin_password in [("not-an-email", "admin-password"), ("root@example.com", "short")]:
        config = dict(accounts_config, ADMIN_EMAIL=admin_email, ADMIN_PASSWORD=admin_password)
        with pytest.raises(StartupRefused, match="ADMIN_EMAIL/ADMIN_PASSWORD"):
            container_factory(AccountsService, config).start()
    assert users_in(accounts_config) == []


def test_refuses_to_start_without_jwt_secret(container_factory, accounts_config):
    for secret in ["", "  ", None]:
        with pytest.raises(StartupRefused, match="JWT_SECRET is not set"):
            container_factory(AccountsService, dict(accounts_config, JWT_SECRET=secret)).start()


def test_concurrent_duplicate_registrations_make_one_user(start_accounts, accounts_config):
    start_accounts(accounts_config)
    emails = [f"{'Race' if n % 2 else 'race'}@example.com" + " " * n for n in range(10)]

    def register(email):
        with ServiceRpcProxy("accounts", accounts_config) as accounts:
            try:
                return accounts.register(email, "correct horse")
            except Conflict:
                return "conflict"

    results = list(eventlet.GreenPool(10).imap(register, emails))
    assert sorted(results, key=str).count("conflict") == 9
    [user] = [result for result in results if result != "conflict"]
    [row] = users_in(accounts_config)
    assert row["id"] == user["id"]


def test_nameko_run_finds_exactly_the_accounts_service():
    assert import_service("services.accounts.service") == [AccountsService]


def test_register_repeated_with_its_call_id_answers_the_same_user(start_accounts, accounts_config):
    start_accounts(accounts_config)
    call_id = uuid.uuid4().hex
    with ServiceRpcProxy("accounts", accounts_config) as accounts:
        user = accounts.register("gina@example.com", "correct horse", call_id=call_id)
        assert accounts.register("gina@example.com", "correct horse", call_id=call_id) == user  # not a Conflict
        with pytest.raises(Conflict):  # another call is another registration
            accounts.register("gina@example.com", "correct horse", call_id=uuid.uuid4().hex)
    assert [row["id"] for row in users_in(accounts_config)] == [user["id"]]


def test_copies_of_one_register_call_sent_at_once_make_one_user(start_accounts, accounts_config):
    start_accounts(accounts_config)
    call_id = uuid.uuid4().hex

    def register(_n):
        with ServiceRpcProxy("accounts", accounts_config) as accounts:
            return accounts.register("hal@example.com", "correct horse", call_id=call_id)

    answers = list(eventlet.GreenPool(6).imap(register, range(6)))
    [row] = users_in(accounts_config)
    assert answers == [{"id": row["id"], "email": "hal@example.com"}] * 6
