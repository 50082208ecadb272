"""The accounts service's SQL: users, read and written as `User` rows in the caller's session (the caller
commits, services.common.db)."""

from sqlalchemy import select

from services.accounts.models import User


def find_by_email(session, email_normalized, for_update=False):
    """The user whose normalized email is `email_normalized`, or None; locked for this transaction with
    `for_update`."""
    query = select(User).where(User.email_normalized == email_normalized)
    if for_update:
        query = query.with_for_update()
    return session.scalars(query).one_or_none()


def find_by_id(session, user_id):
    """The user with id `user_id`, or None."""
    return session.get(User, user_id)


def insert_user(session, user):
    """Write the new `user` now. IntegrityError when its email is taken (a concurrent registration won)."""
    session.add(user)
    session.flush()
