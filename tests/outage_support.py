"""A TCP proxy in front of a real database server, to cut it off and bring it back
(not a test module).

Processes under test connect to the proxy instead of the server. :meth:`DatabaseProxy.cut`
is the outage: every proxied connection is reset and every new one is reset as soon as it
is accepted, as a server that restarts or a network that drops does to its clients.
:meth:`DatabaseProxy.restore` forwards again. :meth:`DatabaseProxy.lose_commit_reply`
starts the outage at the worst moment: a transaction's COMMIT has reached the server
(it is durable) but its answer never reaches the client. The real server is never
touched, so the same outage works on PostgreSQL and MySQL alike.
"""

from __future__ import annotations

import selectors
import socket
import struct
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from sqlalchemy.engine import make_url

CHUNK = 65536
TICK = 0.05  # how often the proxy looks at cut/restore requests, in seconds


def _reset(sock: socket.socket) -> None:
    """Close with a TCP reset (SO_LINGER 0), not an orderly FIN: the peer sees the
    connection die, as it does when a server process is killed or a link drops."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    sock.close()


class DatabaseProxy:
    """Forwards ``127.0.0.1:<port>`` to the server of ``url`` until cut off."""

    def __init__(self, url: str) -> None:
        self.server_url = make_url(url)
        self.target = (self.server_url.host or "127.0.0.1", int(self.server_url.port or 0))
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.setblocking(False)
        self.port = self._listener.getsockname()[1]
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._listener, selectors.EVENT_READ)
        self._peers: dict[socket.socket, socket.socket] = {}
        self._up = True
        self._cut_done = threading.Event()
        self._cut_wanted = False
        self._closing = False
        self.connections_accepted = 0
        self.connections_reset = 0
        self._statement: Callable[[bytes], bool] | None = None
        self._armed: set[socket.socket] = set()  # clients inside the watched transaction
        self._swallow: set[socket.socket] = set()  # servers whose next answer is lost
        self.commit_lost = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="db-proxy", daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        """The server's URL with the proxy's address in it."""
        return self.server_url.set(host="127.0.0.1", port=self.port).render_as_string(
            hide_password=False)

    @property
    def up(self) -> bool:
        return self._up

    def cut(self) -> None:
        """Start the outage; returns once every open connection has been reset."""
        self._cut_done.clear()
        self._up = False
        self._cut_wanted = True
        if not self._cut_done.wait(10):
            raise RuntimeError("the database proxy did not cut its connections")

    def lose_commit_reply(self, statement: Callable[[bytes], bool]) -> None:
        """Once a client sends a statement ``statement(bytes)`` accepts, let its
        transaction's COMMIT through to the server, then cut everything instead of
        delivering the server's answer (:attr:`commit_lost` is set then). The client
        cannot tell whether its transaction committed: it did."""
        self._statement = statement

    def restore(self) -> None:
        """End the outage: new connections reach the server again."""
        self._up = True

    def close(self) -> None:
        self._closing = True
        self._thread.join(10)

    # -- the forwarding loop (one thread owns every socket) -----------------------------

    def _serve(self) -> None:
        try:
            while not self._closing:
                for key, _events in self._selector.select(TICK):
                    if key.fileobj is self._listener:
                        self._accept()
                    else:
                        self._forward(key.fileobj)  # type: ignore[arg-type]
                if self._cut_wanted:
                    self._cut_wanted = False
                    self._reset_all()
                    self._cut_done.set()
        finally:
            self._reset_all()
            self._selector.close()
            self._listener.close()

    def _accept(self) -> None:
        try:
            client, _ = self._listener.accept()
        except BlockingIOError:
            return
        self.connections_accepted += 1
        if not self._up:
            self.connections_reset += 1
            _reset(client)
            return
        try:
            server = socket.create_connection(self.target, timeout=5)
        except OSError:
            _reset(client)
            return
        for sock in (client, server):
            sock.setblocking(True)
            sock.settimeout(5)  # sendall to a stuck peer must not freeze the proxy
            self._selector.register(sock, selectors.EVENT_READ)
        self._peers[client] = server
        self._peers[server] = client

    def _forward(self, sock: socket.socket) -> None:
        peer = self._peers.get(sock)
        if peer is None:
            return
        try:
            data = sock.recv(CHUNK)
            if data and sock in self._swallow:  # the answer to the watched COMMIT
                self._up = False
                self._reset_all()
                self.commit_lost.set()
                return
            if data:
                self._watch(sock, peer, data)
                peer.sendall(data)
                return
        except OSError:
            pass
        self._drop(sock)

    def _watch(self, sock: socket.socket, peer: socket.socket, data: bytes) -> None:
        if self._statement is None or sock.getsockname()[1] != self.port:
            return
        if sock in self._armed and b"COMMIT" in data:
            self._statement = None
            self._swallow.add(peer)
        elif self._statement(data):
            self._armed.add(sock)

    def _drop(self, sock: socket.socket) -> None:
        peer = self._peers.pop(sock, None)
        for each in (sock, peer):
            if each is None:
                continue
            self._peers.pop(each, None)
            self._armed.discard(each)
            self._swallow.discard(each)
            try:
                self._selector.unregister(each)
            except (KeyError, ValueError):
                pass
            _reset(each)

    def _reset_all(self) -> None:
        clients = [s for s in self._peers if s.getsockname()[1] == self.port]
        self.connections_reset += len(clients)
        for sock in list(self._peers):
            self._drop(sock)


@contextmanager
def database_proxy(url: str) -> Iterator[DatabaseProxy]:
    """A running :class:`DatabaseProxy` in front of the server of ``url``."""
    proxy = DatabaseProxy(url)
    try:
        yield proxy
    finally:
        proxy.close()
