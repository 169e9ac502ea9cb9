"""The HTTPS transport: the same requests and answers as wwfast.server.http, written through TLS.

sendfile and raw socket writes would bypass the TLS layer, so a TLS connection hands its bytes to the
asyncio SSL transport instead: headers as they are, file bodies in slices of the shared mmap of the
store file, stopping while the transport says its buffer is full (pause_writing/resume_writing).
The TLS settings are wwfast.configure.tls.server_context's (TLS 1.2+, forward-secret AEAD suites).
"""
import logging
import time

from wwfast.server.http import PUMP_BUDGET, Connection
from wwfast.server.http_server import HttpServer
from wwfast.server.replies import FileBody

log = logging.getLogger("wwfast.serve")

CHUNK = 256 << 10             # one TLS write: 16 records of 16 KiB


class TlsConnection(Connection):
    def __init__(self, server):
        super().__init__(server)
        self.write_paused = False

    def connection_made(self, transport):
        self.transport = transport
        peer = transport.get_extra_info("peername") or ("", 0)
        host = peer[0][7:] if peer[0].startswith("::ffff:") else peer[0]
        self.peer = (host, peer[1])
        self.wsock = transport            # "registered" marker for connection_lost; writes go through it
        self.server.connections.add(self)
        self.server.metrics.connections += 1

    def _buffer_socket(self):
        # the transport's own socket object: setsockopt works on it, reads and writes stay the transport's
        return self.transport.get_extra_info("socket") if self.transport is not None else None

    def _teardown(self, complete):
        if self.closed:
            return
        self.closed = True
        for item in self.out:
            if isinstance(item, FileBody):
                item.close(complete)
        self.out.clear()

    def _linger(self):
        """The SSL transport sends what it holds, then closes (with a TLS close_notify)."""
        self._teardown(complete=False)
        self.transport.close()

    def pause_writing(self):
        self.write_paused = True

    def resume_writing(self):
        self.write_paused = False
        if self.out and not self.closed:
            self._pump()

    def _pump(self):
        if self.closed:
            return
        budget = PUMP_BUDGET
        try:
            while self.out and budget > 0 and not self.write_paused:
                item = self.out[0]
                if isinstance(item, FileBody):
                    if item.mm is None:
                        item.mm = self.server.maps.view(item.fd)
                    n = min(item.remaining, CHUNK, budget)
                    if n == item.remaining:
                        item.last_send_at = item.clock()    # this write holds the last byte
                    self.transport.write(bytes(item.mm[item.offset:item.offset + n]))  # no view pins the map
                    item.offset += n
                    item.remaining -= n
                    item.sent += n
                    budget -= n
                    if not item.remaining:
                        self.out.pop(0)
                        item.close(complete=True)
                else:
                    self.transport.write(bytes(item))
                    budget -= len(item)
                    self.out.pop(0)
            self.last_activity = time.monotonic()
        except Exception:             # a store file that shrank, a transport closed under us
            log.exception("%s: TLS send failed", self.peer[0])
            self.close()
            return
        if self.out:
            if not self.write_paused:   # budget used up: let other connections have the loop
                self.loop.call_soon(self._pump)
            return
        self._reply_sent()


class HttpsServer(HttpServer):
    """HttpServer on TLS: `HttpsServer(provisioner, host, port, ssl_context)`."""

    protocol = TlsConnection
    scheme = "HTTPS"

    def __init__(self, provisioner, host="0.0.0.0", port=9874, ssl_context=None, limits=None, sock=None,
                 send_budget=None):
        super().__init__(provisioner, host, port, send_mode="mmap", limits=limits, sock=sock,
                         send_budget=send_budget)
        if ssl_context is None:
            raise ValueError("HttpsServer needs an ssl context (wwfast.configure.tls.server_context)")
        self.ssl = ssl_context
