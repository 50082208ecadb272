"""The accounts service: registration, access tokens, user lookup."""

import logging
import uuid

from sqlalchemy.exc import IntegrityError

from services.accounts import store
from services.accounts.dependencies import AdminBootstrap, PasswordHashing, TokenIssuer
from services.accounts.domain import normalize_email, validate_registration
from services.accounts.models import User
from services.common import calls, health
from services.common.context import RequestId
from services.common.db import Database
from services.common.errors import EXPECTED, Conflict, NotFound, Unauthorized
from services.common.metrics import Telemetry
from services.common.rpc import rpc

log = logging.getLogger(__name__)

BAD_CREDENTIALS = "the email or password is wrong"


# `health.HealthRpc`, not an imported `HealthRpc`: `nameko run` would take that name for a second service.
class AccountsService(health.HealthRpc, calls.PrunedCalls):
    name = "accounts"

    db = Database("DATABASE_URL")
    request_id = RequestId()
    telemetry = Telemetry()
    tokens = TokenIssuer()
    passwords = PasswordHashing()
    admin_bootstrap = AdminBootstrap("DATABASE_URL")

    @rpc(expected_exceptions=EXPECTED)
    @calls.exactly_once
    def register(self, email, password, call_id=None):
        """A new user: `{"id", "email"}`; Conflict when the email is taken in any letter case."""
        email = validate_registration(email, password)
        normalized = normalize_email(email)
        if store.find_by_email(self.db, normalized) is not None:
            raise Conflict("this email is already registered")
        password_hash = self.passwords.hash(password)  # before the first write (see Database)
        user = User(
            id=str(uuid.uuid4()), email=email, email_normalized=normalized, password_hash=password_hash, is_admin=False
        )
        try:
            store.insert_user(self.db, user)
        except IntegrityError:  # a concurrent registration of the same email won
            log.info("registration lost a race for the same email")
            raise Conflict("this email is already registered") from None
        log.info("registered user %s", user.id)
        return {"id": user.id, "email": user.email}

    @rpc(expected_exceptions=EXPECTED)
    def issue_token(self, email, password):
        """`{"access_token", "token_type", "expires_in"}`; one Unauthorized for unknown email, bad password."""
        user = store.find_by_email(self.db, normalize_email(email)) if isinstance(email, str) else None
        if user is None:
            # Verify anyway, so that an unknown email takes as long to answer as a wrong password.
            self.passwords.verify_nobody(password)
            raise Unauthorized(BAD_CREDENTIALS)
        if not self.passwords.verify(user.password_hash, password):
            raise Unauthorized(BAD_CREDENTIALS)
        if self.passwords.needs_rehash(user.password_hash):  # made with other argon2 parameters: store today's
            user.password_hash = self.passwords.hash(password)  # before the write (see Database)
        return self.tokens.issue(user.to_dict())

    @rpc(expected_exceptions=EXPECTED)
    def get_user(self, user_id):
        """`{"id", "email", "is_admin"}`; NotFound for an unknown or malformed id."""
        user = store.find_by_id(self.db, user_id) if isinstance(user_id, str) else None
        if user is None:
            raise NotFound("no such user")
        return user.to_dict()
