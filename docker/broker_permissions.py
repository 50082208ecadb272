"""Each app's own RabbitMQ user may touch only the queues and exchanges that app uses (standard library only).

`permissions(app)` gives RabbitMQ's three regular expressions (configure, write, read; see
https://www.rabbitmq.com/docs/access-control) for what nameko and services/common declare, publish and consume:

    nameko-rpc                          RPC exchange: declared by every server and client, bound to (read),
                                        published to (write: requests and replies)
    rpc-<app>                           the app's RPC queue (servers only): declare, bind (write), consume
    rpc.reply-<app>-<uuid>              the app's reply queues (RPC callers only): declare, bind, consume
    <app>.events                        the app's event exchange (apps with an Outbox): declare, publish
    <source>.events                     each source the app handles events of: declare (nameko's handler
                                        declares it too), bind its queues to it (read)
    evt-<source>-<event>--<app>.<method>  the app's event queues; with `-<uuid>` after it for a broadcast
                                        handler (gateway_http/cache.py), with `.retry` for a retrying one
    parked-<app>                        the app's parked events (events.py), read by `make deadletters`
    amq.default                         the default exchange: retries and parking publish through it

What an app does is in the tables below; tests/integration/test_broker_permissions.py checks them against the
service classes and runs services with exactly these permissions on a real broker. Publishing through
amq.default is the one wide door: it can address any queue by name. Only the apps that retry events (RETRIES)
get it.
"""

import re

RPC_SERVERS = ("accounts", "catalog", "carts", "payments", "orders")
# app → the services it calls (it then owns reply queues); the gateway calls every service.
RPC_CALLS = {
    "carts": ("catalog",),
    "orders": ("carts", "catalog", "payments"),
    "gateway": ("accounts", "catalog", "carts", "payments", "orders"),
}
EMITS = ("catalog", "orders")  # apps with an Outbox, publishing to <app>.events
# app → the services whose events it handles; RETRIES: the apps whose handlers retry and park
# (services/common/events.py reliable_event_handler).
HANDLES = {"carts": ("catalog", "orders"), "gateway": ("catalog",)}
RETRIES = ("carts",)
APPS = RPC_SERVERS + ("gateway",)


def _alternatives(names):
    return "^(" + "|".join(names) + ")$"


def permissions(app):
    """{"configure", "write", "read"}: anchored regular expressions of the resources `app` may use."""
    if app not in APPS:
        raise ValueError(f"unknown app {app!r}: one of {', '.join(APPS)}")
    mine = re.escape(app)
    own_queues, configure, write, read = [], ["nameko-rpc"], ["nameko-rpc"], ["nameko-rpc"]
    if app in RPC_SERVERS:
        own_queues.append(f"rpc-{mine}")
    if app in RPC_CALLS:
        own_queues.append(rf"rpc\.reply-{mine}-[0-9a-f-]+")
    if app in EMITS:
        configure.append(rf"{mine}\.events")
        write.append(rf"{mine}\.events")
    sources = [re.escape(source) + r"\.events" for source in HANDLES.get(app, ())]
    if sources:
        own_queues.append(rf"evt-[^.]+--{mine}\.[A-Za-z0-9_]+(-[0-9a-f]+|\.retry)?")
        configure += sources
        read += sources
    if app in RETRIES:
        own_queues.append(f"parked-{mine}")
        write.append(r"amq\.default")
    return {
        "configure": _alternatives(configure + own_queues),
        # queue.bind needs write on the queue; declaring a queue with a dead-letter exchange needs read on it.
        "write": _alternatives(write + own_queues),
        "read": _alternatives(read + own_queues),
    }


def main(argv):
    """Prints the rabbitmqctl commands that give each app's user its permissions on vhost argv[0] (default /)."""
    import shlex

    vhost = argv[0] if argv else "/"
    for app in APPS:
        granted = permissions(app)
        print(
            shlex.join(
                [
                    "rabbitmqctl",
                    "set_permissions",
                    "-p",
                    vhost,
                    app,
                    granted["configure"],
                    granted["write"],
                    granted["read"],
                ]
            )
        )


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])
