"""List and replay parked events: `python -m services.common.deadletters list|replay <service> [config]`.

An event lands in `parked-<service>` after its handler failed `EVENT_MAX_ATTEMPTS` times (see events.py).
`list` prints each parked event (queue it came from, attempts, error, payload) and leaves it parked; `replay`
sends every parked event back to the queue it came from with its attempt count reset, once the cause is fixed.

`ParkedEventsRpc` gives a service the same two over RPC (`parked_events`, `replay_parked`), for the operator
console (gateway_http/storefront/): the service reads its own parked queue with its own broker user, which may
read no other's (docker/broker_permissions.py).
"""

import json
import sys

from kombu import Connection
from nameko.dependency_providers import Config

from services.common.config import load_config
from services.common.errors import ValidationFailed
from services.common.events import ATTEMPTS_HEADER, ERROR_HEADER, QUEUE_HEADER, parked_queue
from services.common.rpc import rpc

DEFAULT_SHOWN = 50  # parked events `parked_events` answers at most, by default


def parked_events(config, service_name, limit=None):
    """The parked events of `service_name` (the first `limit` of them; None: all), as dicts; they stay parked.
    `config`: the service's (AMQP_URI, AMQP_SSL, AMQP_QUEUE_TYPE)."""
    events = []
    with Connection(config["AMQP_URI"], ssl=config.get("AMQP_SSL")) as connection:
        queue = parked_queue(service_name, config)(connection.default_channel)
        queue.declare()
        fetched = []
        while (limit is None or len(fetched) < limit) and (message := queue.get(no_ack=False)) is not None:
            fetched.append(message)
            events.append(
                {
                    "queue": message.headers.get(QUEUE_HEADER),
                    "attempts": message.headers.get(ATTEMPTS_HEADER),
                    "error": message.headers.get(ERROR_HEADER),
                    "payload": message.payload,
                }
            )
        for message in fetched:  # give them all back, in order
            message.requeue()
    return events


def replay(config, service_name):
    """Send every parked event of `service_name` back to its queue; returns how many."""
    count = 0
    with Connection(config["AMQP_URI"], ssl=config.get("AMQP_SSL")) as connection:
        channel = connection.default_channel
        queue = parked_queue(service_name, config)(channel)
        queue.declare()
        producer = connection.Producer(channel)
        while (message := queue.get(no_ack=False)) is not None:
            headers = dict(message.headers, **{ATTEMPTS_HEADER: 0})
            headers.pop(ERROR_HEADER, None)
            producer.publish(
                message.body,
                exchange="",
                routing_key=headers[QUEUE_HEADER],
                headers=headers,
                content_type=message.content_type,
                content_encoding=message.content_encoding,
                delivery_mode=2,
            )
            message.ack()
            count += 1
    return count


class ParkedEventsRpc:
    """Mix into a service whose handlers park events (`reliable_event_handler`): `parked_events(limit)` answers the
    first `limit` (1 to 1000) of its parked events as `parked_events` reads them (they stay parked), and
    `replay_parked()` sends them all back, answering how many."""

    parked_config = Config()

    @rpc(expected_exceptions=(ValidationFailed,))
    def parked_events(self, limit=DEFAULT_SHOWN):
        if not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit <= 1000:
            raise ValidationFailed.field("limit", "must be an integer from 1 to 1000")
        return parked_events(self.parked_config, self.name, limit)

    @rpc
    def replay_parked(self):
        return replay(self.parked_config, self.name)


def main(argv):
    if len(argv) < 2 or argv[0] not in ("list", "replay"):
        print(__doc__.strip().splitlines()[0], file=sys.stderr)
        return 2
    command, service = argv[0], argv[1]
    config = load_config(argv[2] if len(argv) > 2 else f"config/{service}.yml")
    if command == "list":
        for event in parked_events(config, service):
            print(json.dumps(event, sort_keys=True))
    else:
        print(f"replayed {replay(config, service)} parked event(s) of {service}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
