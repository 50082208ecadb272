"""Every failure, as the status, code, message and details of the error envelope (API.md, Conventions).

The gateway's own refusals are `HttpError`s; the services' errors (services.common.errors, deserialised back
into their classes by nameko) keep their status, code, message and details; anything else is a bug, answered
with a generic 500 that names nothing internal (the traceback goes to the log).
"""

from services.common.errors import CartmeshError

INTERNAL_MESSAGE = "Something went wrong on our side; it has been logged."


class HttpError(Exception):
    """An error answer: `status`, machine `code`, `message` for a person, optional `details` and headers."""

    def __init__(self, status, code, message, details=None, headers=None):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = details
        self.headers = headers or {}

    def body(self):
        """The envelope: {"error": {"code", "message", "details"?}}."""
        error = {"code": self.code, "message": self.message}
        if self.details is not None:
            error["details"] = self.details
        return {"error": error}


def bad_request(message):
    return HttpError(400, "bad_request", message)


def unauthorized(message, error=None):
    challenge = f'Bearer error="{error}"' if error else "Bearer"
    return HttpError(401, "unauthorized", message, headers={"WWW-Authenticate": challenge})


def forbidden(message):
    return HttpError(403, "forbidden", message)


def not_found(message="There is nothing here."):
    return HttpError(404, "not_found", message)


def method_not_allowed(allowed):
    allowed = sorted(allowed)
    return HttpError(
        405,
        "method_not_allowed",
        f"This path answers only {', '.join(allowed)}.",
        details={"allowed": allowed},
        headers={"Allow": ", ".join(allowed)},
    )


def payload_too_large(limit):
    return HttpError(
        413,
        "payload_too_large",
        f"The request body is over the limit of {limit} bytes.",
        details={"limit_bytes": limit},
    )


def unsupported_media_type():
    return HttpError(415, "unsupported_media_type", "The request body must be application/json (UTF-8).")


def validation_error(message, fields):
    return HttpError(422, "validation_error", message, details={"fields": fields})


def internal_error():
    return HttpError(500, "internal_error", INTERNAL_MESSAGE)


def is_expected(exc):
    """Whether `exc` is an answer rather than a bug: our own refusals and the services' deliberate errors."""
    return isinstance(exc, HttpError) or (isinstance(exc, CartmeshError) and _sane_service_error(exc))


def http_error(exc):
    """The `HttpError` to answer for any exception raised while serving a request."""
    if isinstance(exc, HttpError):
        return exc
    if isinstance(exc, CartmeshError) and _sane_service_error(exc):
        details = exc.details if isinstance(exc.details, dict) else None
        return HttpError(exc.status, exc.code, exc.message, details=details)
    return internal_error()


def _sane_service_error(exc):
    # The base class (status 500) or a mangled instance is a bug: its message is not meant for the caller.
    return (
        isinstance(exc.status, int)
        and 400 <= exc.status <= 599
        and exc.status != 500
        and isinstance(exc.code, str)
        and isinstance(exc.message, str)
    )
