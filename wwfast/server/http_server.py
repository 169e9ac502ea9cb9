"""The HTTP listener: opens the listening socket, makes a Connection per client, and sweeps limits.

Each connection's bytes are moved by wwfast.server.http.Connection; this module owns what is shared
by all of them: the listening socket (its own or one handed in by serve's workers), the connection
set, the send budget (wwfast.server.send_budget), the Date header's once-a-second cache, the
completion hook that counts a file body's bytes in /metrics, and one sweep per half second over all
connections that enforces the Limits (header size, header time, idle time, send stall) and refits
send buffers, instead of a timer per connection.
"""
import asyncio
import logging
import time

from wwfast.server.http import Connection, Limits
from wwfast.server.mappings import SharedMappings
from wwfast.server.replies import http_date
from wwfast.server.send_budget import SendBudget

log = logging.getLogger("wwfast.serve")


class HttpServer:
    """Listens on (host, port) and answers with `provisioner` (wwfast.server.provision.Provisioner);
    counts connections, requests and bytes in its ledger's metrics. `async with HttpServer(...)`.
    wwfast.server.https.HttpsServer is the same on TLS."""

    protocol = Connection
    scheme = "HTTP"
    ssl = None

    def __init__(self, provisioner, host="0.0.0.0", port=9873, send_mode="sendfile", limits=None, sock=None,
                 send_budget=None):
        if send_mode not in ("sendfile", "mmap"):
            raise ValueError(f"send_mode must be sendfile or mmap, not {send_mode!r}")
        self.provisioner = provisioner
        self.metrics = provisioner.ledger.metrics
        self.host, self.port = host, port
        self.sock = sock              # a listening socket to serve on (serve's workers share the port)
        self.send_mode = send_mode
        self.limits = limits or Limits()
        # socket send memory this process's transfers may hold (serve gives HTTP and HTTPS the same one)
        self.send_budget = send_budget or SendBudget.for_process(workers=1)
        self.metrics.send_budget = self.send_budget.total or 0      # HTTP and HTTPS share one budget
        self.metrics.send_capped_sources.append(self.capped_transfers)
        self.connections = set()
        self.loop = None
        self._server = None
        self._sweeper = None
        self._date = (0, "")
        self.maps = SharedMappings()

    def counted(self, on_done, stage, code):
        """Wrap a file body's completion so /metrics sees the transfer end and its bytes."""
        metrics = self.metrics

        def done(sent, complete, at=None):
            metrics.in_flight -= 1
            metrics.sent(stage, code, sent)
            if on_done is not None:
                on_done(sent, complete, at)
        return done

    def capped_transfers(self):
        """How many of this server's transfers hold their share of the budget as their send buffer now."""
        return sum(1 for conn in self.connections if conn.busy and conn.capped)

    def date(self):
        now = int(time.time())
        if self._date[0] != now:
            self._date = (now, http_date(now))
        return self._date[1]

    async def start(self):
        self.loop = asyncio.get_running_loop()
        tls = {"ssl": self.ssl, "ssl_handshake_timeout": self.limits.header_timeout} if self.ssl else {}
        if self.sock is not None:
            self._server = await self.loop.create_server(lambda: self.protocol(self), sock=self.sock,
                                                         backlog=4096, **tls)
        else:
            self._server = await self.loop.create_server(lambda: self.protocol(self), self.host, self.port,
                                                         reuse_address=True, backlog=4096, **tls)
        self.port = self._server.sockets[0].getsockname()[1]
        self._sweeper = self.loop.call_later(0.5, self._sweep)
        log.info("%s on %s:%d (%s, %s)", self.scheme, self.host, self.port, self.send_mode,
                 type(self.loop).__module__.split(".")[0])
        return self

    def _sweep(self):
        now = time.monotonic()
        for conn in list(self.connections):
            try:
                conn.sweep(now, self.limits)
            except Exception:
                log.exception("sweep failed for %s", conn.peer[0])
                conn.close()
        self._sweeper = self.loop.call_later(0.5, self._sweep)

    async def close(self):
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        if self._server is not None:
            self._server.close()
            for conn in list(self.connections):
                conn.close()
            await self._server.wait_closed()
            self._server = None

    async def __aenter__(self):
        return await self.start()

    async def __aexit__(self, *exc):
        await self.close()
