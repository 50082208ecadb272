"""A TCP proxy in front of the local RabbitMQ, for tests that cut a system off from its broker and restore it."""

import socket

import eventlet

BROKER = ("127.0.0.1", 5672)


class TcpProxy:
    """Forwards 127.0.0.1:`port` to the broker. `cut()` closes every connection and stops listening (clients
    get "connection refused"); `restore()` listens again on the same port."""

    def __init__(self, target=BROKER):
        self.target = target
        self.listener = eventlet.listen(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.sockets = set()
        self.acceptor = eventlet.spawn(self._accept, self.listener)

    def _accept(self, listener):
        while True:
            try:
                client, _ = listener.accept()
            except OSError:  # the listener was closed by cut()
                return
            try:
                upstream = eventlet.connect(self.target)
            except OSError:
                client.close()
                continue
            self.sockets.update((client, upstream))
            eventlet.spawn(self._pipe, client, upstream)
            eventlet.spawn(self._pipe, upstream, client)

    def _pipe(self, source, sink):
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except (OSError, EOFError):  # EOFError: eventlet's word for a socket closed under a reader
            pass
        finally:
            # Shut both down (that wakes the other direction's reader), but close only the socket this pipe
            # reads: a socket closed under another greenthread's read leaves a stale reader in eventlet's hub,
            # which then fails whoever gets that file descriptor number next.
            self._shutdown(sink)
            self._shutdown(source)
            self.sockets.discard(source)
            source.close()

    @staticmethod
    def _shutdown(sock):
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def cut(self):
        self.acceptor.kill()
        self.listener.close()
        for sock in list(self.sockets):
            self._shutdown(sock)  # their pipes wake up and close them

    def restore(self):
        self.listener = eventlet.listen(("127.0.0.1", self.port))
        self.acceptor = eventlet.spawn(self._accept, self.listener)

    def close(self):
        self.cut()
