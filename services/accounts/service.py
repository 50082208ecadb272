"""The accounts service: registration, access tokens, user lookup."""

import ctypes
import logging
import uuid

from eventlet import semaphore, tpool
from sqlalchemy.exc import IntegrityError

from services.accounts import store
from services.accounts.dependencies import AdminBootstrap, TokenIssuer
from services.accounts.domain import (
    dummy_hash,
    hash_password,
    needs_rehash,
    normalize_email,
    validate_registration,
    verify_password,
)
from services.accounts.models import User
from services.common import health
from services.common.context import RequestId
from services.common.db import Database
from services.common.errors import EXPECTED, Conflict, NotFound, Unauthorized
from services.common.metrics import Telemetry
from services.common.rpc import rpc

log = logging.getLogger(__name__)

BAD_CREDENTIALS = "the email or password is wrong"

# Argon2 takes tens of ms of CPU and 19 MiB per hash (services.accounts.domain): run it in native threads so
# the other workers keep going, two at a time (more would not finish sooner on two cores) so that memory stays
# bounded: at most 38 MiB for hashing.
_hashing = semaphore.Semaphore(2)
M_MMAP_THRESHOLD = -3  # mallopt's parameter number (malloc.h)


def keep_large_blocks_mmapped(threshold=128 * 1024):
    """Make glibc hand out every block of `threshold` bytes or more by mmap, and unmap it when it is freed.

    glibc's threshold is dynamic: freeing an mmapped block raises it to that block's size (up to 32 MiB), so
    after the first hash every 19 MiB argon2 block came from a malloc arena of the tpool thread that hashed,
    and stayed there when freed: the 20 tpool threads took the process to 380 MiB. A threshold set by mallopt
    is fixed. False where there is no glibc (nothing to tune there).
    """
    try:
        return bool(ctypes.CDLL("libc.so.6").mallopt(M_MMAP_THRESHOLD, threshold))
    except (OSError, AttributeError):
        return False


keep_large_blocks_mmapped()


def off_hub(function, *args):
    """`function(*args)` run in a native thread (CPU-heavy work must not stall eventlet's hub)."""
    with _hashing:
        return tpool.execute(function, *args)


# `health.HealthRpc`, not an imported `HealthRpc`: `nameko run` would take that name for a second service.
class AccountsService(health.HealthRpc):
    name = "accounts"

    db = Database("DATABASE_URL")
    request_id = RequestId()
    telemetry = Telemetry()
    tokens = TokenIssuer()
    admin_bootstrap = AdminBootstrap("DATABASE_URL")

    @rpc(expected_exceptions=EXPECTED)
    def register(self, email, password):
        """A new user: `{"id", "email"}`; Conflict when the email is taken in any letter case."""
        email = validate_registration(email, password)
        normalized = normalize_email(email)
        if store.find_by_email(self.db, normalized) is not None:
            raise Conflict("this email is already registered")
        password_hash = off_hub(hash_password, password)  # before the first write (see Database)
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
            off_hub(lambda: verify_password(dummy_hash(), password))
            raise Unauthorized(BAD_CREDENTIALS)
        if not off_hub(verify_password, user.password_hash, password):
            raise Unauthorized(BAD_CREDENTIALS)
        if needs_rehash(user.password_hash):  # made with older argon2 parameters: store today's
            user.password_hash = off_hub(hash_password, password)  # before the write (see Database)
        return self.tokens.issue(user.to_dict())

    @rpc(expected_exceptions=EXPECTED)
    def get_user(self, user_id):
        """`{"id", "email", "is_admin"}`; NotFound for an unknown or malformed id."""
        user = store.find_by_id(self.db, user_id) if isinstance(user_id, str) else None
        if user is None:
            raise NotFound("no such user")
        return user.to_dict()
