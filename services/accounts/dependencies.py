"""accounts' own nameko dependencies: password hashing (off the event loop), the token issuer (checks JWT_SECRET
at start-up), the admin bootstrap."""

import ctypes
import logging
import uuid

from eventlet import semaphore, tpool
from nameko.extensions import DependencyProvider
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from services.accounts import store
from services.accounts.domain import (
    dummy_hash,
    hash_password,
    needs_rehash,
    normalize_email,
    validate_registration,
    verify_password,
)
from services.accounts.models import User
from services.common.db import make_engine
from services.common.errors import StartupRefused, ValidationFailed
from services.common.tokens import issue_token, key_id

log = logging.getLogger(__name__)


# Hashes at once: more would not finish sooner on two cores, and each holds its argon2 memory (domain.py).
CONCURRENT_HASHES = 2
M_MMAP_THRESHOLD = -3  # mallopt's parameter number (malloc.h)


def keep_large_blocks_mmapped(threshold=128 * 1024):
    """Make glibc hand out every block of `threshold` bytes or more by mmap, and unmap it when it is freed.

    glibc's threshold is dynamic: freeing an mmapped block raises it to that block's size (up to 32 MiB), so
    after the first hash every argon2 block came from a malloc arena of the tpool thread that hashed, and stayed
    there when freed: the 20 tpool threads took the process to 380 MiB. A threshold set by mallopt is fixed.
    False where there is no glibc (nothing to tune there).
    """
    try:
        return bool(ctypes.CDLL("libc.so.6").mallopt(M_MMAP_THRESHOLD, threshold))
    except (OSError, AttributeError):
        return False


class Passwords:
    """Hashing and verifying passwords in native threads (argon2 takes tens of ms of CPU: eventlet's loop must
    keep serving the other workers meanwhile), `CONCURRENT_HASHES` at a time."""

    def __init__(self, concurrent=CONCURRENT_HASHES):
        self.slots = semaphore.Semaphore(concurrent)

    def _off_hub(self, function, *args):
        with self.slots:
            return tpool.execute(function, *args)

    def hash(self, password):
        return self._off_hub(hash_password, password)

    def verify(self, password_hash, password):
        return self._off_hub(verify_password, password_hash, password)

    def verify_nobody(self, password):
        """Verify `password` against a hash of nobody's, so that an unknown email takes as long as a wrong
        password."""
        return self._off_hub(verify_password, dummy_hash(), password)

    @staticmethod
    def needs_rehash(password_hash):
        return needs_rehash(password_hash)


class PasswordHashing(DependencyProvider):
    """Injects a `Passwords`: argon2 hashing and verification in native threads, two at a time.

    At set-up, for the whole process: glibc's threshold for serving large allocations by mmap is fixed at
    128 KiB (`keep_large_blocks_mmapped`), so each argon2 block is given back to the system when freed."""

    def setup(self):
        keep_large_blocks_mmapped()
        self.passwords = Passwords()

    def get_dependency(self, worker_ctx):
        return self.passwords


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
