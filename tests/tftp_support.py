"""Helpers shared by the TFTP tests: a server on its own thread, the twins, a raw client."""
import asyncio
import importlib
import socket
import struct
import threading
import time

import pytest

from wwfast._impl import pure_forced
from wwfast.server import loops
from wwfast.server.tftp import TftpServer, raise_fd_limit


def twin_params():
    """pytest params over the core twins: the compiled one is skipped when WWFAST_PURE=1."""
    params = [pytest.param("wwfast._tftp_py", id="pure")]
    if not pure_forced():
        params.insert(0, pytest.param("wwfast._tftp", id="compiled"))
    return params


class ServerThread:
    """A TftpServer on 127.0.0.1 (ephemeral port) run by its own event loop in a thread."""

    def __init__(self, root, core_name, resolve=None, loop=None, host="127.0.0.1", **options):
        self.core = importlib.import_module(core_name)
        self.host = host
        self.root, self.resolve, self.loop_kind, self.options = root, resolve, loop, options
        self.server = None
        self.loop = None
        self._ready = threading.Event()
        self._error = None
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        try:
            loops.run(self._main(), self.loop_kind)
        except BaseException as e:  # surfaced by __enter__ / __exit__
            self._error = e
            self._ready.set()

    async def _main(self):
        self.loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        self.server = TftpServer(self.root, self.host, 0, self.resolve, core=self.core, **self.options)
        async with self.server:
            self._ready.set()
            await self._stop.wait()

    def __enter__(self):
        raise_fd_limit()
        self._thread.start()
        self._ready.wait(10)
        if self._error:
            raise self._error
        return self

    def __exit__(self, *exc):
        self.loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)
        assert not self._thread.is_alive(), "server thread did not stop"
        if self._error:
            raise self._error

    @property
    def port(self):
        return self.server.port

    def stats(self):
        """The server's counters, read on its own thread."""
        return asyncio.run_coroutine_threadsafe(self._stats(), self.loop).result(5)

    async def _stats(self):
        return self.server.stats()

    def alive(self):
        return self._thread.is_alive() and self._error is None

    def wait_idle(self, timeout=10.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.stats()["active"] == 0:
                return True
            time.sleep(0.02)
        return False


def rrq(filename, mode="octet", **options):
    body = filename.encode() + b"\0" + mode.encode() + b"\0"
    body += b"".join(f"{k}\0{v}\0".encode() for k, v in options.items())
    return b"\0\1" + body


def ack(block):
    return struct.pack("!HH", 4, block & 0xFFFF)


def decode(packet):
    """(opcode, second field, rest) of a server packet."""
    opcode = struct.unpack("!H", packet[:2])[0]
    if opcode in (3, 4):
        return opcode, struct.unpack("!H", packet[2:4])[0], packet[4:]
    if opcode == 5:
        return opcode, struct.unpack("!H", packet[2:4])[0], packet[4:].rstrip(b"\0").decode("ascii", "replace")
    if opcode == 6:
        fields = packet[2:].split(b"\0")[:-1]
        return opcode, {fields[i].decode(): fields[i + 1].decode() for i in range(0, len(fields) - 1, 2)}, None
    return opcode, None, packet[2:]


def client_socket(timeout=2.0):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    s.settimeout(timeout)
    return s


def fetch(port, filename, timeout=5.0, **options):
    """A minimal RFC 1350/7440 client (for protocol tests): returns (data, oack).

    It ACKs the last block of each window (every block in lock-step) and, on a
    block it already has or one past a gap, re-ACKs the last block it has in order.
    """
    s = client_socket(timeout)
    try:
        s.sendto(rrq(filename, **options), ("127.0.0.1", port))
        blksize, window = 512, 1
        out, expected, oack, since_ack = bytearray(), 1, None, 0
        while True:
            packet, tid = s.recvfrom(70000)
            opcode, field, rest = decode(packet)
            if opcode == 5:
                raise RuntimeError(f"error {field}: {rest}")
            if opcode == 6:
                if expected == 1:
                    oack = field
                    blksize = int(field.get("blksize", 512))
                    window = int(field.get("windowsize", 1))
                    s.sendto(ack(0), tid)
                continue
            if opcode != 3:
                raise RuntimeError(f"unexpected opcode {opcode}")
            if field != expected & 0xFFFF:
                s.sendto(ack(expected - 1), tid)
                since_ack = 0
                continue
            out += rest
            expected += 1
            since_ack += 1
            last = len(rest) < blksize
            if last or since_ack >= window:
                s.sendto(ack(field), tid)
                since_ack = 0
            if last:
                return bytes(out), oack
    finally:
        s.close()
