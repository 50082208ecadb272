"""Listening sockets that one process owns.

`eventlet.listen`, and so nameko's `WebServer`, sets `SO_REUSEPORT`: a second process binding the same port
succeeds without a word, and the kernel splits connections between the two (two runs of the system answering
for each other, each with its own secret, databases and limits). `bind_exclusive` sets only `SO_REUSEADDR` (a
restarted server may bind while its old connections linger in TIME_WAIT; it never lets two sockets listen on one
port) and refuses to start on an address it cannot have.
"""

import errno

from eventlet.green import socket

from services.common.errors import StartupRefused

BACKLOG = 50  # eventlet.listen's


def bind_exclusive(host, port, backlog=BACKLOG):
    """A green socket listening on (`host`, `port`) that no other socket shares; `StartupRefused` naming the
    address when it cannot listen there (the port is taken, or the address is not one of this machine's)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(backlog)
    except OSError as exc:
        sock.close()
        reason = f"port {port} is already in use" if exc.errno == errno.EADDRINUSE else exc.strerror
        raise StartupRefused(f"cannot listen on {host or '0.0.0.0'}:{port}: {reason}") from None
    return sock
