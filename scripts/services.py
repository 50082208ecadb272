"""`make services`: the live service map (what GET /services answers) as a table, straight from RabbitMQ.

    .venv/bin/python -m scripts.services

For each backend service: its instances (consumers of its `rpc-<name>` queue) and its queue depth (requests
waiting). Reads the RabbitMQ management API at `RABBITMQ_API_URI` (default: the host and credentials of
`AMQP_URI`, port 15672, e.g. http://guest:guest@localhost:15672/api) for the vhost of `AMQP_URI` (default /).
The broker samples these figures every few seconds. Exit code 1 when the management API does not answer.
"""

import os
import sys

from gateway_http.service_map import management_api_uri, queue_stats, service_map, split_credentials, vhost_of
from scripts.run import DEFAULT_AMQP_URI, SERVICES
from services.common.errors import ServiceUnavailable


def table(rows):
    """The rows as aligned text lines, a header first."""
    lines = [("SERVICE", "INSTANCES", "QUEUE DEPTH")]
    lines += [(row["name"], str(row["instances"]), str(row["queue_depth"])) for row in rows]
    widths = [max(len(line[column]) for line in lines) for column in range(3)]
    return [f"{name:<{widths[0]}}  {instances:>{widths[1]}}  {depth:>{widths[2]}}" for name, instances, depth in lines]


def main(environ=None):
    environ = os.environ if environ is None else environ
    amqp_uri = environ.get("AMQP_URI") or DEFAULT_AMQP_URI
    api_uri = management_api_uri(environ.get("RABBITMQ_API_URI"), amqp_uri)
    vhost = vhost_of(amqp_uri)
    try:
        queues = queue_stats(api_uri, vhost)
    except ServiceUnavailable:
        print(
            f"the RabbitMQ management API at {split_credentials(api_uri)[0]} did not answer "
            "(is the management plugin on? set RABBITMQ_API_URI)",
            file=sys.stderr,
        )
        return 1
    print("\n".join(table(service_map(SERVICES, queues))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
