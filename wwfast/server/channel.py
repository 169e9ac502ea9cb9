"""Messages between serve's supervisor and its workers: length-prefixed pickles on a Unix stream socket.

The socket pair is made by the supervisor and inherited only by its own worker, so pickle is safe
here (no other party can write to it); it carries plain values and manifest bytes of any size.
Sending never blocks: what the kernel does not take waits in `pending` until `flush` (the owner
calls it when the socket is writable). Receiving returns every whole message that has arrived.
"""
import pickle
import select
import socket
import struct
import time

HEADER = struct.Struct("!I")
SOCKET_BUFFER = 4 << 20


class ChannelClosed(Exception):
    """The other end is gone."""


class Stalled(Exception):
    """The other end is there but did not read or answer in time."""


class Channel:
    def __init__(self, sock):
        self.sock = sock
        sock.setblocking(False)
        for option in (socket.SO_SNDBUF, socket.SO_RCVBUF):
            try:
                sock.setsockopt(socket.SOL_SOCKET, option, SOCKET_BUFFER)
            except OSError:
                pass
        self.pending = bytearray()     # bytes the kernel did not take yet
        self._in = bytearray()

    def fileno(self):
        return self.sock.fileno()

    def close(self):
        self.sock.close()

    # -- sending -------------------------------------------------------------------------------
    def send(self, message):
        """Queue `message`; True when all of it (and everything before it) is in the kernel."""
        data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
        self.pending += HEADER.pack(len(data))
        self.pending += data
        return self.flush()

    def flush(self):
        """Hand the kernel what it takes now; True when nothing is left pending."""
        while self.pending:
            try:
                n = self.sock.send(self.pending)
            except BlockingIOError:
                return False
            except OSError as e:
                raise ChannelClosed(str(e)) from None
            del self.pending[:n]
        return True

    def flush_wait(self, timeout):
        """Flush, waiting up to `timeout` seconds for room; raises Stalled on timeout."""
        deadline = time.monotonic() + timeout
        while not self.flush():
            left = deadline - time.monotonic()
            if left <= 0:
                raise Stalled("the other end stopped reading")
            select.select([], [self.sock], [], left)

    # -- receiving -----------------------------------------------------------------------------
    def receive(self):
        """Every whole message that has arrived (maybe none); raises ChannelClosed at end of stream."""
        closed = False
        while True:
            try:
                chunk = self.sock.recv(1 << 20)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                closed = True
                break
            if not chunk:
                closed = True
                break
            self._in += chunk
        out = []
        while len(self._in) >= HEADER.size:
            (size,) = HEADER.unpack_from(self._in)
            if len(self._in) < HEADER.size + size:
                break
            out.append(pickle.loads(self._in[HEADER.size:HEADER.size + size]))
            del self._in[:HEADER.size + size]
        if closed and not out:
            raise ChannelClosed("end of stream")
        return out

    def wait_readable(self, timeout):
        """Block until there is something to receive, or `timeout` seconds; False on timeout."""
        ready, _, _ = select.select([self.sock], [], [], max(0.0, timeout))
        return bool(ready)
