"""A TCP proxy on a free loopback port in front of the MongoDB-wire server, for the tests and the
bench: it counts the commands clients send (by name, and by name and collection, from the wire
messages) and can cut the line for the processes behind it while the server stays up for everyone else.

`cut("refuse")` closes every connection and refuses new ones at once (a server gone, a
firewall rejecting); `cut("blackhole")` keeps connections open but forwards nothing (a network
partition: calls hang until the client's own timeouts). `restore()` forwards again.
"""

from __future__ import annotations

import select
import socket
import struct
import threading
import time
from collections import Counter

OP_MSG = 2013
OP_QUERY = 2004
_HEADER = struct.Struct("<iiii")


def command_name(message: bytes) -> str:
    """The command an OP_MSG (or legacy OP_QUERY) message carries: its body's first key."""
    return command_target(message)[0]


def command_target(message: bytes) -> tuple[str, str]:
    """(command, collection) of an OP_MSG or OP_QUERY message: the body's first key and, when
    that key's value is a string (`find: "runs"`, `update: "pods"`), the value; "" for commands
    on no collection (`hello: 1`). The collection says whose load a command is (a broker poll
    and a dispatcher sweep are both reads), which the name alone does not."""
    if len(message) < _HEADER.size:
        return "?", ""
    _, _, _, opcode = _HEADER.unpack_from(message)
    body = message[_HEADER.size:]
    if opcode == OP_MSG and len(body) > 10 and body[4] == 0:  # flagBits, then a kind-0 section
        document = body[5:]
    elif opcode == OP_QUERY:
        start = body.find(b"\0", 4) + 1 + 8  # flags, collection name, skip, limit
        document = body[start:]
    else:
        return f"op{opcode}", ""
    end = document.find(b"\0", 5)
    if len(document) <= 5 or end <= 5:
        return "?", ""
    name = document[5:end].decode("utf-8", "replace")
    if document[4] != 0x02 or len(document) < end + 5:  # the first value is not a BSON string
        return name, ""
    (size,) = struct.unpack_from("<i", document, end + 1)
    value = document[end + 5:end + 4 + size] if size > 0 else b""
    return name, value.decode("utf-8", "replace")


class _Pipe:
    """One client connection and its server connection."""

    def __init__(self, proxy: WireProxy, client: socket.socket):
        self.proxy = proxy
        self.client = client
        self.server = socket.create_connection(proxy.target, timeout=5)
        self.server.settimeout(None)
        self.pending = b""  # client bytes not yet split into messages (for counting)
        self.closed = False

    def close(self) -> None:
        self.closed = True
        for sock in (self.client, self.server):
            try:
                sock.close()
            except OSError:
                pass

    def pump(self) -> None:
        try:
            while not self.closed:
                if self.proxy.mode != "open":
                    time.sleep(0.05)  # blackholed: read nothing, so nothing moves either way
                    continue
                readable, _, _ = select.select([self.client, self.server], [], [], 0.2)
                for sock in readable:
                    data = sock.recv(65536)
                    if not data:
                        return
                    if sock is self.client:
                        self._count(data)
                        self.server.sendall(data)
                    else:
                        self.client.sendall(data)
        except (OSError, ValueError):
            return
        finally:
            self.close()
            self.proxy._forget(self)

    def _count(self, data: bytes) -> None:
        self.pending += data
        while len(self.pending) >= 4:
            (length,) = struct.unpack_from("<i", self.pending)
            if length < _HEADER.size or len(self.pending) < length:
                if length < _HEADER.size:
                    self.pending = b""
                return
            self.proxy._counted(*command_target(self.pending[:length]))
            self.pending = self.pending[length:]


class WireProxy:
    def __init__(self, target_port: int, target_host: str = "127.0.0.1"):
        self.target = (target_host, target_port)
        self.mode = "open"
        self.commands: Counter[str] = Counter()
        #: (command, collection) -> count; never reset, so readers take differences of snapshots.
        self.targets: Counter[tuple[str, str]] = Counter()
        self._pipes: set[_Pipe] = set()
        self._lock = threading.Lock()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._thread = threading.Thread(target=self._accept, name="wire-proxy", daemon=True)
        self._thread.start()

    def url(self, database: str) -> str:
        return f"mongodb://127.0.0.1:{self.port}/{database}"

    def cut(self, mode: str = "blackhole") -> None:
        if mode not in ("blackhole", "refuse"):
            raise ValueError(f"mode {mode!r}: expected blackhole or refuse")
        self.mode = mode
        if mode == "refuse":
            with self._lock:
                pipes = list(self._pipes)
            for pipe in pipes:
                pipe.close()

    def restore(self) -> None:
        self.mode = "open"

    def counts(self, reset: bool = False) -> Counter[str]:
        """Commands seen so far, by name."""
        with self._lock:
            seen = Counter(self.commands)
            if reset:
                self.commands.clear()
        return seen

    def counts_by_collection(self) -> Counter[tuple[str, str]]:
        """Commands seen since the proxy started, by (command, collection); "" for none."""
        with self._lock:
            return Counter(self.targets)

    def close(self) -> None:
        self.mode = "closed"
        self._listener.close()
        with self._lock:
            pipes = list(self._pipes)
        for pipe in pipes:
            pipe.close()

    def _accept(self) -> None:
        while self.mode != "closed":
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            if self.mode == "refuse":
                client.close()
                continue
            try:
                pipe = _Pipe(self, client)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._pipes.add(pipe)
            threading.Thread(target=pipe.pump, name="wire-proxy-pipe", daemon=True).start()

    def _forget(self, pipe: _Pipe) -> None:
        with self._lock:
            self._pipes.discard(pipe)

    def _counted(self, name: str, collection: str = "") -> None:
        with self._lock:
            self.commands[name] += 1
            self.targets[name, collection] += 1
