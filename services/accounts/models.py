"""The accounts database: one table of users, and the shared `processed_calls` (services.common.calls)."""

from datetime import datetime

from sqlalchemy import Boolean, DateTime, String, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from services.common.calls import processed_calls_table
from services.common.clock import utcnow
from services.common.rules import EMAIL_MAX_LENGTH


class Base(DeclarativeBase):
    pass


processed_calls_table(Base.metadata)


class User(Base):
    """A user; `email` is kept as given (stripped), `email_normalized` (lowercased) makes it unique."""

    __tablename__ = "users"
    __table_args__ = (UniqueConstraint("email_normalized", name="uq_users_email_normalized"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    email: Mapped[str] = mapped_column(String(EMAIL_MAX_LENGTH), nullable=False)
    email_normalized: Mapped[str] = mapped_column(String(EMAIL_MAX_LENGTH), nullable=False)
    password_hash: Mapped[str] = mapped_column(String(255), nullable=False)
    is_admin: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False, default=utcnow)

    def to_dict(self):
        """The user as the RPC methods answer it."""
        return {"id": self.id, "email": self.email, "is_admin": bool(self.is_admin)}
