"""accounts' own nameko dependencies: the token issuer (checks JWT_SECRET at start-up), the admin bootstrap."""

import logging
import uuid

from nameko.extensions import DependencyProvider
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from services.accounts import store
from services.accounts.domain import dummy_hash, hash_password, normalize_email, validate_registration
from services.accounts.models import User
from services.common.db import make_engine
from services.common.errors import StartupRefused, ValidationFailed
from services.common.tokens import issue_token, key_id

log = logging.getLogger(__name__)


DEFAULT_TOKEN_TTL_SECONDS = 3600
# HS256 keys shorter than this are guessable offline (RFC 7518 §3.2).
RECOMMENDED_SECRET_BYTES = 32


class Tokens:
    """Issues access tokens for users with one secret and lifetime."""

    def __init__(self, secret, ttl_seconds):
        self.secret = secret
        self.ttl_seconds = ttl_seconds

    def issue(self, user):
        """The token answer for `user` ({"id", "email", "is_admin"})."""
        return {
            "access_token": issue_token(self.secret, user, self.ttl_seconds),
            "token_type": "bearer",
            "expires_in": self.ttl_seconds,
        }


def token_ttl(config):
    """TOKEN_TTL_SECONDS from `config` as a positive int (default 3600); else StartupRefused."""
    value = config.get("TOKEN_TTL_SECONDS")
    if value is None or value == "":
        return DEFAULT_TOKEN_TTL_SECONDS
    try:
        ttl = int(str(value).strip())
    except ValueError:
        ttl = 0
    if isinstance(value, bool) or ttl <= 0:
        raise StartupRefused(f"TOKEN_TTL_SECONDS must be a positive whole number of seconds, not {value!r}")
    return ttl


class TokenIssuer(DependencyProvider):
    """Injects a `Tokens` built from config JWT_SECRET and TOKEN_TTL_SECONDS.

    Without a JWT_SECRET the container refuses to start: tokens signed with an empty or default key could be
    forged by anyone.
    """

    def setup(self):
        config = self.container.config
        secret = config.get("JWT_SECRET")
        if not isinstance(secret, str) or not secret.strip():
            raise StartupRefused("JWT_SECRET is not set: accounts cannot sign access tokens without it")
        if len(secret.encode()) < RECOMMENDED_SECRET_BYTES:
            log.warning("JWT_SECRET is shorter than %d bytes; use a longer random secret", RECOMMENDED_SECRET_BYTES)
        self.tokens = Tokens(secret, token_ttl(config))
        log.info("signing access tokens with key id %s", key_id(secret))
        dummy_hash()  # made now, so the first sign-in with an unknown email is not slower than later ones

    def get_dependency(self, worker_ctx):
        return self.tokens


def ensure_admin(engine, email, password_hash):
    """Make the user with `email` an admin with `password_hash`, creating it if needed; returns its id.

    Two instances starting together may both try to insert: the loser's unique violation sends it round once
    more, and then it finds (and updates) the row the winner wrote. Not a worker: it has its own session, one
    transaction per attempt (committed at the end of `session.begin()`'s block).
    """
    normalized = normalize_email(email)
    for attempt in range(2):
        try:
            with Session(engine) as session, session.begin():
                user = store.find_by_email(session, normalized, for_update=True)
                if user is None:
                    user = User(id=str(uuid.uuid4()), email=email, email_normalized=normalized)
                    session.add(user)
                user.is_admin = True
                user.password_hash = password_hash
                user_id = user.id
        except IntegrityError:
            if attempt:
                raise
            log.info("another instance created the administrator at the same time; updating it")
            continue
        return user_id


class AdminBootstrap(DependencyProvider):
    """Creates the administrator from config ADMIN_EMAIL and ADMIN_PASSWORD when the container starts.

    Only when both are non-empty; an existing user with that email is made admin and gets that password.
    Injects nothing.
    """

    def __init__(self, url_key):
        self.url_key = url_key

    def start(self):
        config = self.container.config
        email = config.get("ADMIN_EMAIL") or ""
        password = config.get("ADMIN_PASSWORD") or ""
        if not email and not password:
            return
        if not (email and password):
            log.warning("ADMIN_EMAIL and ADMIN_PASSWORD must both be set to create an admin; none created")
            return
        try:
            email = validate_registration(email, password)
        except ValidationFailed as error:
            raise StartupRefused(f"ADMIN_EMAIL/ADMIN_PASSWORD are not acceptable: {error}") from None
        engine = make_engine(config[self.url_key])
        try:
            user_id = ensure_admin(engine, email, hash_password(password))
        finally:
            engine.dispose()
        log.info("administrator %s is ready", user_id)
