"""The errors services raise for their callers, and that the gateway maps to the HTTP error envelope.

Plain exception classes, so rules (`domain.py`, `services.common.rules`) raise them without importing a framework.
`services.common.remote_errors` registers them with nameko, so that a caller gets the same class back from an RPC
call (not a bare `RemoteError`), message and details intact; `services.common.rpc` imports it, so every service
and the gateway have it. Declare them in `@rpc(expected_exceptions=EXPECTED)` so nameko does not log them as
failures.
"""

import json


class CartmeshError(Exception):
    """Base class: `code` and `status` are what the gateway answers; `details` is optional JSON."""

    code = "internal_error"
    status = 500

    def __init__(self, message, details=None):
        # nameko turns every non-string exception argument into its str(); details travel as JSON text and
        # are rebuilt exactly when the caller's side reconstructs the exception.
        if isinstance(details, str):
            details = json.loads(details)
        super().__init__(message, json.dumps(details))
        self.message = message
        self.details = details

    def __str__(self):
        return self.message


class NotFound(CartmeshError):
    code, status = "not_found", 404


class Conflict(CartmeshError):
    code, status = "conflict", 409


class ValidationFailed(CartmeshError):
    """Breaks a rule; `details` is `{"fields": {field: reason}}`."""

    code, status = "validation_error", 422

    @classmethod
    def field(cls, name, reason):
        return cls.fields({name: reason})

    @classmethod
    def fields(cls, errors):
        """One error naming every field in `errors` ({field: reason})."""
        return cls("; ".join(f"{name}: {reason}" for name, reason in errors.items()), {"fields": dict(errors)})

    @classmethod
    def raise_if(cls, errors):
        """Raise `fields(errors)` if `errors` names any field."""
        if errors:
            raise cls.fields(errors)


class UnknownProduct(CartmeshError):
    code, status = "unknown_product", 422


class EmptyCart(CartmeshError):
    code, status = "empty_cart", 422


class OutOfStock(CartmeshError):
    """Not enough stock for a line of an order; `details` is `{"sku"}`. Internal: orders turns it into a
    failed order, it never reaches HTTP as such."""

    code, status = "out_of_stock", 409


class Unauthorized(CartmeshError):
    code, status = "unauthorized", 401


class Forbidden(CartmeshError):
    code, status = "forbidden", 403


class ServiceUnavailable(CartmeshError):
    """Raised by the RPC client: nothing is consuming the target service's queue."""

    code, status = "service_unavailable", 503


class ServiceTimeout(CartmeshError):
    """Raised by the RPC client: the target service is consuming but did not answer in time."""

    code, status = "gateway_timeout", 504


class BrokerFailover(ServiceTimeout):
    """Raised by the RPC client: no answer in time, and the caller's own broker connection was lost meanwhile (a
    broker node went away and the client moved to another): the call's request or reply went with it. A 504 like
    any timeout, but a circuit breaker does not count it against the service."""


class StartupRefused(Exception):
    """The configuration is unsafe or unusable, so the container does not start.

    Not nameko's `ConfigurationError`: `nameko run` prints that one and exits with status 0, which a supervisor
    takes for a clean stop; this one ends the process with status 1.
    """


# What a service's RPC methods may raise on purpose (not logged as failures).
EXPECTED = (NotFound, Conflict, ValidationFailed, UnknownProduct, EmptyCart, OutOfStock, Unauthorized, Forbidden)

# Every error that crosses an RPC call: services.common.remote_errors registers these with nameko.
REMOTE = EXPECTED + (ServiceUnavailable, ServiceTimeout, BrokerFailover)
