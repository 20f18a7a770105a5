"""A TCP proxy on loopback that can drop its connections on cue, for fault tests.

`TcpProxy(host, port)` listens on a free 127.0.0.1 port and relays bytes both ways. One
background thread owns every socket (a selector loop), so a cut happens between two relayed
chunks, exactly where the test asked, and never races a send in another thread. Public methods
hand their work to that thread and wait for it, so when `cut_all()` returns the connections
are gone.
"""

from __future__ import annotations

import contextlib
import queue
import selectors
import socket
import struct
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import pytest

CHUNK = 64 * 1024
# Stop reading from one side while this much is still waiting to be written to the other:
# a slow reader slows the sender down instead of filling the proxy's memory.
HIGH_WATER = 1024 * 1024
COMMAND_TIMEOUT = 5.0


@dataclass(eq=False)
class _Link:
    """One client connection and the upstream connection it was paired with."""

    client: socket.socket
    server: socket.socket
    to_client: bytearray = field(default_factory=bytearray)
    to_server: bytearray = field(default_factory=bytearray)
    # Bytes still to relay from server to client before the cut; None: no cut planned.
    budget: int | None = None
    cut_when_flushed: bool = False
    reset: bool = True
    eof: bool = False  # one side hung up; close once the other side has its bytes
    handler: Callable[[socket.socket, int], None] | None = None

    def outgoing(self, sock: socket.socket) -> bytearray:
        return self.to_client if sock is self.client else self.to_server

    def peer(self, sock: socket.socket) -> socket.socket:
        return self.server if sock is self.client else self.client


class TcpProxy:
    """Relay 127.0.0.1:`port` to target_host:target_port until told to cut."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.setblocking(False)
        self.port: int = self._listener.getsockname()[1]
        self.connections = 0  # accepted so far
        self._links: list[_Link] = []
        self._cut_after: int | None = None
        self._cut_reset = True
        self._commands: queue.Queue[tuple[Callable[[], None], threading.Event]] = queue.Queue()
        self._wake_read, self._wake_write = socket.socketpair()
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._listener, selectors.EVENT_READ, self._accept)
        self._selector.register(self._wake_read, selectors.EVENT_READ, self._run_commands)
        self._running = True
        self._thread = threading.Thread(target=self._loop, name=f"tcp-proxy-{self.port}")
        self._thread.daemon = True
        self._thread.start()

    # -- what tests call ---------------------------------------------------------------------

    @property
    def open_connections(self) -> int:
        return len(self._links)

    def cut_after(self, server_bytes: int, *, reset: bool = True) -> None:
        """Drop a connection once `server_bytes` more bytes went from server to client.

        Counted from now for the connections already open, from their start for later ones.
        reset=True closes with RST (SO_LINGER 0), like a crashed peer or a firewall; False
        sends a FIN, like a server that hangs up without a word.
        """
        self._call(lambda: self._plan_cut(server_bytes, reset))

    def cut_all(self, *, reset: bool = True) -> None:
        """Drop every open connection now."""
        self._call(lambda: self._drop_all(reset))

    def close(self) -> None:
        if not self._running:
            return
        self._call(self._stop)
        self._thread.join(COMMAND_TIMEOUT)
        self._selector.close()
        for sock in (self._listener, self._wake_read, self._wake_write):
            sock.close()

    # -- the loop thread ---------------------------------------------------------------------

    def _call(self, work: Callable[[], None]) -> None:
        done = threading.Event()
        self._commands.put((work, done))
        self._wake_write.send(b"x")
        if not done.wait(COMMAND_TIMEOUT):
            raise TimeoutError("the proxy thread did not answer")

    def _loop(self) -> None:
        while self._running:
            for key, events in self._selector.select(timeout=1.0):
                key.data(key.fileobj, events)

    def _run_commands(self, sock: socket.socket, _events: int) -> None:
        sock.recv(CHUNK)
        while not self._commands.empty():
            work, done = self._commands.get()
            try:
                work()
            finally:
                done.set()

    def _accept(self, listener: socket.socket, _events: int) -> None:
        client, _address = listener.accept()
        self.connections += 1
        try:
            server = socket.create_connection(self.target, timeout=COMMAND_TIMEOUT)
        except OSError:
            _abort(client, reset=True)
            return
        link = _Link(client, server, budget=self._cut_after, reset=self._cut_reset)
        link.handler = self._relay(link)
        for sock in (client, server):
            sock.setblocking(False)
            self._selector.register(sock, selectors.EVENT_READ, link.handler)
        self._links.append(link)
        if link.budget == 0:
            self._cut(link)

    def _relay(self, link: _Link) -> Callable[[socket.socket, int], None]:
        def handle(sock: socket.socket, events: int) -> None:
            if link not in self._links:
                return
            if events & selectors.EVENT_WRITE:
                self._write(link, sock)
            if events & selectors.EVENT_READ and link in self._links:
                self._read(link, sock)
            if link in self._links:
                self._settle(link)

        return handle

    def _read(self, link: _Link, sock: socket.socket) -> None:
        try:
            data = sock.recv(CHUNK)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            link.eof = True
            return
        if sock is link.server and link.budget is not None:
            data = data[: link.budget]
            link.budget -= len(data)
            link.cut_when_flushed = link.budget == 0
        link.outgoing(link.peer(sock)).extend(data)

    def _write(self, link: _Link, sock: socket.socket) -> None:
        pending = link.outgoing(sock)
        try:
            sent = sock.send(pending)
        except BlockingIOError:
            return
        except OSError:
            link.eof = True
            pending.clear()
            return
        del pending[:sent]

    def _settle(self, link: _Link) -> None:
        """Cut, close or re-arm the link's sockets after it moved some bytes."""
        flushed = not link.to_client and not link.to_server
        if link.cut_when_flushed and not link.to_client:
            self._cut(link)
        elif link.eof and flushed:
            self._forget(link, reset=False)
        else:
            for sock in (link.client, link.server):
                self._arm(sock, self._interest(link, sock), link)

    def _interest(self, link: _Link, sock: socket.socket) -> int:
        events = selectors.EVENT_WRITE if link.outgoing(sock) else 0
        toward_peer = link.outgoing(link.peer(sock))
        if not link.eof and not link.cut_when_flushed and len(toward_peer) < HIGH_WATER:
            events |= selectors.EVENT_READ
        return events

    def _arm(self, sock: socket.socket, events: int, link: _Link) -> None:
        # selectors cannot watch a socket for nothing: unregister it until it has work again.
        registered = sock in self._selector.get_map()
        if events and registered:
            self._selector.modify(sock, events, link.handler)
        elif events:
            self._selector.register(sock, events, link.handler)
        elif registered:
            self._selector.unregister(sock)

    def _plan_cut(self, server_bytes: int, reset: bool) -> None:
        self._cut_after, self._cut_reset = server_bytes, reset
        for link in list(self._links):
            link.budget, link.reset = server_bytes, reset
            if server_bytes == 0:
                self._cut(link)

    def _cut(self, link: _Link) -> None:
        # Whatever was read but not yet relayed is dropped with the connection, like the
        # bytes in flight when a real network fails.
        self._forget(link, reset=link.reset)

    def _drop_all(self, reset: bool) -> None:
        for link in list(self._links):
            self._forget(link, reset=reset)

    def _forget(self, link: _Link, *, reset: bool) -> None:
        self._links.remove(link)
        for sock in (link.client, link.server):
            with contextlib.suppress(KeyError, ValueError):
                self._selector.unregister(sock)
            _abort(sock, reset=reset)

    def _stop(self) -> None:
        self._drop_all(reset=True)
        self._running = False


def _abort(sock: socket.socket, *, reset: bool) -> None:
    with contextlib.suppress(OSError):
        if reset:
            # SO_LINGER with a zero timeout: close() sends RST and discards unsent data.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        else:
            sock.shutdown(socket.SHUT_RDWR)
    sock.close()


@pytest.fixture
def tcp_proxy() -> Iterator[Callable[..., TcpProxy]]:
    """tcp_proxy(port) -> a TcpProxy to 127.0.0.1:port, closed when the test ends."""
    proxies: list[TcpProxy] = []

    def start(port: int, host: str = "127.0.0.1") -> TcpProxy:
        proxy = TcpProxy(host, port)
        proxies.append(proxy)
        return proxy

    yield start
    for proxy in proxies:
        proxy.close()
