"""The events the services publish: one frozen dataclass per event, with its name, version and fields.

An emitter builds the message and hands it to its `Outbox` (`self.emit(OrderFailed(order=...))`), which
publishes `message.to_dict()` as the JSON body under the routing key `message.event_type` and adds `event_id`.
A handler reads the body back with `Message.from_dict(payload)`, which ignores keys the message does not
declare (`event_id`, or a field a newer emitter added), and fails with `MessageInvalid` when one it declares is
missing.

Adding a field is one line in its dataclass. Give it a default when handlers may still receive bodies written
without it (events already in an outbox or a queue). A change that is not an addition (a field removed, renamed
or changing meaning) is a new `version`, announced before handlers depend on it.

docs/SERVICES.md's event table is `markdown()` (`python -m services.common.messages` prints it; a test checks
that the two agree). Plain Python: rules and handlers can use it without a framework.
"""

import typing
from dataclasses import MISSING, asdict, dataclass, fields, is_dataclass
from typing import ClassVar

# The key the outbox adds to every body: the id consumers deduplicate with (services.common.events).
EVENT_ID = "event_id"


class MessageInvalid(ValueError):
    """A body lacks a field its message declares."""


@dataclass(frozen=True)
class Record:
    """A JSON object with declared fields: a message, or a part of one."""

    @classmethod
    def from_dict(cls, data):
        """The record in the JSON object `data`; keys it does not declare are ignored."""
        if not isinstance(data, dict):
            raise MessageInvalid(f"{cls.__name__} must be a JSON object, not {type(data).__name__}")
        hints = typing.get_type_hints(cls)
        values = {}
        for field in fields(cls):
            if field.name in data:
                values[field.name] = _read(hints[field.name], data[field.name])
            elif field.default is MISSING and field.default_factory is MISSING:
                raise MessageInvalid(f"{cls.__name__} has no {field.name!r}")
        return cls(**values)

    def to_dict(self):
        """The record as a JSON object."""
        return asdict(self)


@dataclass(frozen=True)
class Message(Record):
    """An event: `event_type` is its routing key, `source` the service that publishes it."""

    event_type: ClassVar[str]
    source: ClassVar[str]
    version: ClassVar[int] = 1
    consumers: ClassVar[tuple[str, ...]] = ()


def _read(hint, value):
    """`value` as the field typed `hint` holds it: records and lists of records are built, the rest kept."""
    if isinstance(hint, type) and is_dataclass(hint):
        return hint.from_dict(value)
    if typing.get_origin(hint) is list:
        [item] = typing.get_args(hint)
        if isinstance(item, type) and is_dataclass(item):
            if not isinstance(value, list):
                raise MessageInvalid(f"expected a list of {item.__name__}, not {type(value).__name__}")
            return [item.from_dict(element) for element in value]
    return value


# --- parts ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Product(Record):
    """A product as catalog answers it."""

    sku: str
    name: str
    description: str
    price_cents: int
    stock: int


@dataclass(frozen=True)
class OrderLine(Record):
    """A line of an order, frozen from the cart at checkout."""

    sku: str
    name: str
    quantity: int
    unit_price_cents: int
    line_total_cents: int


@dataclass(frozen=True)
class Order(Record):
    """An order as orders answers it."""

    id: str
    cart_id: str
    status: str
    failure_reason: str | None
    items: list[OrderLine]
    total_cents: int
    created_at: str
    updated_at: str


# --- events ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ProductChanged(Message):
    """After a product is created, or changed by an operator (name, description, price, stock).

    `product_version` is the product row's version, which grows with every change of it (stock holds included): a
    reader that keeps a copy keeps the highest version it has seen, so events that arrive out of order cannot
    undo a newer one. 0 in bodies written before products had versions.
    """

    event_type = "product_changed"
    source = "catalog"
    consumers = (
        "gateway: drops the product and every list page from its cache",
        "carts: keeps the name and price for open carts",
    )

    product: Product
    product_version: int = 0


@dataclass(frozen=True)
class StockChanged(Message):
    """After an order's stock hold takes units out of a product's stock or gives them back."""

    event_type = "stock_changed"
    source = "catalog"
    consumers = ("gateway: drops the product and every list page from its cache",)

    sku: str
    stock: int
    product_version: int


@dataclass(frozen=True)
class OrderConfirmed(Message):
    """When the saga has charged the order and committed its stock."""

    event_type = "order_confirmed"
    source = "orders"
    consumers = ("bench/checkout_driver.py: waits for the order to settle",)

    order: Order


@dataclass(frozen=True)
class OrderFailed(Message):
    """When the saga has given the order up (`failure_reason`) and undone what it did."""

    event_type = "order_failed"
    source = "orders"
    consumers = ("carts: reopens the order's cart", "bench/checkout_driver.py: waits for the order to settle")

    order: Order


@dataclass(frozen=True)
class OrderCancelled(Message):
    """When a cancelled order has been refunded and its stock given back."""

    event_type = "order_cancelled"
    source = "orders"
    consumers = ("bench/checkout_driver.py: waits for the order to settle",)

    order: Order


MESSAGES = (ProductChanged, StockChanged, OrderConfirmed, OrderFailed, OrderCancelled)
PARTS = (Product, Order, OrderLine)


# --- documentation --------------------------------------------------------------------------------------------


def shape(record):
    """The JSON shape of a record class, naming its parts: `{"order": Order}`, `{"items": [OrderLine], ...}`."""
    hints = typing.get_type_hints(record)
    described = []
    for field in fields(record):
        hint = hints[field.name]
        if isinstance(hint, type) and is_dataclass(hint):
            described.append(f'"{field.name}": {hint.__name__}')
        elif typing.get_origin(hint) is list and is_dataclass(typing.get_args(hint)[0]):
            described.append(f'"{field.name}": [{typing.get_args(hint)[0].__name__}]')
        else:
            described.append(f'"{field.name}"')
    return "{" + ", ".join(described) + "}"


def markdown():
    """docs/SERVICES.md's table of events and the parts their bodies are made of."""
    lines = [
        "| event | from | version | body | when | consumers |",
        "|---|---|---|---|---|---|",
    ]
    for message in MESSAGES:
        when = message.__doc__.strip().splitlines()[0]
        consumers = "; ".join(message.consumers)
        lines.append(
            f"| `{message.event_type}` | {message.source} | {message.version} | `{shape(message)}` | {when} | "
            f"{consumers} |"
        )
    lines.append("")
    lines.extend(f"- `{part.__name__}`: `{shape(part)}`" for part in PARTS)
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(markdown(), end="")
